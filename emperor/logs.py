"""Logging setup shared by the emperor and the vassals: stderr or ``logto``, and reopening.

``logto`` is applied by dup2()ing the log file onto fds 1 and 2, so the application's prints,
tracebacks and the per-request lines (written straight to fd 2) all land in the same file,
and reopening for logrotate is one dup2 again.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(process)d %(message)s"


def setup(tag: str = "", level: int = logging.INFO) -> None:
    fmt = f"%(asctime)s [{tag}] %(message)s" if tag else FORMAT
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt, "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)


def redirect(path: str) -> None:
    """Send fds 1 and 2 to ``path`` (append, created 0640). Raises OSError with the path."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


def reopen(path: str | None) -> None:
    """Reopen ``logto`` after logrotate renamed it; failures keep the old file and are logged."""
    if not path:
        return
    try:
        redirect(path)
        logging.getLogger("emperor").info("log reopened: %s", path)
    except OSError as exc:
        logging.getLogger("emperor").error("cannot reopen log %s: %s", path, exc.strerror)
