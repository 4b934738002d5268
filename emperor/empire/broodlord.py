"""The zerg pool policy: who gets a zerg, when, and who gives one back.

Pure bookkeeping with an injected clock: no processes, no sockets. The emperor asks
``sos()`` on each SOS from a vassal's own channel, does what the verdict says (spawn a
zerg, and maybe stop one of another vassal's), and reports back ``started()``/``gone()``.

uWSGI lends one zerg per SOS with no limit but the global one: the first vassal to shout
takes the whole pool and keeps it. Here, on top of the same global cap ``pool``:

- **Burst**: a backlog far above the vassal's threshold asks for more than one zerg at once:
  one per ``BURST_RATIO`` times the threshold (backlog 127 over a threshold of 10: three),
  within the free slots and the vassal's fair share. uWSGI lends one a second whatever the
  backlog, so a deep queue waits seconds for help that the pool already has.
- **Rate limit**: at most one SOS answered per vassal per ``interval`` seconds (0.9: a vassal's
  once-a-second SOS must not be refused for arriving a few ms early), and none while the
  vassal is backing off because its zergs die before they are ready (a broken ``[zerg]``
  section must not spawn in a loop).
- **Fair share**: a vassal is *overloaded* while it has sent an SOS in the last ``window``
  seconds. Each overloaded vassal's share is ``ceil(pool / overloaded)``. A vassal at or
  above its share gets no free slot while another overloaded vassal is below its own.
- **Preemption**: when the pool is full and an overloaded vassal is below its share, one
  zerg of the vassal furthest above its share is reclaimed (stopped gracefully); the freed
  slot goes to the next SOS of a vassal below its share. At most one preemption per
  ``preempt_interval``, and never for a donor that is not above its share, so two
  vassals with a pool of one keep their order and never flip-flop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GONE_HOW = ("idle", "preempted", "stopped", "lost", "failed")
BURST_RATIO = 4  # one zerg per this many times the threshold the backlog stands at


@dataclass(frozen=True)
class Verdict:
    """What to do about one SOS."""

    lend: bool
    reason: str  # why not, or "lent"
    preempt: str | None = None  # take one zerg back from this vassal
    slot: int = 0  # with lend: the pool slot number (1-based) of the first zerg, for the log
    count: int = 0  # with lend: how many zergs to start (slots slot .. slot + count - 1)


@dataclass
class Brood:
    """One vassal's account in the pool."""

    alive: int = 0  # zergs holding a slot (spawned, not yet gone)
    reclaiming: int = 0  # of those, being stopped by a preemption
    last_sos: float | None = None
    last_backlog: int | None = None
    last_lend: float | None = None
    hold_until: float = 0.0  # backing off after zergs that died before being ready
    backoff: float = 0.0
    lends: int = 0
    preempted: int = 0
    reclaims: int = 0  # zergs that left idle
    lost: int = 0  # zergs that died otherwise (crash, kill, failed start)

    @property
    def kept(self) -> int:
        """Zergs that stay: the ones not already being taken back."""
        return self.alive - self.reclaiming


@dataclass
class Zerg:
    """One lent zerg as the emperor holds it."""

    name: str  # "app.ini:zerg#3": unique, unlike uWSGI's shared "app.ini:zerg"
    parent: str
    pid: int
    spawned_at: float
    backlog: int | None
    ready: bool = False
    leaving: str = ""  # why the emperor asked it to go: "idle", "preempted", "stopped"
    stop_deadline: float = 0.0
    killed: bool = False

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"id": self.name, "vassal": self.parent, "pid": self.pid, "ready": int(self.ready),
                "age": round(now - self.spawned_at, 3), "leaving": self.leaving, "zerg": 1}


