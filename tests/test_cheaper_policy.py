"""The cheaper policy (emperor/vassal/cheaper.py) with an injected clock: pure logic, no processes.

Each algorithm's grow and shrink rules, the full-house fast path, retiring all extra workers at
once, the RSS limits, the ceiling moved by ``emperor ctl scale``, and the option checks.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from emperor import config
from emperor.options import Scope
from emperor.vassal.cheaper import Action, Ledger, Policy, Settings, Snapshot, busy_delta, pick_retirees


class Clock:
    """Drives a policy: ``step`` advances the fake clock and returns the policy's action."""

    def __init__(self, policy: Policy, t: float = 100.0) -> None:
        self.p, self.t = policy, t

    def step(self, dt: float, workers: int, busy: int, **kw: Any) -> Action:
        self.t += dt
        return self.p.decide(Snapshot(self.t, workers, busy, **kw))

    def hold(self, seconds: float, workers: int, busy: int, every: float = 0.25, **kw: Any) -> list[Action]:
        """The same snapshot every ``every`` seconds for ``seconds``: the actions taken (non-empty)."""
        out = []
        for _ in range(round(seconds / every)):
            a = self.step(every, workers, busy, **kw)
            if a:
                out.append(a)
        return out


def policy(**kw: Any) -> Clock:
    s = Settings(**{"minimum": 1, "maximum": 8, "initial": 1, **kw})
    return Clock(Policy(s, 100.0))


# ---- spare ---------------------------------------------------------------------------------
def test_spare_full_house_with_a_queue_spawns_at_once() -> None:
    c = policy()
    a = c.step(0.05, workers=1, busy=1, backlog=3)
    assert (a.spawn, a.rule) == (1, "full-house")
    assert "3 connection(s) waiting" in a.reason


def test_spare_waits_for_the_starting_worker_before_spawning_again() -> None:
    c = policy(step=2)
    assert c.step(0.05, 1, 1, backlog=5).spawn == 2
    assert not c.step(0.05, 3, 1, starting=2, backlog=5)  # two not accepting yet: no overshoot
    assert c.step(0.05, 3, 3, backlog=5).spawn == 2


def test_spare_full_house_without_a_queue_waits_cheaper_overload_seconds() -> None:
    c = policy(overload=3)
    assert c.hold(3.0, workers=2, busy=2, backlog=0) == []  # the clock starts at the first look
    a = c.step(0.25, 2, 2, backlog=0)
    assert (a.spawn, a.rule) == (1, "overload")
    assert "cheaper-overload 3" in a.reason


def test_spare_free_worker_resets_the_overload_timer() -> None:
    c = policy(overload=3)
    c.hold(2.5, 2, 2)
    c.step(0.25, 2, 1)  # one free worker: not overloaded
    assert c.hold(2.75, 2, 2) == []


def test_spare_retires_all_extra_workers_together_after_the_idle_threshold() -> None:
    c = policy(overload=3)
    assert c.hold(3.0, workers=8, busy=0) == []
    a = c.step(0.25, 8, 0)
    assert (a.retire, a.rule) == (7, "idle")  # 8 -> 1 in one step (uWSGI: one per period)


def test_spare_keeps_the_peak_of_the_idle_window_plus_one() -> None:
    c = policy(overload=3)
    c.step(0.25, 8, 3)
    acts = c.hold(3.0, 8, 1)
    assert [(a.retire, a.rule) for a in acts] == [(4, "idle")]  # peak 3 busy + 1 free


def test_spare_retires_the_rest_as_soon_as_the_burst_tail_leaves_the_window() -> None:
    """The window slides: workers busy at the end of a burst are retired once they too have been
    idle for the threshold, not one whole threshold later."""
    c, workers, gone = policy(overload=3), 8, []
    c.step(0.25, workers, 6)  # the burst's last moment: 6 busy, 2 idle (t = 100.25)
    for _ in range(20):
        a = c.step(0.25, workers, 0)
        workers -= a.retire
        if a.retire:
            gone.append((round(c.t - 100.25, 2), a.retire))
    assert gone == [(3.0, 1), (3.25, 6)]  # 2 idle for 3 s keep 7; then the tail is 3 s old too
    assert workers == 1


def test_spare_never_goes_below_cheaper() -> None:
    c = policy(minimum=3, overload=1)
    acts = c.hold(1.25, 8, 0)
    assert [a.retire for a in acts] == [5]
    assert c.hold(5, 3, 0) == []


def test_spare_one_free_worker_is_stable() -> None:
    c = policy(overload=1)
    assert c.hold(10, workers=2, busy=1) == []


