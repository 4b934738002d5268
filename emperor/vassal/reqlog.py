"""Which requests get a log line, and what is added to it: uWSGI's logging options.

``disable-logging`` turns request lines off; ``log-4xx``, ``log-5xx``, ``log-slow``,
``log-big`` and ``log-zero`` bring back the ones worth seeing (as in uWSGI, they matter only
when logging is off). ``log-date`` prefixes each line with the date, ``memory-report``
appends the worker's memory, ``log-x-forwarded-for`` logs the proxy's client address.
Kept out of the worker so that its request path stays short: with the defaults a request
costs two attribute tests and two small calls here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any


class RequestLog:
    def __init__(self, cfg: Any) -> None:
        self.all = not cfg.disable_logging
        self.slow_ms = cfg.log_slow
        self.big = cfg.log_big
        self.statuses = tuple(p for p, on in (("4", cfg.log_4xx), ("5", cfg.log_5xx)) if on)
        self.zero = cfg.log_zero
        self.some = self.all or bool(self.statuses or self.slow_ms or self.big or self.zero)
        self.date_format: str | None = cfg.log_date
        self.memory = cfg.memory_report
        self.forwarded_for = cfg.log_x_forwarded_for
        self.format: Callable[..., str] | None = compile_format(cfg.log_format) if cfg.log_format else None

    def wanted(self, status: str, sent: int, ms: float) -> bool:
        """True when this request gets a line (``status`` is the 3-digit code, or "-")."""
        if self.all:
            return True
        return (status[:1] in self.statuses or (self.slow_ms > 0 and ms > self.slow_ms)
                or (self.big > 0 and sent > self.big) or (self.zero and sent == 0))

    def client(self, env: dict[str, Any]) -> str:
        """The address for the line: REMOTE_ADDR, or X-Forwarded-For with log-x-forwarded-for."""
        if self.forwarded_for and (xff := env.get("HTTP_X_FORWARDED_FOR")):
            return str(xff)
        return str(env.get("REMOTE_ADDR", "-"))

    def prefix(self) -> str:
        """uWSGI's log-date prefix: ``ctime - `` or ``strftime(format) - ``; "" when off."""
        if self.date_format is None:
            return ""
        if not self.date_format:
            return time.ctime() + " - "
        return time.strftime(self.date_format) + " - "

    @staticmethod
    def memory_line(pid: int, wid: int, requests: int) -> str:
        """The memory-report line, in uWSGI's words, for this worker (read from /proc)."""
        from emperor.vassal.stats import proc_memory  # /proc: the vassal imports nothing outside the stdlib

        rss, vms = proc_memory(pid)
        return (f"{{address space usage: {vms} bytes/{vms >> 20}MB}} {{rss usage: {rss} "
                f"bytes/{rss >> 20}MB}} [pid: {pid}|worker: {wid}|req: {requests}]\n")


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


def syslog_args(arg: str, default_ident: str) -> tuple[str, int]:
    """(ident, facility) for ``syslog.openlog`` from ``IDENT[,FACILITY]``."""
    import syslog

    ident, _, facility = arg.partition(",")
    return (ident.strip() or default_ident, getattr(syslog, "LOG_" + (facility.strip() or "user").upper()))


def request_sink(cfg: Any, name: str) -> tuple[int, Any]:
    """Where this worker writes request lines: (fd, None) or (-1, a callable taking the line).

    req-logger wins; else a syslog ``logger`` takes request lines too; else fd 2 (the log).
    Opened in the worker (after the privilege drop), once."""
    import os

    spec = cfg.req_logger or (cfg.logger if cfg.logger and cfg.logger[0] == "syslog" else None)
    if spec is None or spec[0] == "stdio":
        return 2, None
    if spec[0] == "file":
        return os.open(spec[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640), None
    import syslog

    ident, facility = syslog_args(spec[1], name)
    syslog.openlog(ident, syslog.LOG_PID, facility)
    return -1, lambda line: syslog.syslog(syslog.LOG_INFO, line.rstrip("\n"))


# ---- log-format ----------------------------------------------------------------------------
def _env(key: str, default: str = "-") -> str:
    return f"(env.get({key!r}) or {default!r})"


# uWSGI's request-log variables and the expression each one becomes in the compiled formatter.
# Names available to the expressions: env, status, sent, hsize (a function), us, pid, wid, addr,
# start (wall-clock start, seconds), ex, t (the time module).
_VARS = {
    "addr": "addr",
    "method": _env("REQUEST_METHOD"),
    "uri": "(env.get('REQUEST_URI') or env.get('PATH_INFO') or '-')",
    "proto": _env("SERVER_PROTOCOL"),
    "status": "status",
    "rsize": "sent",
    "size": "max(0, sent - hsize(ex))",
    "hsize": "hsize(ex)",
    "cl": _env("CONTENT_LENGTH", "0"),
    "msecs": "us // 1000",
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
    scope: dict[str, Any] = {"t": time}
    exec(compile(src, "<log-format>", "exec"), scope)  # our own expressions; names are checked above
    return scope["line"]  # type: ignore[no-any-return]


def log_format(raw: str) -> str:
    """The option's validator: the format must compile (an unknown variable is a config error)."""
    if not raw.strip():
        raise ValueError("needs a format")
    compile_format(raw)
    return raw