class Broodlord:
    def __init__(self, pool: int, clock: Callable[[], float], interval: float = 0.9, window: float = 3.0,
                 preempt_interval: float = 2.0, max_backoff: float = 60.0) -> None:
        self.pool = pool
        self.clock = clock
        self.interval = interval
        self.window = window
        self.preempt_interval = preempt_interval
        self.max_backoff = max_backoff
        self.broods: dict[str, Brood] = {}
        self.last_preempt: float | None = None
        self.lends = 0
        self.reclaims = 0
        self.preemptions = 0
        self.lost = 0
        self.denied = 0

    # ---- queries

    @property
    def alive(self) -> int:
        return sum(b.alive for b in self.broods.values())

    def overloaded(self, now: float) -> list[str]:
        """Vassals that asked for help within ``window`` s, in the order of their names."""
        return sorted(n for n, b in self.broods.items()
                      if b.last_sos is not None and now - b.last_sos <= self.window)

    def share(self, now: float) -> int:
        n = len(self.overloaded(now))
        return math.ceil(self.pool / n) if n else self.pool

    # ---- events

    def sos(self, vassal: str, backlog: int | None, threshold: int | None = None) -> Verdict:
        """A vassal asks for zergs. If the verdict lends, the slots are taken now."""
        now = self.clock()
        b = self.broods.setdefault(vassal, Brood())
        b.last_sos, b.last_backlog = now, backlog
        if self.pool <= 0:
            return self._deny("broodlord is off")
        if now < b.hold_until:
            return self._deny(f"backing off for {b.hold_until - now:.0f} s (its zergs fail to start)")
        if b.last_lend is not None and now - b.last_lend < self.interval:
            return self._deny("rate limit")
        share = self.share(now)
        others_below = [n for n in self.overloaded(now) if n != vassal and self.broods[n].kept < share]
        if self.alive < self.pool:
            if b.kept >= share and others_below:
                return self._deny(f"fair share ({b.kept}/{share}) while {others_below[0]} waits")
            want = 1
            if backlog is not None and threshold:
                want = max(1, backlog // (threshold * BURST_RATIO))
            room = self.pool - self.alive
            if others_below:
                room = min(room, max(1, share - b.kept))
            count = min(want, room)
            first = self.alive + 1
            b.alive += count
            b.lends += count
            b.last_lend = now
            self.lends += count
            return Verdict(True, "lent", slot=first, count=count)
        if b.kept < share:
            donor = self._donor(vassal, share, now)
            if donor is not None:
                self.last_preempt = now
                d = self.broods[donor]
                d.reclaiming += 1
                d.preempted += 1
                self.preemptions += 1
                return Verdict(False, f"pool full: one zerg of {donor} is taken back", preempt=donor)
        return self._deny("pool full")

    def _donor(self, vassal: str, share: int, now: float) -> str | None:
        if self.last_preempt is not None and now - self.last_preempt < self.preempt_interval:
            return None
        if any(b.reclaiming for b in self.broods.values()):
            return None  # one preemption in flight at a time: its slot is about to free up
        best, most = None, share
        for name, b in sorted(self.broods.items()):
            if name != vassal and b.kept > most:
                best, most = name, b.kept
        return best

    def _deny(self, reason: str) -> Verdict:
        self.denied += 1
        return Verdict(False, reason)

    def spawn_failed(self, vassal: str) -> None:
        """The emperor could not even start the zerg the verdict lent: give the slot back."""
        self.gone(vassal, "failed")

    def started(self, vassal: str) -> None:
        """One of the vassal's zergs is ready: its back-off, if any, is over."""
        b = self.broods.get(vassal)
        if b is not None:
            b.backoff, b.hold_until = 0.0, 0.0

    def gone(self, vassal: str, how: str, preempted: bool = False) -> None:
        """A zerg exited: free its slot. ``how`` is one of ``GONE_HOW``."""
        assert how in GONE_HOW, how
        b = self.broods.get(vassal)
        if b is None or b.alive <= 0:
            return
        b.alive -= 1
        if preempted and b.reclaiming:
            b.reclaiming -= 1
        if how == "idle":
            b.reclaims += 1
            self.reclaims += 1
        elif how in ("lost", "failed"):
            b.lost += 1
            self.lost += 1
        if how == "failed":
            b.backoff = min(self.max_backoff, max(1.0, b.backoff * 2))
            b.hold_until = self.clock() + b.backoff
        if not b.alive and b.last_sos is None:
            del self.broods[vassal]  # forgotten meanwhile

    def forget(self, vassal: str) -> None:
        """The vassal is stopped: it no longer competes; its slots free up as its zergs exit."""
        b = self.broods.get(vassal)
        if b is None:
            return
        if b.alive:
            b.last_sos = None
        else:
            del self.broods[vassal]

    # ---- stats

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready pool facts for the log and the stats server."""
        now = self.clock()
        over = set(self.overloaded(now))
        return {
            "pool": self.pool,
            "alive": self.alive,
            "free": max(0, self.pool - self.alive),
            "lends": self.lends,
            "reclaims": self.reclaims,
            "preemptions": self.preemptions,
            "lost": self.lost,
            "denied": self.denied,
            "vassals": {name: {"zergs": b.alive, "lends": b.lends, "reclaims": b.reclaims,
                               "preempted": b.preempted, "lost": b.lost, "backlog": b.last_backlog,
                               "overloaded": int(name in over)}
                        for name, b in sorted(self.broods.items())},
        }
