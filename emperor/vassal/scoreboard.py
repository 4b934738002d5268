"""The scoreboard: one slot per worker in an anonymous shared mmap created before fork().

Each worker writes only its own slot (plain int64 stores through a memoryview: no lock,
no syscall); the master reads all slots for harakiri, readiness, loyalty and stats. A
reader may see a slot mid-update, which is harmless for these counters.
"""

from __future__ import annotations

import mmap
import time

# int64 fields of a slot
PID, REQUESTS, BUSY_SINCE, ACCEPTING, EXCEPTIONS, TX, HARAKIRI, RESPAWNS, LAST_SPAWN, RT_SUM_US, \
    GENERATION, DROPPED_VARS = range(12)
NFIELDS = 16
TEXT = 256  # bytes of "METHOD URI" for the request in progress (harakiri logs it)
SLOT = NFIELDS * 8 + TEXT


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

    def total_requests(self) -> int:
        return sum(int(self.ints[i * (SLOT // 8) + REQUESTS]) for i in range(self.slots))
