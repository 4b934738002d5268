"""Which requests get a log line, and what is added to it: uWSGI's logging options.

``disable-logging`` turns request lines off; ``log-4xx``, ``log-5xx``, ``log-slow``,
``log-big`` and ``log-zero`` bring back the ones worth seeing (as in uWSGI, they matter only
when logging is off). ``log-date`` prefixes each line with the date, ``memory-report``
appends the worker's memory, ``log-x-forwarded-for`` logs the proxy's client address.
Kept out of the worker so that its request path stays short: with the defaults a request
costs two attribute tests and two small calls here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emperor import logs
from emperor.config_view import ConfigView
from emperor.logformat import compile_format, syslog_handler
from emperor.protocol.wsgi import HeaderError
from emperor.vassal import scoreboard as sb

if TYPE_CHECKING:
    from emperor.vassal.exchange import Exchange


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


class RequestWriter:
    """Writes one worker's request lines (the default line, or log-format's), to fd 2, a
    req-logger file or syslog. The worker calls ``write`` once per request when ``RequestLog.some``;
    the date stamp is formatted once per second, not per request."""

    def __init__(self, reqlog: RequestLog, wid: int, ints: Any, slot: int,
                 head: Callable[[str, list[tuple[str, str]]], bytes]) -> None:
        self.reqlog = reqlog
        self.wid = wid
        self.ints, self.slot = ints, slot
        self.head = head  # the worker's head cache (log-format's %(hsize))
        self.pid = 0  # set in the forked worker
        self.fd: int = 2
        self.sink: Callable[[str], None] | None = None  # req-logger: set by the worker (file or syslog)
        self.log_second, self.log_prefix = 0, ""

    def write(self, env: dict[str, Any], ex: Exchange, start: int) -> None:
        ms = (time.monotonic_ns() - start) / 1e6
        status = (ex.status or "-")[:3]
        reqlog = self.reqlog
        if not reqlog.all and not reqlog.wanted(status, _body_size(ex, status), ms):
            return
        now = int(time.time())
        if now != self.log_second:  # one strftime per second, not per request
            self.log_second, self.log_prefix = now, f"{logs.stamp(now)} [{logs.tag()}] "
        if reqlog.format is not None:  # log-format: compiled once
            self._formatted(env, ex, status, ms)
            return
        line = (f"{self.log_prefix}{reqlog.prefix()}{reqlog.client(env)} \"{env.get('REQUEST_METHOD', '-')} "
                f"{env.get('REQUEST_URI') or env.get('PATH_INFO', '')} {env.get('SERVER_PROTOCOL', '-')}\" "
                f"{status} {ex.sent} {ms:.2f}ms pid={self.pid} worker={self.wid}\n")
        if reqlog.memory:
            line += reqlog.memory_line(self.pid, self.wid, self.ints[self.slot + sb.REQUESTS])
        try:
            if self.fd >= 0:
                os.write(self.fd, line.encode("latin-1", "replace"))
            elif self.sink is not None:  # req-logger = syslog
                self.sink(line)
        except OSError:
            pass

    def _formatted(self, env: dict[str, Any], ex: Exchange, status: str, ms: float) -> None:
        reqlog = self.reqlog
        assert reqlog.format is not None
        text = reqlog.format(env, status, ex.sent, self._head_size, int(ms * 1000), self.pid, self.wid,
                             reqlog.client(env), time.time() - ms / 1000, ex)
        line = f"{self.log_prefix}{reqlog.prefix()}{text}\n"
        if reqlog.memory:
            line += reqlog.memory_line(self.pid, self.wid, self.ints[self.slot + sb.REQUESTS])
        try:  # as the default line above (kept inline there: it is every request's cost)
            if self.fd >= 0:
                os.write(self.fd, line.encode("latin-1", "replace"))
            elif self.sink is not None:
                self.sink(line)
        except OSError:
            pass

    def _head_size(self, ex: Exchange) -> int:
        """log-format's %(hsize) and %(size): the length of the head sent (from the head cache)."""
        if not ex.head_sent or ex.status is None:
            return 0
        try:
            return len(self.head(ex.status, ex.headers))
        except HeaderError:
            return 0


def _body_size(ex: Exchange, status: str) -> int:
    """For log-zero: 0 when nothing was sent, the response cannot have a body (204, 304, HEAD)
    or it declared ``Content-Length: 0``; else the bytes sent (a body follows the head)."""
    if not ex.sent or status in ("204", "304") or ex.method == "HEAD":
        return 0
    for name, value in ex.headers or ():
        if name.lower() == "content-length" and value.strip() == "0":
            return 0
    return ex.sent


def request_sink(cfg: Any, name: str) -> tuple[int, Any]:
    """Where this worker writes request lines: (fd, None) or (-1, a callable taking the line).

    req-logger wins; else a syslog ``logger`` takes request lines too; else fd 2 (the log).
    Opened in the worker (after the privilege drop), once."""
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
