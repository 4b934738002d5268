"""Logging for the emperor and the vassals: stderr, or a file (``logto``/``daemonize``).

A log file is applied by pointing fds 1 and 2 at it, so the application's prints and
tracebacks, the per-request lines (written straight to fd 2) and any process spawned
afterwards all write there too, and reopening for logrotate is one dup2 again.

Every line of a message carries the prefix (a traceback's continuation lines too), so
``grep '\\[app\\]'`` finds all of an app's lines in an emperor's log shared by many vassals.
"""

from __future__ import annotations

import logging
import os
import sys
import time

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_tag = ""


def tag() -> str:
    """The process's prefix tag (the vassal's name): the request lines carry it too."""
    return _tag


def stamp(now: float) -> str:
    """``now`` in the log's time format (the request lines use the same one)."""
    return time.strftime(TIME_FORMAT, time.localtime(now))


class PrefixFormatter(logging.Formatter):
    """``2026-01-01 10:00:00 [tag] message``, repeated on every line of a multi-line message."""

    def __init__(self, tag: str) -> None:
        super().__init__("%(message)s")
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"{stamp(record.created)} [{self.tag}] "
        return "\n".join(prefix + line for line in text.split("\n"))


def setup(tag: str, logto: str | None = None) -> None:
    """Configure the ``emperor`` loggers; lines look like ``2026-01-01 10:00:00 [tag] message``."""
    global _tag
    _tag = tag
    root = logging.getLogger("emperor")
    root.setLevel(logging.DEBUG if os.environ.get("EMPEROR_DEBUG") else logging.INFO)
    if logto:
        redirect(logto)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrefixFormatter(tag))
    root.handlers[:] = [handler]
    root.propagate = False


def redirect(path: str) -> None:
    """Make fds 1 and 2 append to ``path`` (created 0640). Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        adopt(fd)
    finally:
        os.close(fd)


def adopt(fd: int) -> None:
    """Make fds 1 and 2 write where ``fd`` writes (the caller still owns and closes ``fd``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def reopen(path: str | None) -> bool:
    """Reopen the log file after logrotate renamed it; False when there is no log file."""
    if not path:
        return False
    redirect(path)
    return True


def follow(pid: int) -> None:
    """Write where process ``pid`` (our master) writes its fd 2 now: a worker's side of a reopen.

    Opening ``/proc/PID/fd/2`` opens the file the master has now, by inode, whatever its name.
    Raises OSError (the master is gone, or the file is not ours to open).
    """
    fd = os.open(f"/proc/{pid}/fd/2", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        adopt(fd)
    finally:
        os.close(fd)


class Touched:
    """``touch-logreopen = FILE``: is its mtime new? Looked at once a second (a stat, no watch)."""

    def __init__(self, path: str | None, now: float) -> None:
        self.path = path
        self.mtime = self._mtime()
        self.next_check = now + 1

    def _mtime(self) -> int:
        if not self.path:
            return 0
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return 0

    def touched(self, now: float) -> bool:
        if not self.path or now < self.next_check:
            return False
        self.next_check = now + 1
        mtime = self._mtime()
        if mtime == self.mtime:
            return False
        self.mtime = mtime
        return True