def test_spawn_is_capped_by_the_ceiling_and_by_cheaper_step() -> None:
    c = policy(step=4)
    assert c.step(0.05, 6, 6, backlog=9).spawn == 2
    assert not c.step(0.05, 8, 8, backlog=9)


# ---- spare2 --------------------------------------------------------------------------------
def test_spare2_spawns_up_to_cheaper_idle_workers() -> None:
    c = policy(algo="spare2", minimum=3, step=2)
    a = c.step(0.25, workers=3, busy=3)
    assert (a.spawn, a.rule) == (2, "spare2")  # 0 idle, wants 3, at most cheaper-step 2
    assert c.step(0.25, 5, 3, starting=2).spawn == 1  # starting ones count as idle soon


def test_spare2_retires_after_cheaper_idle_seconds() -> None:
    c = policy(algo="spare2", minimum=2, idle=10)
    assert c.hold(10.0, workers=8, busy=1) == []
    a = c.step(0.25, 8, 1)
    assert (a.retire, a.rule) == (5, "idle")  # keep 1 busy + 2 idle
    assert "cheaper-idle 10" in a.reason


# ---- backlog -------------------------------------------------------------------------------
def test_backlog_spawns_while_the_queue_is_above_cheaper_overload() -> None:
    c = policy(algo="backlog", overload=3)
    assert not c.step(0.25, 4, 2, backlog=3)
    a = c.step(0.25, 4, 2, backlog=4)
    assert (a.spawn, a.rule) == (1, "backlog")
    assert not c.step(0.25, 5, 2, starting=1, backlog=9)


def test_backlog_retires_after_a_second_with_a_short_queue() -> None:
    c = policy(algo="backlog", overload=3)
    c.step(0.25, 8, 4, backlog=0)
    acts = c.hold(1.0, 8, 2, backlog=0)
    assert [(a.retire, a.rule) for a in acts] == [(4, "idle")]  # keeps the window's peak (4)


def test_backlog_unreadable_falls_back_to_spare() -> None:
    c = policy(algo="backlog", overload=1)
    acts = c.hold(1.25, 2, 2, backlog=None)
    assert [a.rule for a in acts] == ["overload"]


# ---- busyness (the injected clock matters most here) -----------------------------------------
def test_busyness_spawns_when_the_window_average_is_above_max() -> None:
    c = policy(algo="busyness", overload=10, busyness_max=50, backlog_alert=0, backlog_nonzero=0)
    # 2 workers, 1.5 worker-seconds busy per second = 75 %
    assert c.hold(9.75, workers=2, busy=1, every=0.25, busy_time=0.375) == []
    a = c.step(0.25, 2, 1, busy_time=0.375)
    assert (a.spawn, a.rule) == (1, "busyness")
    assert "busyness 75%" in a.reason


def test_busyness_between_min_and_max_does_nothing() -> None:
    c = policy(algo="busyness", overload=2, multiplier=1)
    assert c.hold(20, workers=4, busy=1, busy_time=0.25 * 1.5) == []  # 37.5 %


def test_busyness_retires_after_multiplier_idle_windows() -> None:
    c = policy(algo="busyness", overload=2, multiplier=3, busyness_min=25, busyness_max=50)
    acts = c.hold(5.75, workers=8, busy=0, busy_time=0.0)
    assert acts == []  # two idle windows
    a = c.step(0.25, 8, 0)
    assert (a.retire, a.rule) == (7, "idle")
    assert "3 window(s) of 2 s" in a.reason


@pytest.mark.parametrize("burst", [4.0, 5.5, 6.0])
def test_busyness_idle_clock_starts_when_the_workers_became_idle(burst: float) -> None:
    # 8 workers all busy for `burst` seconds (the end lands anywhere in a 3 s window), then idle:
    # all extra workers retire multiplier x overload = 9 s after the end of the burst, not at the
    # first window boundary 9 s after it (up to 3 s later before the fix: 11.2 s in the bench)
    c = policy(algo="busyness", overload=3, multiplier=3, busyness_min=25, busyness_max=50)
    assert c.hold(burst, workers=8, busy=8, busy_time=2.0) == []  # full: no room to spawn
    end = c.t
    acts: list[tuple[float, Action]] = []
    while c.t < end + 15 and not acts:
        if (a := c.step(0.25, 8, 0)):
            acts.append((c.t - end, a))
    assert [(a.retire, a.rule) for _, a in acts] == [(7, "idle")]
    assert 9.0 <= acts[0][0] <= 9.25


def test_busyness_a_busy_moment_inside_the_idle_span_restarts_the_clock() -> None:
    c = policy(algo="busyness", overload=1, multiplier=3, busyness_min=25, busyness_max=50)
    assert c.hold(2.5, workers=4, busy=0) == []
    assert c.step(0.25, 4, 4, busy_time=1.0) == Action()  # one window at 100 % (the window average)
    assert c.hold(2.75, workers=4, busy=0) == []  # that window is still in the last three
    a = c.step(0.25, 4, 0)
    assert (a.retire, a.rule) == (3, "idle")


