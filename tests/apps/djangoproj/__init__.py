"""A minimal Django project served as an ASGI vassal by tests/test_asgi_django.py (issue #14)."""
