"""The vassal's log file: reopening it (logrotate, touch-logreopen, log-maxsize) and syslog.

The master owns fds 1 and 2 for itself and its workers. It reopens them when asked (SIGUSR1,
the emperor's LOGREOPEN with the emperor's log as an fd), when ``touch-logreopen``'s file is
touched, or when ``log-maxsize`` renames a log grown past its size; workers follow at their next
request through the scoreboard's ``LOG_GEN`` (no call on the request path beyond reading it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator

from emperor import config, logformat, logs
from emperor.vassal import scoreboard
from emperor.vassal.scoreboard import Scoreboard

log = logging.getLogger("emperor.master")


class LogWatch:
    """``touch-logreopen`` and ``log-maxsize``, each checked at most once a second."""

    def __init__(self, cfg: config.Config, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self.logreopen_mtime: int | None = None  # touch-logreopen: the mtime last seen
        self.next_logreopen_check = 0.0
        self.next_logsize_check = 0.0  # log-maxsize

    def due(self, now: float) -> Iterator[str]:
        """Why the log should be reopened now, one reason per check that fired (usually none).

        A generator, so the caller reopens after the touch check and before the size check
        reads fd 2's size."""
        if (why := self._touched(now)) is not None:
            yield why
        if self.cfg.log_maxsize and (why := self._rotated(now)) is not None:
            yield why

    def _touched(self, now: float) -> str | None:
        """``touch-logreopen = PATH``: PATH's mtime changed."""
        path = self.cfg.touch_logreopen
        if not path or now < self.next_logreopen_check:
            return None
        self.next_logreopen_check = now + 1.0
        mtime = _mtime(path)
        if self.logreopen_mtime is None:
            self.logreopen_mtime = mtime
        elif mtime != self.logreopen_mtime:
            self.logreopen_mtime = mtime
            return f"{path} was touched"
        return None

    def _rotated(self, now: float) -> str | None:
        """``log-maxsize``: rename a log file past the size to FILE.UNIXTIME."""
        path = self.cfg.logto or self.cfg.daemonize
        if not path or now < self.next_logsize_check:
            return None
        self.next_logsize_check = now + 1.0
        try:
            if os.fstat(2).st_size <= self.cfg.log_maxsize:
                return None
            rotated = base = f"{path}.{int(time.time())}"
            n = 0
            while os.path.lexists(rotated):  # rotated twice in one second: never overwrite
                n += 1
                rotated = f"{base}.{n}"
            os.rename(path, rotated)
        except OSError as exc:
            log.error("%s: log-maxsize: cannot rotate %s: %s", self.name, path, exc.strerror)
            self.next_logsize_check = now + 60.0  # say it once a minute, not every second
            return None
        return f"log-maxsize: the old log is {rotated}"


def reopen(cfg: config.Config, name: str, board: Scoreboard, why: str, fd: int | None = None) -> None:
    """Point fds 1 and 2 at the log again and tell the workers (logrotate renamed the file).

    The vassal's own ``logto`` wins: it is reopened by name. Otherwise the vassal writes
    to the emperor's log, which the emperor passes as ``fd`` (the vassal may not be allowed
    to open it). Workers follow at their next request (``Scoreboard.LOG_GEN``).
    """
    own = cfg.logto or cfg.daemonize
    try:
        if own:
            logs.reopen(own)
        elif fd is not None:
            logs.adopt(fd)
        else:
            return
    except OSError as exc:
        log.error("%s: cannot reopen the log %s: %s", name, own or "", exc.strerror)
        return
    finally:
        if fd is not None:
            os.close(fd)
    for wid in range(1, board.slots + 1):
        board.set(wid - 1, scoreboard.LOG_GEN, board.get(wid - 1, scoreboard.LOG_GEN) + 1)
    log.info("%s: log reopened (%s)", name, why)


def log_to_syslog(arg: str, name: str) -> None:
    """``logger = syslog[:IDENT[,FACILITY]]``: the master's and workers' log records go to syslog."""
    try:
        handler = logformat.syslog_handler(arg, name)
    except OSError as exc:
        log.error("logger = syslog: cannot reach the syslog socket (%s): logging to stderr", exc)
        return
    logging.getLogger("emperor").handlers[:] = [handler]


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
