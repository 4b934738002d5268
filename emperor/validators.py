"""Pure converters from the text of an ini value (or a CLI argument) to a typed value.

Each converter takes the raw string and returns the converted value, or raises
``ValueError`` with a message that quotes the bad value. The caller (``emperor.config``)
adds the file, line and key, so these stay small and table-testable.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from emperor import proxies

_FALSE_WORDS = frozenset({"false", "off", "no", "0"})


def boolean(raw: str) -> bool:
    """uWSGI's rule: only false/off/no/0 (any case) are false; anything else, even empty, is true."""
    return raw.strip().lower() not in _FALSE_WORDS


def text(raw: str) -> str:
    return raw


def spaced(raw: str) -> str:
    """``procname-prefix-spaced``: the text with one space after it, as uWSGI adds."""
    return raw.strip() + " "


def log_date(raw: str) -> str | None:
    """``log-date``: None when off, "" for uWSGI's default (ctime) form, else a strftime format.

    uWSGI would print ``true - `` for ``log-date = true``; reading the words as booleans is
    what such a file means."""
    s = raw.strip()
    if s.lower() in _FALSE_WORDS:
        return None
    return "" if s.lower() in ("", "true", "yes", "on", "1") else s


def nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("needs a value")
    return raw.strip()


class Lenient(ValueError):
    """The value was read the way uWSGI reads it, but the text had more than the value.

    ``value`` is what uWSGI (and emperor) use; the message says what was dropped. The config
    builder keeps the value and turns the message into a warning. It subclasses ValueError so
    that a caller that knows nothing about leniency refuses the text instead of mis-reading it.
    """

    def __init__(self, value: object, message: str) -> None:
        super().__init__(message)
        self.value = value


_LEADING_INT = re.compile(r"-?[0-9]+")
_LEADING_NUM = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def integer(low: int | None = 0, high: int | None = None) -> Callable[[str], int]:
    """A decimal integer within [low, high], read like uWSGI's ``atoi``: the leading digits count.

    ``32k`` is 32, as in uWSGI (which has no size suffixes), with a warning (:class:`Lenient`)
    naming what was dropped. Text with no leading digit is an error rather than uWSGI's silent 0.
    """

    def convert(raw: str) -> int:
        s = raw.strip()
        m = _LEADING_INT.match(s) if s.isascii() else None
        if m is None:
            raise ValueError(f"{raw!r} is not a whole number")
        value = int(m.group())
        rest = s[m.end():]
        read_as = ""
        if rest:
            why = ": there are no size suffixes" if rest[0].isalpha() else ""
            read_as = (f"{s!r} is read as {value}, as uWSGI reads it (only the leading digits count; "
                       f"{rest!r} is ignored{why})")
        shown = f"{read_as}, and {value}" if read_as else str(value)
        if low is not None and value < low:
            raise ValueError(f"{shown} is below the minimum {low}")
        if high is not None and value > high:
            raise ValueError(f"{shown} is above the maximum {high}")
        if read_as:
            raise Lenient(value, read_as)
        return value

    if high is None:
        convert.__doc__ = "integer" if low is None else f"integer >= {low}"
    else:
        convert.__doc__ = f"integer in [{low}, {high}]"
    return convert


def seconds(raw: str) -> float:
    """A non-negative number of seconds; decimals allowed (``0.5``). ``30s`` is 30 with a warning."""
    s = raw.strip()
    m = _LEADING_NUM.match(s) if s.isascii() else None
    if m is None:
        raise ValueError(f"{raw!r} is not a number of seconds (a finite number >= 0)")
    value = float(m.group())
    if m.end() < len(s):
        raise Lenient(value, f"{s!r} is read as {m.group()} seconds (only the leading number counts; "
                      f"{s[m.end():]!r} is ignored)")
    return value


def choice(*words: str) -> Callable[[str], str]:
    """One of ``words`` (any case); anything else is an error that lists them."""

    def convert(raw: str) -> str:
        s = raw.strip().lower()
        if s not in words:
            raise ValueError(f"{raw!r} is not one of {', '.join(words)}")
        return s

    convert.__doc__ = " | ".join(words)
    return convert


def octal_mode(raw: str) -> int:
    """``chmod-socket``: 3 or 4 octal digits. A bare key means 666, as in uWSGI (the caller warns)."""
    s = raw.strip()
    if s in ("", "1", "true", "yes", "on"):
        return 0o666
    if not (3 <= len(s) <= 4) or any(c not in "01234567" for c in s):
        raise ValueError(f"{raw!r} is not an octal mode such as 660")
    return int(s, 8)


def octal_umask(raw: str) -> int:
    """``umask``: 1 to 4 octal digits (``022``, ``0027``)."""
    s = raw.strip()
    if not (1 <= len(s) <= 4) or any(c not in "01234567" for c in s) or int(s, 8) > 0o777:
        raise ValueError(f"{raw!r} is not an octal umask such as 022")
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


def ip_list(raw: str) -> str:
    """IPs and CIDR networks, comma-separated, or ``*``"""
    proxies.parse(raw)
    return raw.strip()
