"""The vassal: a master process with pre-forked workers serving one WSGI app over uwsgi.

Runs in its own process (``python -m emperor.vassal``); the emperor never imports it.
"""
