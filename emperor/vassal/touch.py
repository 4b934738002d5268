"""``touch-reload``: a graceful reload when a file is touched, created or removed.

uWSGI compares each file's mtime once per master cycle; so does this, with nanosecond mtimes
(a deploy that touches the file twice in one second still counts) and "missing" as a state
of its own (appearing or disappearing is a change too). ``stat`` follows symlinks, so
touching the target of a linked file counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

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


class ChainReload:
    """``touch-chain-reload``: replace the workers one at a time when a file is touched.

    The next old worker is told to finish (SIGTERM, as a recycle) only once the previous one
    has exited and its replacement accepts, so the other workers keep serving throughout.
    """

    def __init__(self, paths: list[str]) -> None:
        self.watch = TouchWatch(paths)
        self.queue: list[int] = []  # old worker pids still to replace, in worker-id order
        self.pid = 0  # the old worker being replaced now
        self.wid = 0

    def step(self, now: float, workers: dict[int, int], accepting: Callable[[int], bool]
             ) -> tuple[str, int, int] | None:
        """What to do now: ("touched", 0, 0) when a chain starts, ("next", pid, wid) for the
        worker to stop next, ("done", 0, 0) at the end; None when there is nothing to do."""
        if not self.queue and not self.pid:
            path = self.watch.touched(now)
            if path is None:
                return None
            self.queue = sorted(workers, key=workers.__getitem__)
            return ("touched", 0, 0)
        if self.pid:
            if self.pid in workers or not any(w == self.wid for w in workers.values()) \
                    or not accepting(self.wid):
                return None  # the old one is finishing, or its replacement is not accepting yet
            self.pid = self.wid = 0
        while self.queue:
            pid = self.queue.pop(0)
            if pid in workers:
                self.pid, self.wid = pid, workers[pid]
                return ("next", pid, self.wid)
        return ("done", 0, 0)
