"""The zerg pool policy with a fake clock: cap, rate limit, fair share, preemption, back-off
(reliability-security.md §2.4 rows 12, 14, 15)."""

from __future__ import annotations

from emperor.empire.broodlord import Broodlord


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def tick(self, s: float = 1.0) -> None:
        self.t += s


def test_lends_one_per_second_up_to_the_cap() -> None:
    clock = Clock()
    p = Broodlord(3, clock)
    assert p.sos("a", 37).lend and p.sos("a", 37).reason == "rate limit"
    clock.tick(0.5)
    assert not p.sos("a", 37).lend  # still inside the interval
    clock.tick(0.5)
    v = p.sos("a", 30)
    assert v.lend and v.slot == 2
    clock.tick()
    assert p.sos("a", 20).lend and p.alive == 3
    for _ in range(10):  # never above the cap, however long it shouts
        clock.tick()
        v = p.sos("a", 99)
        assert not v.lend and v.reason == "pool full" and v.preempt is None
    assert p.alive == 3 and p.lends == 3


def test_off_and_slots_return() -> None:
    clock = Clock()
    assert not Broodlord(0, clock).sos("a", 50).lend
    p = Broodlord(1, clock)
    assert p.sos("a", 50).lend
    clock.tick()
    assert not p.sos("a", 50).lend
    p.gone("a", "idle")
    assert p.alive == 0 and p.reclaims == 1
    clock.tick()
    assert p.sos("a", 50).lend
    p.gone("a", "lost")  # SIGKILLed zerg: the slot comes back, counted as lost
    assert p.alive == 0 and p.lost == 1
    snap = p.snapshot()
    assert snap["pool"] == 1 and snap["free"] == 1 and snap["lends"] == 2 and snap["reclaims"] == 1
    assert snap["vassals"]["a"]["zergs"] == 0 and snap["vassals"]["a"]["overloaded"] == 1


def test_two_overloaded_vassals_share_fairly() -> None:
    clock = Clock()
    p = Broodlord(4, clock)
    assert p.sos("a", 40).lend
    assert p.sos("b", 40).lend
    for _ in range(10):
        clock.tick()
        p.sos("a", 40)
        p.sos("b", 40)
        assert p.alive <= 4
    snap = p.snapshot()["vassals"]
    assert snap["a"]["zergs"] == 2 and snap["b"]["zergs"] == 2


def test_a_late_vassal_gets_its_share_by_preemption_without_flip_flop() -> None:
    clock = Clock()
    p = Broodlord(4, clock)
    for _ in range(4):
        assert p.sos("a", 40).lend
        clock.tick()
    assert p.alive == 4
    v = p.sos("b", 40)  # pool full, b has 0 < share 2, a has 4 > 2: take one back from a
    assert not v.lend and v.preempt == "a"
    assert p.sos("b", 40).preempt is None  # one preemption at a time
    p.gone("a", "preempted", preempted=True)
    clock.tick()
    p.sos("a", 40)  # a is at its share: the free slot is b's
    assert p.sos("b", 40).lend
    changes = 0
    for _ in range(20):
        clock.tick()
        for name in ("a", "b"):
            v = p.sos(name, 40)
            if v.preempt:
                changes += 1
                p.gone(v.preempt, "preempted", preempted=True)
        assert p.alive <= 4
    snap = p.snapshot()["vassals"]
    assert snap["a"]["zergs"] == 2 and snap["b"]["zergs"] == 2
    assert changes == 1  # a: 4 -> 3 -> 2 happened once more, then stable


def test_pool_of_one_keeps_its_order() -> None:
    """Row 15: two vassals over the threshold, a pool of 1: the first keeps it, no flip-flop."""
    clock = Clock()
    p = Broodlord(1, clock)
    assert p.sos("a", 40).lend
    for _ in range(30):
        clock.tick()
        for name in ("b", "a"):
            v = p.sos(name, 40)
            assert not v.lend and v.preempt is None
    assert p.snapshot()["vassals"]["a"]["zergs"] == 1


def test_share_grows_back_when_the_other_vassal_calms_down() -> None:
    clock = Clock()
    p = Broodlord(2, clock)
    assert p.sos("a", 40).lend and p.sos("b", 40).lend
    clock.tick()
    assert not p.sos("a", 40).lend
    p.gone("b", "idle")
    clock.tick(1)
    assert not p.sos("a", 40).lend  # b asked 2 s ago: still overloaded, its share is kept
    clock.tick(3)  # b has been quiet for longer than the window
    assert p.sos("a", 40).lend and p.alive == 2


def test_failing_zergs_back_off_and_readiness_resets_it() -> None:
    clock = Clock()
    p = Broodlord(4, clock)
    waits = []
    for _ in range(5):
        assert p.sos("a", 40).lend
        p.gone("a", "failed")
        t0 = clock.t
        while not (v := p.sos("a", 40)).lend:
            assert v.reason.startswith("backing off") or v.reason == "rate limit"
            clock.tick(0.5)
        waits.append(clock.t - t0)
        p.started("a")  # this one came up: the back-off is over
        p.gone("a", "idle")
        clock.tick()
    assert waits[0] >= 1.0
    assert p.alive == 0


def test_back_off_grows_while_zergs_keep_failing() -> None:
    clock = Clock()
    p = Broodlord(4, clock, max_backoff=8)
    holds = []
    for _ in range(6):
        while not p.sos("a", 40).lend:
            clock.tick(0.25)
        p.gone("a", "failed")
        holds.append(p.broods["a"].backoff)
    assert holds == [1, 2, 4, 8, 8, 8]


def test_forget_stops_competing_and_frees_on_exit() -> None:
    clock = Clock()
    p = Broodlord(2, clock)
    assert p.sos("a", 40).lend
    p.forget("a")
    assert p.overloaded(clock()) == [] and p.alive == 1
    p.gone("a", "stopped")
    assert p.alive == 0 and "a" not in p.broods


def test_a_deep_backlog_gets_several_zergs_at_once() -> None:
    """Backlog 127 over a threshold of 10 is 12x: three zergs on the first SOS (one per 4x),
    then one a second; never above the free slots."""
    clock = Clock()
    p = Broodlord(4, clock)
    v = p.sos("a", 127, threshold=10)
    assert v.lend and (v.slot, v.count) == (1, 3) and p.alive == 3 and p.lends == 3
    assert not p.sos("a", 127, threshold=10).lend  # the rate limit is per answer, not per zerg
    clock.tick()
    v = p.sos("a", 127, threshold=10)
    assert (v.slot, v.count) == (4, 1) and p.alive == 4  # only one slot was left
    clock.tick()
    assert not p.sos("a", 500, threshold=10).lend


def test_a_shallow_backlog_gets_one_zerg() -> None:
    clock = Clock()
    p = Broodlord(4, clock)
    assert p.sos("a", 25, threshold=10).count == 1  # 2.5x the threshold
    clock.tick()
    assert p.sos("a", None, threshold=10).count == 1  # vassal-sos ("busy"): no figure


def test_a_burst_stays_within_the_fair_share() -> None:
    clock = Clock()
    p = Broodlord(4, clock)
    assert p.sos("b", 15, threshold=10).count == 1  # b is overloaded too
    v = p.sos("a", 400, threshold=10)  # 40x would be 10 zergs
    assert v.count == 2 and p.alive == 3  # a's share of 4 between two vassals is 2
    assert p.broods["b"].alive == 1
