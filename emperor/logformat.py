"""The values of the request-log options: log-format (compiled once) and logger/req-logger.

Pure, so that the option table (``emperor.options``) validates them without importing the
vassal; the worker uses the compiled format (``emperor.vassal.reqlog``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

# ---- logger / req-logger -------------------------------------------------------------------
_FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
               "authpriv", "ftp", *(f"local{i}" for i in range(8)))


def logger_spec(raw: str) -> tuple[str, str]:
    """``logger``/``req-logger``: ("file", PATH), ("stdio", "") or ("syslog", "IDENT[,FACILITY]")."""
    kind, _, arg = raw.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "file":
        if not arg.strip():
            raise ValueError("file: needs a path (file:/var/log/app.log)")
        return ("file", arg.strip())
    if kind in ("stdio", "stderr"):
        return ("stdio", "")
    if kind == "syslog":
        facility = arg.partition(",")[2].strip().lower()
        if facility and facility not in _FACILITIES:
            raise ValueError(f"syslog facility {facility!r} unknown (one of {', '.join(_FACILITIES)})")
        return ("syslog", arg.strip())
    raise ValueError(f"logger {kind!r} not supported: emperor has file:PATH, stdio and "
                     "syslog[:IDENT[,FACILITY]]")


SYSLOG_SOCKET_ENV = "EMPEROR_SYSLOG_SOCKET"  # the local syslog socket; /dev/log when unset


def syslog_handler(arg: str, default_ident: str) -> Any:
    """A ``logging.handlers.SysLogHandler`` for ``IDENT[,FACILITY]``, tagged ``IDENT[PID]:``.

    It writes to /dev/log (or $EMPEROR_SYSLOG_SOCKET: containers without a syslog socket in
    /dev); raises OSError when that socket cannot be reached."""
    import logging
    import logging.handlers
    import os

    ident, _, facility = arg.partition(",")
    address = os.environ.get(SYSLOG_SOCKET_ENV) or "/dev/log"
    names = logging.handlers.SysLogHandler.facility_names
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:  # the handler would only fail later
        probe.connect(address)
    handler = logging.handlers.SysLogHandler(address, names[facility.strip().lower() or "user"])
    handler.ident = f"{ident.strip() or default_ident}[{os.getpid()}]: "
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


# ---- log-format ----------------------------------------------------------------------------
def _env(key: str, default: str = "-") -> str:
    return f"(env.get({key!r}) or {default!r})"


# uWSGI's request-log variables and the expression each one becomes in the compiled formatter.
# Names available to the expressions: env, status, sent, hsize (a function), us, pid, wid, addr,
# start (wall-clock start, seconds), ex, t (the time module), mem (this process's rss, vsz).
_VARS = {
    "addr": "addr",
    "method": _env("REQUEST_METHOD"),
    "uri": "(env.get('REQUEST_URI') or env.get('PATH_INFO') or '-')",
    "proto": _env("SERVER_PROTOCOL"),
    "status": "status",
    "size": "sent",  # uWSGI: body + headers
    "rsize": "max(0, sent - hsize(ex))",  # uWSGI: the body
    "hsize": "hsize(ex)",
    "cl": _env("CONTENT_LENGTH", "0"),
    "msecs": "us // 1000",
    "secs": "f'{us / 1e6:.4f}'",
    "ctime": "t.ctime(start)",
    "vars": "sum(1 for k in env if not k.startswith(('wsgi.', 'emperor.')))",
    "core": "0",  # uWSGI's async core: a worker serves one request per thread here
    "switches": "0",
    "rss": "mem()[0]",
    "vsz": "mem()[1]",
    "rssM": "mem()[0] >> 20",
    "vszM": "mem()[1] >> 20",
    "micros": "us",
    "pid": "pid",
    "wid": "wid",
    "ltime": "t.strftime('%d/%b/%Y:%H:%M:%S %z', t.localtime(start))",
    "ftime": "t.strftime('%Y-%m-%d %H:%M:%S', t.localtime(start))",
    "time": "int(start)",
    "epoch": "int(t.time())",
    "tmsecs": "int(start * 1000)",
    "tmicros": "int(start * 1000000)",
    "uagent": _env("HTTP_USER_AGENT"),
    "referer": _env("HTTP_REFERER"),
    "host": _env("HTTP_HOST"),
    "user": _env("REMOTE_USER"),
    "headers": "len(ex.headers or ())",
}
_VAR = re.compile(r"%\(([A-Za-z_][\w.-]*)\)")


def compile_format(fmt: str) -> Callable[..., str]:
    """Compile a log-format once into one f-string function (no per-request parsing).

    The function is called as ``f(env, status, sent, hsize, us, pid, wid, addr, start, ex)``
    and returns the line without its newline. Raises ValueError naming an unknown variable.
    """
    parts: list[str] = []
    pos = 0
    for m in _VAR.finditer(fmt):
        parts.append(fmt[pos:m.start()].replace("{", "{{").replace("}", "}}"))
        name = m.group(1)
        if name.startswith("var."):
            expr = _env(name[4:])
        elif name in _VARS:
            expr = _VARS[name]
        else:
            raise ValueError(f"%({name}) is not a log-format variable (emperor has "
                             f"{', '.join(sorted(_VARS))} and var.NAME)")
        parts.append("{" + expr + "}")
        pos = m.end()
    parts.append(fmt[pos:].replace("{", "{{").replace("}", "}}"))
    body = "".join(parts).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    src = (f'def line(env, status, sent, hsize, us, pid, wid, addr, start, ex):\n'
           f'    return f"{body}"\n')
    scope: dict[str, Any] = {"t": time, "mem": _memory}
    exec(compile(src, "<log-format>", "exec"), scope)  # our own expressions; names are checked above
    return scope["line"]  # type: ignore[no-any-return]


def log_format(raw: str) -> str:
    """The option's validator: the format must compile (an unknown variable is a config error)."""
    if not raw.strip():
        raise ValueError("needs a format")
    compile_format(raw)
    return raw


def _memory() -> tuple[int, int]:
    """(rss, vsz) of this process in bytes, from /proc/self/statm (only formats that ask)."""
    import os

    try:
        with open("/proc/self/statm", "rb") as f:
            vsz_pages, rss_pages = f.read().split()[:2]
    except (OSError, ValueError):
        return (0, 0)
    page = os.sysconf("SC_PAGE_SIZE")
    return (int(rss_pages) * page, int(vsz_pages) * page)
