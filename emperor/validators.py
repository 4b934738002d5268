"""Pure converters from the text of an ini value (or a CLI argument) to a typed value.

Each converter takes the raw string and returns the converted value, or raises
``ValueError`` with a message that quotes the bad value. The caller (``emperor.config``)
adds the file, line and key, so these stay small and table-testable.
"""

from __future__ import annotations

from collections.abc import Callable

_FALSE_WORDS = frozenset({"false", "off", "no", "0"})


def boolean(raw: str) -> bool:
    """uWSGI's rule: only false/off/no/0 (any case) are false; anything else, even empty, is true."""
    return raw.strip().lower() not in _FALSE_WORDS


def text(raw: str) -> str:
    return raw


def nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("needs a value")
    return raw.strip()


def integer(low: int | None = 0, high: int | None = None) -> Callable[[str], int]:
    """A decimal integer within [low, high]. No size suffixes, as in uWSGI (but no silent atoi either)."""

    def convert(raw: str) -> int:
        s = raw.strip()
        if not s or not (s.isdigit() or (s[0] == "-" and s[1:].isdigit())) or not s.isascii():
            raise ValueError(f"{raw!r} is not a whole number (size suffixes such as 32k are not accepted)")
        value = int(s)
        if low is not None and value < low:
            raise ValueError(f"{value} is below the minimum {low}")
        if high is not None and value > high:
            raise ValueError(f"{value} is above the maximum {high}")
        return value

    if high is None:
        convert.__doc__ = "integer" if low is None else f"integer >= {low}"
    else:
        convert.__doc__ = f"integer in [{low}, {high}]"
    return convert


def seconds(raw: str) -> float:
    """A non-negative number of seconds; decimals allowed (``0.5``)."""
    s = raw.strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{raw!r} must be a finite number >= 0")
    return value


def octal_mode(raw: str) -> int:
    """``chmod-socket``: 3 or 4 octal digits. A bare key means 666, as in uWSGI (the caller warns)."""
    s = raw.strip()
    if s in ("", "1", "true", "yes", "on"):
        return 0o666
    if not (3 <= len(s) <= 4) or any(c not in "01234567" for c in s):
        raise ValueError(f"{raw!r} is not an octal mode such as 660")
    return int(s, 8)


def env_assignment(raw: str) -> str:
    """``env = KEY=VALUE``: the key must be non-empty and contain no NUL."""
    key, sep, _ = raw.partition("=")
    if not sep or not key.strip() or "\0" in raw:
        raise ValueError(f"{raw!r} is not KEY=VALUE")
    return raw


def python_callable_ref(raw: str) -> str:
    """``module`` accepts ``pkg.mod``, ``pkg.mod:callable`` or a path ending in .py."""
    s = raw.strip()
    if not s:
        raise ValueError("needs a module name such as myapp.wsgi:application")
    mod, _, attr = s.partition(":")
    if not mod.endswith(".py") and not all(p.isidentifier() for p in mod.split(".")):
        raise ValueError(f"{raw!r} is not a dotted module name")
    if attr and not all(p.isidentifier() for p in attr.split(".")):
        raise ValueError(f"{attr!r} is not a callable name")
    return s


def protocol(raw: str) -> str:
    """``protocol``: what plain ``socket`` lines speak, ``uwsgi`` (default) or ``http``."""
    s = raw.strip().lower()
    if s not in ("uwsgi", "http"):
        raise ValueError(f"{raw!r} is not a protocol emperor speaks (uwsgi or http)")
    return s


def keepalive_seconds(raw: str) -> float:
    """``http-keepalive``: seconds; ``true``/``on``/a bare key keep the default (75), ``false``/``off`` = 0.

    uWSGI's ``http-keepalive`` is a switch (often written ``= 1``): a number is taken as seconds.
    """
    s = raw.strip().lower()
    if s in ("", "true", "yes", "on"):
        return 75.0
    if s in ("false", "no", "off"):
        return 0.0
    return seconds(raw)


def address_list(raw: str) -> str:
    """``forwarded-allow-ips``: IPs and CIDR networks, comma-separated, or ``*``"""
    import ipaddress

    items = [x.strip() for x in raw.split(",") if x.strip()]
    if items == ["*"]:
        return "*"
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (such as 10.0.0.0/8), "
                             "nor '*' alone") from None
    return ",".join(items)


def static_mapping(raw: str) -> str:
    """``static-map``: ``/prefix=DIR`` (the directory is checked when the vassal starts)."""
    prefix, sep, root = raw.strip().partition("=")
    if not sep or not prefix.startswith("/") or not root.strip():
        raise ValueError(f"{raw!r} is not /prefix=DIR")
    return f"{prefix.strip()}={root.strip()}"


def https_spec(raw: str) -> str:
    """``https-socket``: ``ADDR,CERT,KEY[,CIPHERS[,CA]]`` (the files are loaded at start-up)."""
    parts = raw.split(",")
    if not 3 <= len(parts) <= 5 or not all(p.strip() for p in parts[:3]):
        raise ValueError(f"{raw!r} is not ADDR,CERT,KEY[,CIPHERS[,CA]]")
    return ",".join(p.strip() for p in parts)
