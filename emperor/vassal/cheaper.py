"""The cheaper policy: how many workers a vassal runs between ``cheaper`` and ``processes``.

Pure logic, no OS calls: the master hands :meth:`Policy.decide` a :class:`Snapshot` (live,
starting and busy workers from the scoreboard, the busy time since the last snapshot, the
backlog from ``emperor.vassal.backlog``, the workers' RSS, the monotonic clock) and gets an
:class:`Action` back: spawn N workers, retire N, or nothing, always with a reason. Tests drive it
with a fake clock (tests/test_cheaper_policy.py).

The algorithms keep uWSGI's names and meanings (docs/autoscaling.md), with three differences:

- decisions are taken every time the master looks (4 times a second, more often while the house
  is full), not once per one-second master cycle, and each rule is measured in seconds;
- in every algorithm a *full house* (every worker busy) with a connection waiting in the listen
  queue spawns ``cheaper-step`` workers at once: that is the overload the rules wait for, already
  there. Spawns wait until the workers spawned before accept, so one burst cannot overshoot;
- once the extra workers have been idle for the algorithm's threshold, all of them are retired
  together (uWSGI retires one per threshold, so 8 -> 1 takes seven periods). "Extra" means above
  both ``cheaper`` and what the trailing threshold needed (the most workers busy at once in it,
  plus the spare workers the algorithm keeps); the window slides, so workers still busy at the
  end of a burst follow as soon as they too have been idle for the threshold. busyness counts
  its idle windows back from each look instead of at fixed boundaries, so its idle clock too
  starts when the workers became idle (``_busyness_idle``).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

ALGOS = ("spare", "spare2", "backlog", "busyness")
BACKLOG_IDLE = 1.0  # backlog: uWSGI retires as soon as a one-second cycle sees a short queue
RSS_HARD_EVERY = 1.0  # cheaper-rss-limit-hard retires one worker per second, as uWSGI's cycle


@dataclass(frozen=True)
class Settings:
    """The cheaper options, checked and clamped (``from_config`` says what it changed)."""

    algo: str = "spare"
    minimum: int = 1
    maximum: int = 2
    initial: int = 1
    step: int = 1
    overload: int = 3
    idle: int = 10
    busyness_max: int = 50
    busyness_min: int = 25
    multiplier: int = 10
    penalty: int = 1
    backlog_alert: int = 33
    backlog_step: int = 1
    backlog_multiplier: int = 3
    backlog_nonzero: int = 60
    rss_soft: int = 0
    rss_hard: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> tuple[Settings | None, list[str]]:
        """(the settings, or None when cheaper is off; warnings about values that were adjusted)."""
        warnings: list[str] = []
        if not cfg.cheaper:
            return None, warnings
        processes = cfg.processes
        if processes < 2:
            warnings.append(f"cheaper = {cfg.cheaper} needs processes above it (processes is "
                            f"{processes}): cheaper mode is off")
            return None, warnings
        minimum = cfg.cheaper
        if minimum >= processes:
            warnings.append(f"cheaper = {minimum} is not below processes = {processes}: using "
                            f"{processes - 1}")
            minimum = processes - 1
        initial = cfg.cheaper_initial or minimum
        if not minimum <= initial <= processes:
            fixed = min(max(initial, minimum), processes)
            warnings.append(f"cheaper-initial = {initial} is outside [cheaper, processes] = "
                            f"[{minimum}, {processes}]: using {fixed}")
            initial = fixed
        bmin, bmax = cfg.cheaper_busyness_min, cfg.cheaper_busyness_max
        if cfg.cheaper_algo == "busyness" and bmin >= bmax:
            warnings.append(f"cheaper-busyness-min ({bmin}) is not below cheaper-busyness-max ({bmax}): "
                            f"using {bmax // 2}")
            bmin = bmax // 2
        soft, hard = cfg.cheaper_rss_limit_soft, cfg.cheaper_rss_limit_hard
        if soft and hard and hard <= soft:
            warnings.append(f"cheaper-rss-limit-hard ({hard}) is not above cheaper-rss-limit-soft "
                            f"({soft}): the hard limit retires workers the soft one already stopped")
        return cls(algo=cfg.cheaper_algo, minimum=minimum, maximum=processes, initial=initial,
                   step=cfg.cheaper_step, overload=cfg.cheaper_overload, idle=cfg.cheaper_idle,
                   busyness_max=bmax, busyness_min=bmin, multiplier=cfg.cheaper_busyness_multiplier,
                   penalty=cfg.cheaper_busyness_penalty, backlog_alert=cfg.cheaper_busyness_backlog_alert,
                   backlog_step=cfg.cheaper_busyness_backlog_step,
                   backlog_multiplier=cfg.cheaper_busyness_backlog_multiplier,
                   backlog_nonzero=cfg.cheaper_busyness_backlog_nonzero, rss_soft=soft, rss_hard=hard), \
            warnings


@dataclass(frozen=True)
class Snapshot:
    """What the master sees now. ``workers`` counts the workers it wants (alive or about to be
    respawned; retiring ones excluded), ``starting`` those of them that do not accept yet,
    ``busy`` those inside a request."""

    now: float
    workers: int
    busy: int
    starting: int = 0
    busy_time: float = 0.0  # worker-seconds spent in requests since the previous snapshot
    backlog: int | None = None  # connections waiting (the fullest listener), None if unreadable
    rss: int = 0  # bytes, summed over the workers


@dataclass(frozen=True)
class Action:
    """Spawn ``spawn`` workers, or retire ``retire`` of them; ``rule`` is a short name for counters
    and ``reason`` the sentence for the log."""

    spawn: int = 0
    retire: int = 0
    rule: str = ""
    reason: str = ""

    def __bool__(self) -> bool:
        return bool(self.spawn or self.retire)


NOTHING = Action()


class _Since:
    """How long a condition has held, and the busy workers seen meanwhile (the last ``span``
    seconds of them: ``peak`` is what the trailing threshold needed)."""

    def __init__(self, span: float = 0.0) -> None:
        self.span = span
        self.start: float | None = None
        self.samples: deque[tuple[float, int]] = deque()

    def update(self, holds: bool, now: float, busy: int) -> float:
        if not holds:
            self.start = None
            self.samples.clear()
            return 0.0
        if self.start is None:
            self.start = now
        self.samples.append((now, busy))
        while self.samples[0][0] < now - self.span:
            self.samples.popleft()
        return now - self.start

    @property
    def peak(self) -> int:
        return max((b for _, b in self.samples), default=0)

    def restart(self, now: float, busy: int) -> None:
        self.start = now
        self.samples.clear()
        self.samples.append((now, busy))


class Policy:
    """One vassal's cheaper state; ``decide`` is called with every snapshot."""

    def __init__(self, settings: Settings, now: float) -> None:
        self.s = settings
        self.maximum = settings.maximum  # ``emperor ctl scale`` moves the ceiling
        self.full = _Since()  # spare: every worker busy
        # spare: two or more idle; spare2: more than cheaper idle; backlog: a short queue. Once it has
        # held for the threshold, every snapshot retires what the trailing threshold did not need.
        span = {"spare": settings.overload, "spare2": settings.idle}.get(settings.algo, BACKLOG_IDLE)
        self.spare = _Since(span)
        self.nonzero = _Since()  # busyness: the queue has not been empty
        self.window_start = now  # busyness: the averaging window
        self.window_busy = 0.0
        self.window_capacity = 0.0
        self.last_now = now
        # busyness's retire rule: (end, busy seconds, worker seconds) of every snapshot in the last
        # needed x cheaper-overload seconds, and when the idle clock started (at the policy's start,
        # after a retirement, or at the last look busier than cheaper-busyness-max)
        self.samples: deque[tuple[float, float, float]] = deque()
        self.samples_since = now
        self.multiplier = settings.multiplier
        self.emergency = 0  # busyness: workers spawned by the backlog rules, not yet retired
        self.last_cheap: float | None = None
        self.next_rss_retire = now
        self.last_busyness: float | None = None  # for stats and the log

    @property
    def minimum(self) -> int:
        return min(self.s.minimum, self.maximum)

    # ---- the entry point -------------------------------------------------------------------
    def decide(self, snap: Snapshot) -> Action:
        s = self.s
        hard = s.rss_hard and snap.rss >= s.rss_hard and snap.workers > self.minimum
        if hard and snap.now >= self.next_rss_retire:
            self.next_rss_retire = snap.now + RSS_HARD_EVERY
            return Action(retire=1, rule="rss-hard", reason=f"workers' RSS {_mb(snap.rss)} >= "
                          f"cheaper-rss-limit-hard {_mb(s.rss_hard)}")
        if snap.workers > self.maximum:  # the ceiling was lowered: the master retires the surplus
            return NOTHING
        algo = s.algo
        if algo == "backlog" and snap.backlog is None:
            algo = "spare"  # the queue cannot be read: the master warned at boot
        action = getattr(self, "_" + algo)(snap)
        self.last_now = snap.now
        return action

    # ---- helpers ----------------------------------------------------------------------------
    def _room(self, snap: Snapshot) -> int:
        return max(0, self.maximum - snap.workers)

    def _spawn(self, snap: Snapshot, count: int, rule: str, reason: str) -> Action:
        count = min(count, self._room(snap))
        if count <= 0:
            return NOTHING
        if self.s.rss_soft and snap.rss >= self.s.rss_soft:
            return NOTHING  # cheaper-rss-limit-soft: no growth while the memory is that high
        self.spare.update(False, snap.now, 0)  # the new workers start idle: count afresh
        return Action(spawn=count, rule=rule, reason=reason)

    def _retire_to(self, snap: Snapshot, keep: int, rule: str, reason: str) -> Action:
        keep = max(self.minimum, keep)
        if snap.workers <= keep:
            return NOTHING
        self.last_cheap = snap.now
        return Action(retire=snap.workers - keep, rule=rule, reason=reason)

    def _full_house(self, snap: Snapshot) -> Action | None:
        """Every worker busy and a connection waiting: grow now, whatever the algorithm."""
        if snap.starting or snap.busy < snap.workers or not snap.backlog:
            return None
        return self._spawn(snap, self.s.step, "full-house",
                           f"all {snap.workers} worker(s) busy and {snap.backlog} connection(s) waiting")

    # ---- spare --------------------------------------------------------------------------------
    def _spare(self, snap: Snapshot) -> Action:
        s = self.s
        if (fast := self._full_house(snap)) is not None:
            self.full.restart(snap.now, snap.busy)
            return fast
        held = self.full.update(not snap.starting and snap.busy >= snap.workers, snap.now, snap.busy)
        if held >= s.overload:
            self.full.restart(snap.now, snap.busy)
            return self._spawn(snap, s.step, "overload",
                               f"all {snap.workers} worker(s) busy for {held:.1f} s "
                               f"(cheaper-overload {s.overload})")
        idle = snap.workers - snap.busy - snap.starting
        quiet = self.spare.update(idle >= 2, snap.now, snap.busy)
        if quiet >= s.overload:
            peak = self.spare.peak
            return self._retire_to(snap, peak + 1, "idle", f"two or more workers idle for {quiet:.1f} s "
                                   f"(cheaper-overload {s.overload}); at most {peak} busy in the last "
                                   f"{s.overload} s")
        return NOTHING

    # ---- spare2 -------------------------------------------------------------------------------
    def _spare2(self, snap: Snapshot) -> Action:
        s = self.s
        idle = snap.workers - snap.busy  # a starting worker will be idle in a moment
        if idle < self.minimum:
            return self._spawn(snap, min(s.step, self.minimum - idle), "spare2",
                               f"{idle} idle worker(s), cheaper keeps {self.minimum} idle")
        quiet = self.spare.update(idle - snap.starting > self.minimum, snap.now, snap.busy)
        if quiet >= s.idle:
            peak = self.spare.peak
            return self._retire_to(snap, peak + self.minimum, "idle", f"more than {self.minimum} idle "
                                   f"worker(s) for {quiet:.1f} s (cheaper-idle {s.idle}); "
                                   f"at most {peak} busy in the last {s.idle} s")
        return NOTHING

    # ---- backlog ------------------------------------------------------------------------------
    def _backlog(self, snap: Snapshot) -> Action:
        s = self.s
        backlog = snap.backlog or 0
        if (fast := self._full_house(snap)) is not None:
            return fast
        if backlog > s.overload and not snap.starting:
            return self._spawn(snap, s.step, "backlog", f"{backlog} connection(s) waiting > cheaper-overload "
                               f"{s.overload}")
        idle = snap.workers - snap.busy - snap.starting
        quiet = self.spare.update(backlog <= s.overload and idle >= 1, snap.now, snap.busy)
        if quiet >= BACKLOG_IDLE:
            peak = self.spare.peak
            return self._retire_to(snap, peak, "idle", f"queue at most cheaper-overload {s.overload} and a "
                                   f"worker idle for {quiet:.1f} s; at most {peak} busy")
        return NOTHING

    # ---- busyness -----------------------------------------------------------------------------
    def _busyness(self, snap: Snapshot) -> Action:
        s = self.s
        dt = max(0.0, snap.now - self.last_now)
        capacity = dt * max(1, snap.workers - snap.starting)
        self.window_busy += snap.busy_time
        self.window_capacity += capacity
        self.samples.append((snap.now, snap.busy_time, capacity))
        if capacity and 100.0 * snap.busy_time / capacity > s.busyness_max:
            self.samples_since = max(self.samples_since, snap.now)  # busy just now: the idle clock restarts
        backlog = snap.backlog or 0
        fast = self._full_house(snap)
        if fast is None and s.backlog_alert and backlog > s.backlog_alert and not snap.starting:
            fast = self._spawn(snap, s.backlog_step, "backlog-alert", f"{backlog} connection(s) waiting > "
                               f"cheaper-busyness-backlog-alert {s.backlog_alert}")
        waited = self.nonzero.update(backlog > 0, snap.now, snap.busy)
        if fast is None and s.backlog_nonzero and waited >= s.backlog_nonzero and not snap.starting:
            self.nonzero.restart(snap.now, snap.busy)
            fast = self._spawn(snap, s.backlog_step, "backlog-nonzero", f"the queue not empty for "
                               f"{waited:.0f} s (cheaper-busyness-backlog-nonzero {s.backlog_nonzero})")
        if fast:
            self.emergency += fast.spawn
            return fast
        if snap.now - self.window_start >= s.overload:  # the spawn rule: one window at a time
            busyness = 100.0 * self.window_busy / self.window_capacity if self.window_capacity else 0.0
            window = snap.now - self.window_start
            self.window_start, self.window_busy, self.window_capacity = snap.now, 0.0, 0.0
            self.last_busyness = busyness
            if busyness > s.busyness_max:
                if self.last_cheap is not None and snap.now - self.last_cheap < self.multiplier * s.overload:
                    self.multiplier += s.penalty  # retired too early: wait longer next time
                return self._spawn(snap, s.step, "busyness", f"busyness {busyness:.0f}% over {window:.1f} s "
                                   f"> cheaper-busyness-max {s.busyness_max}%")
        return self._busyness_idle(snap)

    def _busyness_idle(self, snap: Snapshot) -> Action:
        """The retire rule, looked at with every snapshot: the last ``needed`` windows of
        ``cheaper-overload`` seconds, counted back from now, each below ``cheaper-busyness-min``,
        and no look among them busier than ``cheaper-busyness-max``. The windows end now rather
        than at fixed boundaries, so the idle clock starts when the workers became idle, not at
        the next boundary after that (up to one window later); the second condition keeps the
        oldest window from starting inside the end of a burst (a window 0.5 s busy of 3 is below
        25 %, but the workers were not idle then)."""
        s = self.s
        needed = s.backlog_multiplier if self.emergency else self.multiplier
        span = needed * s.overload
        while self.samples and self.samples[0][0] <= snap.now - span:
            self.samples.popleft()
        if snap.now - self.samples_since < span or s.overload <= 0:
            return NOTHING
        busy = [0.0] * needed
        capacity = [0.0] * needed
        for t, b, c in self.samples:
            k = min(needed - 1, int((snap.now - t) / s.overload))  # 0: the window that ends now
            busy[k] += b
            capacity[k] += c
        levels = [100.0 * b / c if c else 0.0 for b, c in zip(busy, capacity, strict=True)]
        if max(levels) >= s.busyness_min:
            return NOTHING
        self.samples.clear()
        self.samples_since = snap.now  # the next retirement needs a whole idle span again
        self.emergency = 0
        middle = (s.busyness_min + s.busyness_max) / 2
        keep = math.ceil(busy[0] / s.overload * 100 / middle) if middle else self.minimum
        return self._retire_to(snap, keep, "idle", f"busyness below cheaper-busyness-min {s.busyness_min}% "
                               f"in each of the last {needed} window(s) of {s.overload} s "
                               f"(at most {max(levels):.0f}%)")


