"""emperor: a uWSGI-Emperor-style supervisor and uwsgi-protocol WSGI server."""

__version__ = "0.1.0"
