"""The emperor's log: stderr, or a file (``logto``/``daemonize``) that vassals inherit.

With a log file, fds 1 and 2 are pointed at it, so the vassals spawned afterwards write
there too, as under uWSGI. ``reopen()`` (SIGUSR1, ``touch-logreopen``) opens the path
again for logrotate's rename-then-reopen; running vassals keep the old file until their
next spawn, so ``copytruncate`` is the rotation mode that loses nothing (docs/emperor.md).
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s [emperor] %(message)s"


def setup(logto: str | None) -> None:
    root = logging.getLogger("emperor")
    root.setLevel(logging.DEBUG if os.environ.get("EMPEROR_DEBUG") else logging.INFO)
    if logto:
        point_stdio_at(logto)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%d %H:%M:%S"))
    root.handlers[:] = [handler]
    root.propagate = False


def point_stdio_at(path: str) -> None:
    """Make fds 1 and 2 append to ``path`` (creating it 0640)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def reopen(logto: str | None) -> bool:
    if not logto:
        return False
    point_stdio_at(logto)
    return True
