"""Logging for the emperor and the vassals: stderr, or a file (``logto``/``daemonize``).

A log file is applied by pointing fds 1 and 2 at it, so the application's prints and
tracebacks, the per-request lines (written straight to fd 2) and any process spawned
afterwards all write there too, and reopening for logrotate is one dup2 again.
"""

from __future__ import annotations

import logging
import os
import sys


def setup(tag: str, logto: str | None = None) -> None:
    """Configure the ``emperor`` loggers; lines look like ``2026-01-01 10:00:00 [tag] message``."""
    root = logging.getLogger("emperor")
    root.setLevel(logging.DEBUG if os.environ.get("EMPEROR_DEBUG") else logging.INFO)
    if logto:
        redirect(logto)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{tag}] %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.handlers[:] = [handler]
    root.propagate = False


def redirect(path: str) -> None:
    """Make fds 1 and 2 append to ``path`` (created 0640). Raises OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def reopen(path: str | None) -> bool:
    """Reopen the log file after logrotate renamed it; False when there is no log file."""
    if not path:
        return False
    redirect(path)
    return True
