"""Settings of the test project: no database, no installed apps, no middleware.

The tests select this module with the vassal's ``env = DJANGO_SETTINGS_MODULE=djangoproj.settings``
(asgi.py does not default it), so a vassal whose ``env`` is not applied fails at load.
"""

SECRET_KEY = "tests-only-not-a-secret"  # the test project serves loopback only
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "djangoproj.urls"
USE_TZ = True
# Django sets the process's TZ to TIME_ZONE at setup (default America/Chicago): the vassal's log
# timestamps after the app loads would be in that zone (docs/asgi.md, Django)
TIME_ZONE = "UTC"
