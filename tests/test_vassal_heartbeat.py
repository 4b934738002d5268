"""Heartbeat (issue #8 item 9, faults row F22): a hung vassal master is killed and respawned.

The vassal's ``heartbeat = N`` makes its master send HEARTBEAT on the channel every N
seconds from its loop; the emperor kills a vassal that sent heartbeats and then went silent
for ``emperor-required-heartbeat`` seconds (or 2N, if longer), and respawns it through the
normal throttle path. SIGSTOP is the hang: the process exists, its loop does not run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, wait_for
from test_emperor_rig import Rig

from emperor.empire.vassals import State, Vassal

pytestmark = pytest.mark.live  # starts real processes (README: Tests)


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def test_a_stopped_master_is_killed_and_respawned(rig: Rig) -> None:
    rig.write("hb", extra="heartbeat = 1")
    rig.write("quiet")  # no heartbeat configured: never checked
    rig.start("emperor-required-heartbeat = 2")
    rig.enable("hb")
    rig.enable("quiet")
    rig.wait_log(r"ready: 'hb.ini'")  # the check starts at READY (the first heartbeat comes before it)
    rig.wait_log(r"ready: 'quiet.ini'")
    old = rig.vassal_pid("hb")
    quiet = rig.vassal_pid("quiet")
    assert old is not None and quiet is not None
    mark = rig.mark()
    os.kill(old, signal.SIGSTOP)
    os.kill(quiet, signal.SIGSTOP)
    try:
        m = rig.wait_log(r"killing: 'hb.ini' \(pid (\d+)\) and its process group: no heartbeat for (\d+) s "
                         r"\(heartbeat = 1 s, emperor-required-heartbeat = 2 s\)", after=mark, timeout=10)
        assert int(m.group(1)) == old and 2 <= int(m.group(2)) <= 4
        rig.wait_log(r"ready: 'hb.ini'", after=mark, timeout=20)
        new = rig.vassal_pid("hb")
        assert new is not None and new != old
        wait_for(lambda: not psutil.pid_exists(old) or psutil.Process(old).status() == psutil.STATUS_ZOMBIE,
                 5, what="the hung master gone")
        rig.serving("hb")
        # the vassal without heartbeat was stopped just as long and is left alone
        assert rig.vassal_pid("quiet") == quiet
        assert rig.count(r"killing: 'quiet.ini'", mark) == 0
    finally:
        os.kill(quiet, signal.SIGCONT)
    rig.serving("quiet")


def test_hung_deadline_policy() -> None:
    v = Vassal("a.ini", "/x/a.ini")
    v.spawned(10, 0.0, ())
    assert v.hung_deadline(30) is None  # STARTING
    v.ready(1.0)
    assert v.hung_deadline(30) is None  # no heartbeat yet: the vassal does not send them
    v.heartbeat(5.0, "1")
    assert v.hung_deadline(30) == 35.0
    v.heartbeat(6.0, "40")  # its own period is longer than the requirement: 2 periods
    assert v.hung_deadline(30) == 86.0
    v.request_reload()
    assert v.state == State.RELOADING and v.hung_deadline(30) is None  # re-importing: not a hang
    v.ready(200.0)
    assert v.hung_deadline(30) == 280.0  # counted from the READY after the reload
    v.heartbeat(201.0, "junk")
    assert v.hung_deadline(30) == 231.0
    v.exited(-9, 300.0)  # killed: respawned through the throttle
    v.spawned(11, 300.0, ())
    v.ready(301.0)
    assert v.hung_deadline(30) is None  # a new process: off until its first heartbeat