def pick_retirees(count: int, workers: list[tuple[int, bool]]) -> list[int]:
    """Which workers to retire: ``workers`` are (worker id, busy); idle ones first, the highest
    ids first, so the low ids stay (a retiring busy worker still finishes its request)."""
    order = sorted(workers, key=lambda w: (w[1], -w[0]))
    return [wid for wid, _ in order[:max(0, count)]]


def busy_delta(previous: dict[int, int], current: dict[int, int]) -> tuple[float, dict[int, int]]:
    """Busy seconds since the previous call from per-worker counters (pid -> busy microseconds so
    far, in-flight request included). A counter that went backwards or a new pid counts from 0
    for a new pid and not at all for the backwards one; a worker that left drops out."""
    total = 0
    for pid, us in current.items():
        total += max(0, us - previous.get(pid, 0))
    return total / 1e6, dict(current)


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.0f} MB"


class Ledger:
    """Every spawn and cheap with its reason: counters by rule and the last events (stats, /metrics)."""

    KEEP = 32

    def __init__(self) -> None:
        self.spawned: dict[str, int] = {}  # rule -> workers spawned by it
        self.cheaped: dict[str, int] = {}  # rule -> workers retired by it
        self.events: list[dict[str, Any]] = []

    def record(self, action: Action, wall: float, before: int, after: int) -> None:
        book = self.spawned if action.spawn else self.cheaped
        book[action.rule] = book.get(action.rule, 0) + (action.spawn or action.retire)
        self.events.append({"time": int(wall), "event": "spawn" if action.spawn else "cheap",
                            "workers": action.spawn or action.retire, "from": before, "to": after,
                            "rule": action.rule, "reason": action.reason})
        del self.events[:-self.KEEP]
