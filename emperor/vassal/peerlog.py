"""Rate-limited logging of peer trouble: bad requests, slow peers, ignored vars and claims.

A worker logs the first event of each kind from each peer *address* (not ip:port, which
every new TCP connection changes), then counts the repeats for ``period`` seconds and logs
one summary line ("N more ... from 10.0.0.5 suppressed") when the window ends. The table is
bounded: once ``max_keys`` windows are open, new peers share one overflow window, so a
flood of addresses costs one line per period, and as windows expire logging resumes: it
never stops for good. Pure policy; the clock is injected so tests can drive it.
``peer_key`` names the address a connection's trouble is counted against.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from emperor.proxies import AllowList
from emperor.vassal.exchange import Conn

PERIOD = 60.0
MAX_KEYS = 1024
OVERFLOW = ("other peers", "any trouble")


class PeerLog:
    def __init__(self, emit: Callable[[str], None], period: float = PERIOD, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit  # logs one summary line
        self.period = period
        self.max_keys = max_keys
        self.clock = clock
        self.windows: dict[tuple[str, str], list[float | int]] = {}  # key -> [start, suppressed]
        self.next_flush = float("inf")
        self.lock = threading.Lock()  # threaded workers report from several threads

    def first(self, peer: str, kind: str) -> bool:
        """True when this event must be logged; False when it is counted for the summary."""
        now = self.clock()
        with self.lock:
            if now >= self.next_flush:
                self._flush(now)
            key = (peer, kind)
            if key not in self.windows and len(self.windows) >= self.max_keys:
                key = OVERFLOW
            window = self.windows.get(key)
            if window is not None:
                window[1] += 1
                return False
            self.windows[key] = [now, 0]
            self.next_flush = min(self.next_flush, now + self.period)
            return True

    def tick(self, now: float | None = None) -> None:
        """Log the summaries of the windows that have ended (cheap when none has)."""
        if now is None:
            now = self.clock()
        if now >= self.next_flush:
            with self.lock:
                self._flush(now)

    def _flush(self, now: float) -> None:
        nxt = float("inf")
        for key, (start, count) in list(self.windows.items()):
            if now >= start + self.period:
                del self.windows[key]
                if count:
                    peer, kind = key
                    self.emit(f"{count} more {kind!r} from {peer} suppressed in the last {now - start:.0f} s")
            else:
                nxt = min(nxt, start + self.period)
        self.next_flush = nxt


def peer_key(conn: Conn | None, env: dict[str, Any] | None, proxies: AllowList) -> str:
    """The address trouble is counted against: a TCP peer's IP (never its port: every probe
    has a new one); the client address a proxy reports (REMOTE_ADDR) when the peer is a
    Unix-socket peer or in forwarded-allow-ips, since every request then comes from it."""
    remote = (env or {}).get("REMOTE_ADDR")
    if conn is None:
        return remote or "?"
    if conn.family == socket.AF_UNIX:
        return remote or "a unix peer"
    try:
        name = conn.getpeername()
    except OSError:
        return "?"
    return remote if remote and proxies.allows(name) else str(name[0])