def test_busyness_keeps_enough_workers_for_the_load() -> None:
    c = policy(algo="busyness", overload=1, multiplier=1, busyness_min=25, busyness_max=50)
    acts = c.hold(1.0, workers=8, busy=1, busy_time=0.25)  # 1 worker-second per second: 12.5 %
    assert [a.retire for a in acts] == [5]  # keeps ceil(1 / 37.5 %) = 3


def test_busyness_penalty_when_a_worker_comes_back_soon() -> None:
    c = policy(algo="busyness", overload=1, multiplier=2, penalty=3, busyness_max=50)
    acts = c.hold(2.0, workers=4, busy=0)
    assert [a.rule for a in acts] == ["idle"]
    a = c.step(1.0, 1, 1, busy_time=1.0)  # 100 % one window after the cheap
    assert a.rule == "busyness"
    assert c.p.multiplier == 5


def test_busyness_backlog_alert_spawns_emergency_workers_at_once() -> None:
    c = policy(algo="busyness", overload=30, backlog_alert=5, backlog_step=2)
    a = c.step(0.25, 4, 3, backlog=6)
    assert (a.spawn, a.rule) == (2, "backlog-alert")
    assert c.p.emergency == 2


def test_busyness_emergency_workers_use_the_backlog_multiplier() -> None:
    c = policy(algo="busyness", overload=1, multiplier=10, backlog_multiplier=2, backlog_alert=5)
    assert c.step(0.25, 2, 1, backlog=6).spawn == 1
    acts = c.hold(2.0, workers=3, busy=0)
    assert [(a.rule, a.retire) for a in acts] == [("idle", 2)]


def test_busyness_backlog_nonzero() -> None:
    c = policy(algo="busyness", overload=100, backlog_alert=0, backlog_nonzero=5)
    assert c.hold(5.0, workers=2, busy=1, backlog=1) == []
    a = c.step(0.25, 2, 1, backlog=1)
    assert (a.spawn, a.rule) == (1, "backlog-nonzero")


def test_busyness_full_house_with_a_queue_is_an_emergency() -> None:
    c = policy(algo="busyness", overload=30)
    a = c.step(0.05, 1, 1, backlog=1)
    assert (a.spawn, a.rule) == (1, "full-house")


# ---- RSS limits and the ceiling ------------------------------------------------------------
def test_rss_soft_limit_stops_growth() -> None:
    c = policy(rss_soft=100 << 20)
    assert not c.step(0.05, 2, 2, backlog=5, rss=100 << 20)
    assert c.step(0.05, 2, 2, backlog=5, rss=99 << 20).spawn == 1


def test_rss_hard_limit_retires_one_a_second() -> None:
    c = policy(rss_hard=100 << 20)
    a = c.step(0.05, 4, 4, rss=200 << 20)
    assert (a.retire, a.rule) == (1, "rss-hard")
    assert not c.step(0.5, 3, 3, rss=200 << 20).retire
    assert c.step(0.5, 3, 3, rss=200 << 20).retire == 1
    assert not c.step(1.0, 1, 1, rss=200 << 20).retire  # never below cheaper


def test_the_ceiling_moves_with_scale() -> None:
    c = policy()
    c.p.maximum = 3
    assert not c.step(0.05, 3, 3, backlog=4)
    c.p.maximum = 0  # a ceiling below cheaper lowers the minimum with it
    assert c.p.minimum == 0


# ---- helpers -------------------------------------------------------------------------------
def test_pick_retirees_takes_idle_then_highest() -> None:
    assert pick_retirees(3, [(1, False), (2, True), (3, False), (4, False), (5, True)]) == [4, 3, 1]
    assert pick_retirees(0, [(1, False)]) == []


def test_busy_delta_counts_new_workers_and_drops_gone_ones() -> None:
    secs, prev = busy_delta({}, {10: 500_000, 11: 0})
    assert secs == 0.5
    secs, prev = busy_delta(prev, {10: 700_000, 12: 250_000})  # 11 left, 12 is new
    assert secs == pytest.approx(0.45)
    secs, _ = busy_delta(prev, {10: 600_000, 12: 250_000})  # a counter going back counts 0
    assert secs == 0


