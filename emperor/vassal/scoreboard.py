"""The scoreboard: one slot per worker in an anonymous shared mmap created before fork().

Each worker writes only its own slot (plain int64 stores through a memoryview: no lock,
no syscall); the master reads all slots for harakiri, readiness, loyalty and stats. A
reader may see a slot mid-update, which is harmless for these counters.
"""

from __future__ import annotations

import mmap
import time
from bisect import bisect_left

# int64 fields of a slot
PID, REQUESTS, BUSY_SINCE, ACCEPTING, EXCEPTIONS, TX, HARAKIRI, RESPAWNS, LAST_SPAWN, RT_SUM_US, \
    DROPPED_VARS = range(11)
LOG_GEN = 11  # bumped by the master when it reopened the log: the worker reopens at its next request
IN_FLIGHT = 12  # ASGI workers: requests in flight now (sync workers leave it at 0)
CONNS = 13  # ASGI workers: connections open now (their accept fairness compares it between siblings)
# Request-duration histogram (for Prometheus): HIST + i counts requests that took at most
# HIST_BOUNDS_US[i] microseconds; HIST + len(HIST_BOUNDS_US) counts the slower ones. The worker
# finds the bucket with one bisect and does one store, so the hot path stays a few int stores.
HIST = 16
HIST_BOUNDS_US = (1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
                  2_500_000, 5_000_000, 10_000_000)
NFIELDS = 32
assert HIST + len(HIST_BOUNDS_US) + 1 <= NFIELDS
TEXT = 256  # bytes of "METHOD URI" for the request in progress (harakiri logs it)
SLOT = NFIELDS * 8 + TEXT


def slots_for(processes: int) -> int:
    """Slots to allocate: room for ``emperor ctl scale`` to grow the vassal without a restart.

    ``max(processes * 4, 64)``: a vassal can be scaled up to four times its ini's ``processes``
    (at least to 64 workers); beyond that, change the ini (a reload reallocates).
    """
    return max(processes * 4, 64)


class Scoreboard:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.mem = mmap.mmap(-1, slots * SLOT)
        self.ints = memoryview(self.mem).cast("q")

    def base(self, index: int) -> int:
        """Offset (in int64 units) of slot ``index`` for direct stores by its worker."""
        return index * (SLOT // 8)

    def get(self, index: int, field: int) -> int:
        return int(self.ints[index * (SLOT // 8) + field])

    def set(self, index: int, field: int, value: int) -> None:
        self.ints[index * (SLOT // 8) + field] = value

    def reset(self, index: int, pid: int) -> None:
        """Prepare a slot for a fresh worker; respawn and harakiri counts survive."""
        b = index * (SLOT // 8)
        keep_resp, keep_hk = self.ints[b + RESPAWNS], self.ints[b + HARAKIRI]
        for f in range(NFIELDS):
            self.ints[b + f] = 0
        self.ints[b + PID] = pid
        self.ints[b + RESPAWNS] = keep_resp
        self.ints[b + HARAKIRI] = keep_hk
        self.ints[b + LAST_SPAWN] = int(time.time())

    def set_text(self, index: int, text: str) -> None:
        raw = text.encode("latin-1", "replace")[: TEXT - 1]
        off = index * SLOT + NFIELDS * 8
        self.mem[off : off + len(raw) + 1] = raw + b"\0"

    def text(self, index: int) -> str:
        off = index * SLOT + NFIELDS * 8
        raw = self.mem[off : off + TEXT]
        return raw.split(b"\0", 1)[0].decode("latin-1")

    def histogram(self, index: int) -> list[int]:
        """Per-bucket counts of slot ``index`` (not cumulative), the last one for +Inf."""
        b = index * (SLOT // 8) + HIST
        return [int(x) for x in self.ints[b : b + len(HIST_BOUNDS_US) + 1]]

    def total_requests(self) -> int:
        return sum(int(self.ints[i * (SLOT // 8) + REQUESTS]) for i in range(self.slots))


class PyTally:
    """One worker's per-request counters in its slot: ``begin()`` marks it busy and returns the
    start (monotonic ns); ``end(start, sent)`` counts the request, its bytes, its time and its
    histogram bucket, clears busy and returns the request count; ``idle()`` clears busy alone.
    The twin of the C ``Tally`` (emperor/vassal/_tally.c: the same in two calls instead of
    about 0.8 µs of memoryview work per request), used when the extension is not built."""

    def __init__(self, ints: memoryview, busy: int, requests: int, tx: int, rt: int, hist: int,
                 bounds: tuple[int, ...]) -> None:
        self.ints = ints
        self.cells = (busy, requests, tx, rt, hist)
        self.bounds = bounds

    def begin(self) -> int:
        start = time.monotonic_ns()
        self.ints[self.cells[0]] = start
        return start

    def end(self, start: int, sent: int) -> int:
        self.ints[self.cells[0]] = 0
        return self.count(start, sent)

    def idle(self) -> None:
        """Clear busy without counting: what began was not a request after all (half a head)."""
        self.ints[self.cells[0]] = 0

    def count(self, start: int, sent: int) -> int:
        """``end`` without clearing busy (the ASGI worker is busy while any request is in flight)."""
        ints = self.ints
        _busy, requests, tx, rt, hist = self.cells
        took = (time.monotonic_ns() - start) // 1000
        done: int = ints[requests] + 1
        ints[requests] = done
        ints[tx] += sent
        ints[rt] += took
        ints[hist + bisect_left(self.bounds, took)] += 1
        return done


try:  # the optional C extension
    from emperor.vassal._tally import Tally
except ImportError:  # pragma: no cover - built wherever a compiler is
    Tally = PyTally  # type: ignore[assignment,misc]


def tally(ints: memoryview, slot: int) -> PyTally:
    """The Tally of the worker slot that begins at ``slot`` (an index into ``ints``)."""
    made: PyTally = Tally(ints, slot + BUSY_SINCE, slot + REQUESTS, slot + TX, slot + RT_SUM_US, slot + HIST,
                          HIST_BOUNDS_US)
    return made
