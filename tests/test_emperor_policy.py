"""The emperor's pure parts: throttle, vassal state machine, reconcile plan.

The clock is a plain number passed in; no process, no socket, no sleep.
"""

from __future__ import annotations

import logging

import pytest

from emperor.channel import Exit
from emperor.empire.reconcile import Do, plan
from emperor.empire.scan import Found
from emperor.empire.throttle import Throttle
from emperor.empire.vassals import After, State, Vassal, describe_exit

# ------------------------------------------------------------------ throttle


def test_unloyal_deaths_double_the_delay_up_to_the_cap() -> None:
    t = Throttle(step=1.0, cap=10.0)
    delays = [t.death(loyal=False, uptime=0.1) for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert t.attempts == 6 and t.throttled


def test_a_loyal_vassal_that_lived_is_respawned_at_once_and_forgiven() -> None:
    t = Throttle(step=1.0, cap=10.0)
    t.death(loyal=False, uptime=0.1)
    t.death(loyal=False, uptime=0.1)
    assert t.death(loyal=True, uptime=5.0) == 0.0
    assert t.attempts == 0 and not t.throttled


def test_loyal_but_dying_within_one_step_still_backs_off() -> None:
    """A vassal that crashes right after its first request must not spin."""
    t = Throttle(step=1.0, cap=10.0)
    assert t.death(loyal=True, uptime=0.2) == 1.0
    assert t.death(loyal=True, uptime=0.2) == 2.0


def test_reset() -> None:
    t = Throttle(step=0.5, cap=3.0)
    t.death(False, 0)
    t.reset()
    assert t.death(False, 0) == 0.5


# ------------------------------------------------------------------ state machine


def make(name: str = "app.ini") -> Vassal:
    return Vassal(name, f"/srv/enabled/{name}", throttle=Throttle(1.0, 8.0))


def test_normal_life_logs_every_transition(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "emperor")
    v = make()
    v.spawned(101, now=0.0, stamp=(1,))
    assert v.state == State.STARTING
    assert v.ready(0.4) is False and v.state == State.READY
    v.became_loyal(1.0)
    assert v.state == State.LOYAL and v.loyal
    assert v.request_reload((2,)) is True and v.state == State.RELOADING and v.stamp == (2,)
    assert v.ready(2.0) is False and v.state == State.READY
    assert v.stop(deadline=40.0) is True and v.state == State.STOPPING
    assert v.exited(0, 3.0) == After.FORGET
    words = [r.getMessage().split(":")[0] for r in caplog.records]
    assert words == ["spawned", "ready", "loyal", "reloading", "reloaded", "stopping", "stopped"]
    assert "'app.ini' (pid 101)" in caplog.records[0].getMessage()


def test_changes_during_a_reload_coalesce_into_one_more_reload() -> None:
    v = make()
    v.spawned(5, 0.0, (1,))
    assert v.request_reload((2,)) is False  # still starting: remembered
    assert v.ready(0.5) is True and v.state == State.RELOADING  # sent once ready
    for i in range(1000):
        assert v.request_reload((3 + i,)) is False
    assert v.reloads == 1
    assert v.ready(1.0) is True  # one more, carrying the last stamp
    assert v.stamp == (1002,) and v.reloads == 2
    assert v.ready(1.5) is False and v.state == State.READY


def test_loyal_while_starting_counts_as_ready() -> None:
    v = make()
    v.spawned(5, 0.0, (1,))
    assert v.became_loyal(0.2) is False
    assert v.state == State.LOYAL and v.ready_at == 0.2


def test_config_error_on_reload_keeps_the_vassal_running(caplog: pytest.LogCaptureFixture) -> None:
    v = make()
    v.spawned(5, 0.0, (1,))
    v.ready(0.1)
    assert v.request_reload((2,))
    assert v.config_error("app.ini:3: socket: needs a value") is False
    assert v.state == State.READY and "needs a value" in v.last_error
    assert "keeps its previous configuration" in caplog.text


def test_crash_before_loyal_is_throttled_with_growing_delay() -> None:
    v = make()
    now = 0.0
    delays = []
    for _ in range(5):
        v.spawned(10, now, (1,))
        assert v.exited(Exit.APP_LOAD, now + 0.2) == After.RESPAWN
        assert v.state == State.THROTTLED
        delays.append(round(v.respawn_at - (now + 0.2), 6))
        now = v.respawn_at
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert v.respawns == 4


def test_loyal_vassal_killed_is_respawned_now(caplog: pytest.LogCaptureFixture) -> None:
    v = make()
    v.spawned(10, 0.0, (1,))
    v.ready(0.3)
    v.became_loyal(0.5)
    assert v.exited(-9, 30.0) == After.RESPAWN
    assert v.respawn_at == 30.0
    assert "possible OOM" in caplog.text and "died:" in caplog.text


def test_invalid_ini_at_boot_waits_for_the_file_to_change() -> None:
    v = make()
    v.spawned(10, 0.0, (1,))
    assert v.exited(Exit.CONFIG, 0.2) == After.WAIT
    assert v.state == State.FAILED
    v.spawned(11, 5.0, (2,))  # the emperor retries once the stamp changed
    assert v.state == State.STARTING and v.respawns == 1


def test_stop_wins_over_crash_policy() -> None:
    """An operator's stop is never undone by the respawn logic (circus #965)."""
    v = make()
    v.spawned(10, 0.0, (1,))
    v.stop(30.0)
    assert v.exited(1, 0.5) == After.FORGET


def test_shutdown_forgets_whatever_the_exit() -> None:
    v = make()
    v.spawned(10, 0.0, (1,))
    v.ready(0.1)
    assert v.exited(-15, 1.0, shutting_down=True) == After.FORGET


def test_invalid_transition_is_a_bug() -> None:
    v = make()
    v.spawned(1, 0, (1,))
    v.stop(5)
    with pytest.raises(AssertionError):
        v.spawned(2, 1, (1,))


def test_messages_in_the_wrong_state_are_ignored() -> None:
    v = make()
    v.spawned(1, 0, (1,))
    v.stop(5)
    assert v.ready(0.5) is False and v.state == State.STOPPING
    assert v.request_reload((9,)) is False and v.state == State.STOPPING


@pytest.mark.parametrize(("code", "text"), [
    (0, "exited with status 0"), (78, "invalid configuration"), (22, "could not be loaded"),
    (75, "socket could not be bound"), (-9, "SIGKILL (possible OOM kill)"), (-15, "killed by SIGTERM"),
])
def test_describe_exit(code: int, text: str) -> None:
    assert text in describe_exit(code)


def test_snapshot_reports_throttle_and_error() -> None:
    v = make()
    v.spawned(3, 0.0, (1,))
    v.exited(1, 0.1)
    snap = v.snapshot(0.6)
    assert snap["state"] == "throttled" and snap["throttle_level"] == 1000
    assert snap["next_attempt_in"] == pytest.approx(0.5)
    assert "status 1" in snap["last_error"] and snap["pid"] == 0


# ------------------------------------------------------------------ reconcile


def found(name: str, stamp: tuple[int, ...] = (1,), uid: int | None = None) -> Found:
    return Found(name, f"/srv/enabled/{name}", stamp, uid, uid)


def running(name: str, stamp: tuple[int, ...] = (1,), state: State = State.READY) -> Vassal:
    v = make(name)
    v.spawned(100, 0.0, stamp)
    if state != State.STARTING:
        v.ready(0.1)
    if state in (State.STOPPING, State.THROTTLED, State.FAILED):
        v.stop(9) if state == State.STOPPING else v.exited(78 if state == State.FAILED else 1, 0.2)
    assert v.state == state
    return v


def acts(f: dict[str, Found], v: dict[str, Vassal], now: float = 10.0) -> list[tuple[Do, str]]:
    return sorted(((a.do, a.name) for a in plan(f, v, now, settle=0.05)), key=lambda t: (t[0].value, t[1]))


def test_new_changed_unchanged() -> None:
    vs = {"a.ini": running("a.ini"), "b.ini": running("b.ini")}
    fs = {"a.ini": found("a.ini"), "b.ini": found("b.ini", (2,)), "c.ini": found("c.ini")}
    assert acts(fs, vs) == [(Do.RELOAD, "b.ini"), (Do.SPAWN, "c.ini")]


def test_gone_is_confirmed_by_a_second_look() -> None:
    vs = {"a.ini": running("a.ini")}
    assert acts({}, vs) == [(Do.MISSING, "a.ini")]
    vs["a.ini"].missing_since = 10.0
    assert acts({}, vs, now=10.01) == [(Do.MISSING, "a.ini")]
    assert acts({}, vs, now=10.06) == [(Do.STOP, "a.ini")]


def test_dead_vassals_retry_on_change_and_are_forgotten_when_gone() -> None:
    vs = {"t.ini": running("t.ini", state=State.THROTTLED), "f.ini": running("f.ini", state=State.FAILED)}
    assert acts({"t.ini": found("t.ini"), "f.ini": found("f.ini")}, vs) == []
    assert acts({"t.ini": found("t.ini", (2,)), "f.ini": found("f.ini", (2,))}, vs) == [
        (Do.RETRY, "f.ini"), (Do.RETRY, "t.ini")]
    assert acts({}, vs) == [(Do.FORGET, "f.ini"), (Do.FORGET, "t.ini")]


def test_a_stopping_vassal_is_left_alone() -> None:
    vs = {"a.ini": running("a.ini", state=State.STOPPING)}
    assert acts({"a.ini": found("a.ini", (5,))}, vs) == []
    assert acts({}, vs) == []


def test_tyrant_owner_change_restarts() -> None:
    v = running("a.ini")
    v.uid = v.gid = 1000
    assert acts({"a.ini": found("a.ini", uid=1001)}, {"a.ini": v}) == [(Do.RESTART, "a.ini")]
    assert acts({"a.ini": found("a.ini", uid=1000)}, {"a.ini": v}) == []
