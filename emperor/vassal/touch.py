"""``touch-reload``: a graceful reload when a file is touched, created or removed.

uWSGI compares each file's mtime once per master cycle; so does this, with nanosecond mtimes
(a deploy that touches the file twice in one second still counts) and "missing" as a state
of its own (appearing or disappearing is a change too). ``stat`` follows symlinks, so
touching the target of a linked file counts.
"""

from __future__ import annotations

import os
import time

CHECK_EVERY = 1.0  # seconds, uWSGI's master cycle


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except (OSError, ValueError):
        return None


class TouchWatch:
    def __init__(self, paths: list[str]) -> None:
        self.seen = {p: _mtime(p) for p in paths}
        self.next_check = time.monotonic() + CHECK_EVERY

    def touched(self, now: float) -> str | None:
        """The first watched path that changed since the last look (at most once a second)."""
        if now < self.next_check:
            return None
        self.next_check = now + CHECK_EVERY
        for path, before in self.seen.items():
            after = _mtime(path)
            if after != before:
                self.seen[path] = after
                return path
        return None
