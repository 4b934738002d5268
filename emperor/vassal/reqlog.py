"""Which requests get a log line, and what is added to it: uWSGI's logging options.

``disable-logging`` turns request lines off; ``log-4xx``, ``log-5xx``, ``log-slow``,
``log-big`` and ``log-zero`` bring back the ones worth seeing (as in uWSGI, they matter only
when logging is off). ``log-date`` prefixes each line with the date, ``memory-report``
appends the worker's memory, ``log-x-forwarded-for`` logs the proxy's client address.
Kept out of the worker so that its request path stays short: with the defaults a request
costs two attribute tests and two small calls here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from emperor.config_view import ConfigView
from emperor.logformat import compile_format, syslog_handler


class RequestLog:
    def __init__(self, cfg: ConfigView) -> None:
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
    import logging

    handler = syslog_handler(spec[1], name)  # raises OSError: the caller keeps fd 2

    def to_syslog(line: str) -> None:
        handler.emit(logging.makeLogRecord({"msg": line.rstrip("\n"), "levelno": logging.INFO,
                                            "levelname": "INFO"}))

    return -1, to_syslog