def test_ledger_keeps_counters_and_the_last_events() -> None:
    book = Ledger()
    for i in range(40):
        book.record(Action(spawn=1, rule="full-house", reason="x"), 1000 + i, i, i + 1)
    book.record(Action(retire=7, rule="idle", reason="y"), 2000, 8, 1)
    assert book.spawned == {"full-house": 40} and book.cheaped == {"idle": 7}
    assert len(book.events) == Ledger.KEEP
    assert book.events[-1] == {"time": 2000, "event": "cheap", "workers": 7, "from": 8, "to": 1,
                               "rule": "idle", "reason": "y"}


# ---- options -------------------------------------------------------------------------------
def build(**values: Any) -> Any:
    pairs = [("socket", "/tmp/x.sock"), *((k.replace("_", "-"), str(v)) for k, v in values.items())]
    return config.from_args(pairs, Scope.VASSAL)


def test_defaults_are_uwsgis() -> None:
    s, warnings = Settings.from_config(build(processes=8, cheaper=2))
    assert s is not None and warnings == []
    assert (s.algo, s.minimum, s.maximum, s.initial) == ("spare", 2, 8, 2)
    assert (s.step, s.overload, s.idle) == (1, 3, 10)
    assert (s.busyness_max, s.busyness_min, s.multiplier, s.penalty) == (50, 25, 10, 1)
    assert (s.backlog_alert, s.backlog_step, s.backlog_multiplier, s.backlog_nonzero) == (33, 1, 3, 60)


def test_cheaper_off_by_default_and_with_zero() -> None:
    assert Settings.from_config(build(processes=4)) == (None, [])
    assert Settings.from_config(build(processes=4, cheaper=0)) == (None, [])


@pytest.mark.parametrize(("values", "expect", "warning"), [
    ({"processes": 4, "cheaper": 4}, 3, "cheaper = 4 is not below processes = 4: using 3"),
    ({"processes": 1, "cheaper": 1}, None, "needs processes above it"),
    ({"processes": 4, "cheaper": 1, "cheaper_initial": 9}, 1, "cheaper-initial = 9 is outside"),
])
def test_bad_combinations_are_adjusted_with_a_warning(values: dict[str, int], expect: int | None,
                                                      warning: str) -> None:
    s, warnings = Settings.from_config(build(**values))
    assert (s.minimum if s else None) == expect
    assert any(warning in w for w in warnings), warnings


def test_unknown_algorithm_is_an_error_naming_the_key() -> None:
    with pytest.raises(config.ConfigError, match=r"cheaper-algo.*'manual' is not one of spare, spare2, "
                       r"backlog, busyness"):
        build(processes=4, cheaper=1, cheaper_algo="manual")


def test_settings_read_every_option() -> None:
    cfg = build(processes=9, cheaper=2, cheaper_initial=4, cheaper_step=3, cheaper_overload=7,
                cheaper_algo="busyness", cheaper_idle=5, cheaper_busyness_max=70, cheaper_busyness_min=20,
                cheaper_busyness_multiplier=4, cheaper_busyness_penalty=2, cheaper_busyness_backlog_alert=8,
                cheaper_busyness_backlog_step=2, cheaper_busyness_backlog_multiplier=5,
                cheaper_busyness_backlog_nonzero=6, cheaper_rss_limit_soft=1000, cheaper_rss_limit_hard=2000)
    s, _ = Settings.from_config(cfg)
    assert s == Settings("busyness", 2, 9, 4, 3, 7, 5, 70, 20, 4, 2, 8, 2, 5, 6, 1000, 2000)


def test_from_config_takes_any_object_with_the_attributes() -> None:
    cfg = SimpleNamespace(cheaper=1, processes=2, cheaper_initial=0, cheaper_algo="spare", cheaper_step=1,
                          cheaper_overload=3, cheaper_idle=10, cheaper_busyness_max=50,
                          cheaper_busyness_min=25, cheaper_busyness_multiplier=10, cheaper_busyness_penalty=1,
                          cheaper_busyness_backlog_alert=33, cheaper_busyness_backlog_step=1,
                          cheaper_busyness_backlog_multiplier=3, cheaper_busyness_backlog_nonzero=60,
                          cheaper_rss_limit_soft=0, cheaper_rss_limit_hard=0)
    assert Settings.from_config(cfg)[0] == Settings(maximum=2)


def test_emperor_check_reports_the_adjustments_at_the_cheaper_line(tmp_path: Any) -> None:
    from emperor import check

    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nsocket = /tmp/x.sock\nmodule = app\nprocesses = 4\ncheaper = 4\n")
    problems = check.check_pairs([("ini", str(ini))], label=str(ini))
    found = [p for p in problems if p.key == "cheaper"]
    assert len(found) == 1 and not found[0].error
    assert (found[0].file, found[0].line) == (str(ini), 5)
    assert "cheaper = 4 is not below processes = 4: using 3" in found[0].message
