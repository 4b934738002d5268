"""Signals that arrive at awkward moments, with real vassals (issue #8 items 7 and 15).

- A stop sent while the app is still importing (seconds, for a big app) must be honoured:
  before, SIGTERM's default action killed the master (socket file left behind), and a stop
  read from the channel after the import reached workers that still ran the master's
  do-nothing handlers, so the vassal served on until the SIGKILL after reload-mercy.
- SIGTTIN/SIGTTOU add or remove one worker (gunicorn's meaning) instead of stopping the
  process (their default action).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, request, wait_for, wait_for_log, wsgi_vars
from test_emperor_rig import Rig
from vassal_runner import start_vassal, worker_pids

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

SLOW_APP = '''\
"""Takes SLOW_IMPORT seconds to import; touches SLOW_MARK when the import begins."""
import os
import time

open(os.environ["SLOW_MARK"], "w").close()
time.sleep(float(os.environ.get("SLOW_IMPORT", "1.5")))


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def _slow_app(tmp_path: Path) -> Path:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    return tmp_path / "import-started"


def test_sigterm_during_app_import_stops_before_forking(procs: ProcGroup, sock_dir: Path,
                                                        tmp_path: Path) -> None:
    mark = _slow_app(tmp_path)
    sock = sock_dir / "slow.sock"
    v = start_vassal(procs, "--socket", str(sock), "--vacuum", "--processes", "2", "--env",
                     f"SLOW_MARK={mark}", module="slowapp", chdir=tmp_path, ready=False)
    wait_for(mark.exists, 10, what="the app import to begin")
    assert sock.exists()
    v.popen.send_signal(signal.SIGTERM)
    assert v.wait(10) == 0  # before the fix: -15, killed by SIGTERM's default action mid-import
    log = v.log_text()
    assert "SIGTERM received: graceful stop" in log
    assert "stopped before any worker was forked" in log
    assert "ready:" not in log
    assert not sock.exists()


def test_stop_right_after_start_reaches_every_worker(procs: ProcGroup, sock_dir: Path) -> None:
    """SIGTERM while the workers are being forked: each new worker must get it and leave.
    Before the fix a worker that had not yet installed its handlers ran the master's no-op
    handler (the stop was lost: the vassal waited for reload-mercy), or its signal was reported
    on the master's wakeup socket as if the master had received it."""
    for i in range(8):
        sock = sock_dir / f"r{i}.sock"
        v = start_vassal(procs, "--socket", str(sock), "--processes", "6", "--reload-mercy", "30",
                         name=f"race{i}", ready=False)
        wait_for_log(v, r"master pid \d+", timeout=15)
        v.popen.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert v.wait(20) == 0
        took = time.monotonic() - t0
        assert took < 5, f"round {i}: the stop took {took:.1f} s (a worker lost its SIGTERM)\n{v.log_text()}"
        assert "still busy" not in v.log_text()


@pytest.mark.parametrize("how", ["remove the ini", "SIGTERM to the emperor", "emperor ctl stop"])
def test_emperor_stop_during_vassal_import(rig: Rig, tmp_path: Path, sock_dir: Path, how: str) -> None:
    """Item 7 from the emperor's side: the STOP sent during the import is honoured at once,
    with no SIGKILL and no socket file left behind."""
    mark = _slow_app(tmp_path)
    sock = rig.sock("slow")
    (rig.avail / "slow.ini").write_text(
        f"[uwsgi]\nsocket = {sock}\nchdir = {tmp_path}\nmodule = slowapp\nprocesses = 4\n"
        f"env = SLOW_MARK={mark}\nenv = SLOW_IMPORT=2\n")
    endpoint = f"ipc://{sock_dir}/ctl/control"
    (sock_dir / "ctl").mkdir(mode=0o700)
    rig.start(f"emperor-control = {endpoint}")
    link = rig.enabled / "slow.ini"
    link.symlink_to("../apps-available/slow.ini")
    rig.wait_log(r"spawned: 'slow.ini'")
    wait_for(mark.exists, 10, what="the app import to begin")
    t0 = time.monotonic()
    if how == "remove the ini":
        link.unlink()
    elif how == "emperor ctl stop":
        cmd = [sys.executable, "-m", "emperor", "ctl", "--endpoint", endpoint, "stop", "slow.ini"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, (r.stdout, r.stderr)
    else:
        assert rig.proc is not None
        rig.proc.popen.send_signal(signal.SIGTERM)
    m = rig.wait_log(r"stopped: 'slow.ini' \(pid \d+\) (.*)", timeout=20)
    took = time.monotonic() - t0
    assert m.group(1).startswith("exited with status 0") and "SIGKILL" not in m.group(1), m.group(0)
    assert took < 8, f"the stop took {took:.1f} s"
    wait_for(lambda: not sock.exists(), 5, what="the socket file removed")


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def _status(pid: int) -> str:
    return str(psutil.Process(pid).status())


def test_sigttin_sigttou_scale_a_standalone_vassal(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2")
    wait_for(lambda: len(worker_pids(v)) == 2, 10, what="two workers")
    mark = v.log_size()
    os.kill(v.pid, signal.SIGTTIN)
    wait_for(lambda: len(worker_pids(v)) == 3, 10, what="a third worker after SIGTTIN")
    assert _status(v.pid) != psutil.STATUS_STOPPED
    wait_for_log(v, r"SIGTTIN received: 2 -> 3 worker", after=mark)
    for left in (2, 1):  # one at a time: two pending SIGTTOU would merge into one
        os.kill(v.pid, signal.SIGTTOU)
        wait_for(lambda: len(worker_pids(v)) == left, 10, what=f"{left} worker(s) after SIGTTOU")  # noqa: B023
    mark = v.log_size()
    os.kill(v.pid, signal.SIGTTOU)  # never below one worker
    wait_for_log(v, r"SIGTTOU ignored: already 1 worker", after=mark)
    assert len(worker_pids(v)) == 1 and v.alive()
    assert _status(v.pid) != psutil.STATUS_STOPPED
    status, _, body, _ = request(sock, wsgi_vars(path="/raw/x"))
    assert (status, body) == (200, b"hello /raw/x")
    # a worker ignores them too (the default action would stop it)
    (worker,) = worker_pids(v)
    os.kill(worker, signal.SIGTTIN)
    os.kill(worker, signal.SIGTTOU)
    assert request(sock, wsgi_vars(path="/raw/y"))[0] == 200
    assert _status(worker) != psutil.STATUS_STOPPED


def test_sigttin_during_app_import_counts(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    """A scale that arrives during the import is applied when the workers are first forked."""
    mark = _slow_app(tmp_path)
    sock = sock_dir / "slow.sock"
    v = start_vassal(procs, "--socket", str(sock), "--processes", "2", "--env", f"SLOW_MARK={mark}",
                     module="slowapp", chdir=tmp_path, ready=False)
    wait_for(mark.exists, 10, what="the app import to begin")
    os.kill(v.pid, signal.SIGTTIN)
    wait_for_log(v, r"ready: 3 worker", timeout=15)
    wait_for(lambda: len(worker_pids(v)) == 3, 5, what="three workers")
    assert _status(v.pid) != psutil.STATUS_STOPPED
    assert request(str(sock), wsgi_vars(path="/"))[0] == 200
