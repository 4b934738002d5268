"""The ASGI entry point: ``asgi = djangoproj.asgi:application`` (``application`` is also the
default callable name, so ``asgi = djangoproj.asgi`` works too).

DJANGO_SETTINGS_MODULE is deliberately not defaulted here: the vassal's ``env =`` sets it.
"""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
