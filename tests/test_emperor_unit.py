"""The emperor's vassal lifecycle under a fake clock and a fake spawner: no process is started.

The emperor takes its spawner as an argument (``Emperor(settings, clock, spawner)``). Here each
"child" is a channel socketpair (the test holds the vassal's end and speaks the real channel
protocol on it) and a pipe standing in for the pidfd (the test writes a byte when the child
"exits"). The loop runs one real iteration at a time (``_iterate(max_wait=0)``) over the real
selector, and time only moves when the test moves the clock, so throttle delays, the reload
mercy and the heartbeat bound are checked to the second without waiting for them.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from emperor import channel
from emperor.channel import Exit, Msg
from emperor.empire import scan
from emperor.empire.emperor import Emperor
from emperor.empire.settings import Settings
from emperor.empire.vassals import State
from emperor.options import Scope, lookup


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeProc:
    """What the emperor holds of a child (``spawn.Process``'s surface), with no process behind it."""

    def __init__(self, name: str, pid: int, argv: list[str], content: bytes | None) -> None:
        self.name, self.pid, self.argv, self.content = name, pid, argv, content
        self.channel, self.peer = channel.pair()
        self.channel.setblocking(False)
        self.pidfd, self._exit_w = os.pipe()
        self.sent: list[tuple[Msg, Any]] = []
        self.returncode: int | None = None
        self.killed = False

    # ---- the emperor's side
    def send(self, msg: Msg, payload: str = "") -> bool:
        self.sent.append((msg, payload))
        return True

    def send_ini(self, msg: Msg, content: bytes) -> bool:
        self.sent.append((msg, content))
        return True

    def kill_group(self, sig: int = 9) -> None:
        self.killed = True

    def reap(self) -> int | None:
        return self.returncode

    def close(self) -> None:
        for fd in (self.pidfd, self._exit_w):
            if fd >= 0:
                os.close(fd)
        self.pidfd = self._exit_w = -1
        self.channel.close()
        self.peer.close()

    # ---- the test's side: what the child does
    def says(self, msg: Msg, payload: str = "") -> None:
        assert channel.send(self.peer, msg, payload)

    def exits(self, returncode: int) -> None:
        self.returncode = returncode
        os.write(self._exit_w, b"x")

    def got(self) -> list[Msg]:
        return [m for m, _ in self.sent]


class FakeSpawner:
    def __init__(self) -> None:
        self.started: list[FakeProc] = []
        self.fail_with: OSError | None = None

    def __call__(self, name: str, path: str, argv: list[str], uid: int | None, gid: int | None,
                 content: bytes | None = None, on_demand: tuple[str, int] | None = None) -> FakeProc:
        if self.fail_with is not None:
            raise self.fail_with
        proc = FakeProc(name, 40000 + len(self.started), argv, content)
        self.started.append(proc)
        return proc

    def of(self, name: str) -> list[FakeProc]:
        return [p for p in self.started if p.name == name]


class Rig:
    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.dir = tmp_path / "vassals"
        self.dir.mkdir()
        self.clock = Clock()
        self.spawner = FakeSpawner()
        s = Settings(sources=[scan.Source.parse(str(self.dir), str(tmp_path))], mercy=10.0, **settings)
        self.emp = Emperor(s, clock=self.clock, spawner=self.spawner)  # type: ignore[arg-type]
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.emp.zergs.publish = lambda vassal, event, **data: self.events.append((vassal, event, data))

    def file(self, name: str, text: str = "[uwsgi]\nmodule = app\n") -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def step(self, advance: float = 0.0) -> None:
        """Move the clock, then run one iteration of the real loop (never blocking)."""
        self.clock.t += advance
        self.emp._iterate(max_wait=0)

    def proc(self, name: str = "app.ini") -> FakeProc:
        return self.spawner.of(name)[-1]

    def state(self, name: str = "app.ini") -> State | None:
        v = self.emp.vassals.get(name)
        return v.state if v else None

    def close(self) -> None:
        for name in list(self.emp.children):
            self.emp.children.close(name)
        self.emp.sel.close()
        self.emp.inbox.close()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    r = Rig(tmp_path)
    yield r
    r.close()


def test_spawn_ready_reload_stop(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "emperor")
    path = rig.file("app.ini")
    rig.step()  # the first scan is immediate
    proc = rig.proc()
    assert rig.state() == State.STARTING
    assert proc.content == path.read_bytes()  # the checked bytes, handed over (no re-read by path)
    assert "--ini" in proc.argv and str(path) in proc.argv
    proc.says(Msg.READY)
    rig.step(0.5)
    assert rig.state() == State.READY
    assert f"ready: 'app.ini' (pid {proc.pid}) in 0.50 s" in caplog.messages

    assert rig.emp.reload("app.ini")  # emperor ctl reload
    assert rig.state() == State.RELOADING
    assert proc.sent[-1] == (Msg.RELOAD, path.read_bytes())
    proc.says(Msg.READY)
    rig.step(1)
    assert rig.state() == State.READY and rig.emp.vassals["app.ini"].reloads == 1

    path.write_text("[uwsgi]\nmodule = app\nprocesses = 2\n")  # a change, seen by the periodic rescan
    rig.step(rig.emp.s.freq)
    assert rig.state() == State.RELOADING
    assert proc.sent[-1] == (Msg.RELOAD, path.read_bytes())
    proc.says(Msg.READY)
    rig.step()

    rig.emp.shutdown("test")
    assert rig.state() == State.STOPPING and proc.got()[-1] == Msg.STOP
    rig.step(rig.emp.s.mercy - 0.5)
    assert not proc.killed  # still within reload-mercy
    proc.exits(0)
    rig.step()
    assert rig.emp.vassals == {} and len(rig.emp.children) == 0 and rig.emp._finished()
    assert f"stopped: 'app.ini' (pid {proc.pid}) exited with status 0" in caplog.messages
    assert len(rig.spawner.started) == 1


def test_a_stop_past_the_mercy_is_a_sigkill(rig: Rig) -> None:
    rig.file("app.ini")
    rig.step()
    proc = rig.proc()
    proc.says(Msg.READY)
    rig.step()
    rig.emp.shutdown("test")
    assert rig.emp._next_deadline() == rig.emp.vassals["app.ini"].stop_deadline == rig.clock.t + 10.0
    rig.step(9.9)
    assert not proc.killed
    rig.step(0.1)
    assert proc.killed and rig.emp.vassals["app.ini"].killed
    proc.exits(-9)
    rig.step()
    assert rig.emp._finished()


def test_crashes_before_loyalty_are_throttled_and_the_timer_respawns(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "emperor")
    rig.file("app.ini")
    rig.step()
    rig.proc().exits(1)
    rig.step(0.2)
    v = rig.emp.vassals["app.ini"]
    assert v.state == State.THROTTLED and v.respawn_at == rig.clock.t + 1.0
    assert rig.emp._next_deadline() == v.respawn_at  # the record's own deadline wakes the loop
    rig.step(0.9)
    assert len(rig.spawner.started) == 1  # not yet
    rig.step(0.1)
    assert len(rig.spawner.started) == 2 and v.state == State.STARTING and v.respawns == 1
    rig.proc().exits(1)
    rig.step()
    assert v.state == State.THROTTLED and v.respawn_at == rig.clock.t + 2.0 and v.throttle.attempts == 2
    rig.step(1.9)
    assert len(rig.spawner.started) == 2
    rig.step(0.1)
    assert len(rig.spawner.started) == 3

    # a loyal vassal that lived is respawned at once: THROTTLED for one iteration, through the
    # state machine, with the log line and event it always had
    proc = rig.proc()
    proc.says(Msg.LOYAL)
    rig.step(5)
    assert v.state == State.LOYAL and v.throttle.attempts == 0
    proc.exits(1)
    rig.step(1)
    assert f"died: 'app.ini' (pid {proc.pid}) exited with status 1 after 6.0 s; respawning now" \
        in caplog.messages
    assert len(rig.spawner.started) == 4 and v.state == State.STARTING


def test_a_spawn_failure_is_throttled_like_a_crash(rig: Rig) -> None:
    rig.file("app.ini")
    rig.spawner.fail_with = OSError(24, "Too many open files")
    rig.step()
    v = rig.emp.vassals["app.ini"]
    assert v.state == State.THROTTLED and v.respawn_at == rig.clock.t + 1.0 and "Too many" in v.last_error
    rig.spawner.fail_with = None
    rig.step(1.0)
    assert v.state == State.STARTING and len(rig.spawner.started) == 1


def test_sighup_retries_a_failed_vassal_now(rig: Rig) -> None:
    rig.file("app.ini")
    rig.step()
    rig.proc().exits(Exit.CONFIG)
    rig.step()
    v = rig.emp.vassals["app.ini"]
    assert v.state == State.FAILED
    rig.step(100)
    assert len(rig.spawner.started) == 1  # FAILED waits for the file to change ...
    rig.emp.reload_all()  # ... or SIGHUP
    assert v.state == State.THROTTLED and v.respawn_at == rig.clock.t
    rig.step()
    assert v.state == State.STARTING and len(rig.spawner.started) == 2


def test_a_held_vassal_stays_stopped_until_start(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "emperor")
    rig.file("app.ini")
    rig.step()
    proc = rig.proc()
    proc.says(Msg.READY)
    rig.step()
    rig.emp.hold("app.ini")  # emperor ctl stop
    assert rig.state() == State.STOPPING and proc.got()[-1] == Msg.STOP
    proc.exits(0)
    rig.step()
    assert "app.ini" not in rig.emp.vassals and "app.ini" in rig.emp.held
    rig.step(rig.emp.s.freq)  # the rescans no longer see its file
    rig.step(rig.emp.s.freq)
    assert len(rig.spawner.started) == 1 and "app.ini" not in rig.emp.files()
    assert rig.emp.console.status_lines() == ["app.ini: held (emperor ctl stop)"]
    assert rig.emp.start("app.ini")  # emperor ctl start
    assert "released: 'app.ini' (emperor ctl start)" in caplog.messages
    rig.step()
    assert len(rig.spawner.started) == 2 and rig.state() == State.STARTING
    assert not rig.emp.start("app.ini")  # neither held nor dead


def test_holding_a_dead_vassal_drops_its_record(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "emperor")
    rig.file("app.ini")
    rig.step()
    rig.proc().exits(1)
    rig.step()
    assert rig.state() == State.THROTTLED
    rig.emp.hold("app.ini")
    assert "app.ini" not in rig.emp.vassals
    assert "held: 'app.ini' stays stopped until emperor ctl start" in caplog.messages
    rig.step(5)
    assert len(rig.spawner.started) == 1


def test_a_silent_master_is_killed_after_the_required_heartbeat(rig: Rig) -> None:
    rig.file("app.ini")
    rig.step()
    proc = rig.proc()
    proc.says(Msg.READY)
    proc.says(Msg.HEARTBEAT, "5")
    rig.step()
    v = rig.emp.vassals["app.ini"]
    required = rig.emp.s.required_heartbeat
    assert v.next_deadline(required) == rig.clock.t + required
    assert rig.emp._next_deadline() == min(rig.emp.rescan_at, rig.clock.t + required)
    rig.step(required - 1)
    assert not proc.killed
    rig.step(1)
    assert proc.killed and "the master is hung" in v.last_error
    proc.exits(-9)
    rig.step()
    assert v.state == State.THROTTLED  # a hang is a crash: the throttle decides the respawn


def test_scale_is_asked_only_of_a_serving_vassal(rig: Rig) -> None:
    rig.file("app.ini")
    rig.step()
    proc = rig.proc()
    assert not rig.emp.scale("app.ini", 3)  # still starting
    proc.says(Msg.READY)
    rig.step()
    assert rig.emp.scale("app.ini", 3) and proc.sent[-1] == (Msg.SCALE, "3")
    assert not rig.emp.scale("nope.ini", 3)


def test_the_zerg_table_is_the_one_count_and_publishes_lend_and_reclaim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    rig = Rig(tmp_path, broodlord=2)
    try:
        rig.file("app.ini", "[uwsgi]\nmodule = app\n[zerg]\nmodule = app\n")
        rig.step()
        vassal = rig.proc()
        vassal.says(Msg.READY)
        rig.step()
        vassal.says(Msg.SOS, "12 10")
        rig.step()
        zerg = rig.proc("app.ini:zerg#1")
        assert zerg.argv[-1].endswith("app.ini:zerg")
        assert rig.emp.zerg_counts("app.ini") == {"zergs": 1, "lends": 1, "reclaims": 0}
        assert rig.events == [("app.ini", "lend", {"pid": vassal.pid, "zergs": 1})]
        assert rig.emp.broodlord_snapshot()["alive"] == 1
        zerg.says(Msg.READY)
        zerg.says(Msg.IDLE, "30")
        rig.step()
        assert zerg.got()[-1] == Msg.STOP
        zerg.exits(0)
        rig.step()
        assert rig.emp.zerg_counts("app.ini") == {"zergs": 0, "lends": 1, "reclaims": 1}
        assert rig.events[-1] == ("app.ini", "reclaim", {"pid": vassal.pid, "zergs": 0})
        snap = rig.emp.vassals["app.ini"].snapshot(rig.clock.t, rig.emp.zerg_counts("app.ini"))
        assert (snap["zergs"], snap["lends"], snap["reclaims"]) == (0, 1, 1)
    finally:
        rig.close()


def test_settings_defaults_come_from_the_option_table() -> None:
    s = Settings(sources=[])

    def default(key: str) -> Any:
        opt = lookup(key)
        assert opt is not None
        return opt.default_for(Scope.EMPEROR)

    assert s.freq == default("emperor-freq")
    assert s.throttle == default("emperor-throttle") / 1000
    assert s.max_throttle == default("emperor-max-throttle") / 1000
    assert s.required_heartbeat == default("emperor-required-heartbeat")
    assert s.mercy == default("reload-mercy") == 30  # the emperor's own default, not the vassal's 60
    assert s.broodlord == default("emperor-broodlord") and s.tyrant == default("emperor-tyrant")


def test_the_fake_child_speaks_the_real_channel() -> None:
    """The rig is only as good as its fake: its channel must carry real channel packets."""
    proc = FakeProc("x", 1, [], None)
    try:
        proc.says(Msg.READY)
        assert channel.decode(proc.channel.recv(1024)) == (Msg.READY, "")
        assert proc.channel.type == socket.SOCK_SEQPACKET
    finally:
        proc.close()
