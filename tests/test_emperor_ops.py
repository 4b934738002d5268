"""Operating the emperor: init.d script, systemd unit, pidfile, daemonize, log reopen, tyrant mode.

These need root (init.d, chown, tyrant mode), as on the CI machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import MARKER_VAR, ProcGroup, assert_no_orphans, wait_for
from test_emperor_rig import Rig

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

ROOT = Path(__file__).resolve().parent.parent
INIT_SCRIPT = ROOT / "contrib" / "init.d" / "emperor"
UNIT = ROOT / "contrib" / "systemd" / "emperor.service"
EMPEROR_BIN = Path(sys.executable).parent / "emperor"


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


@pytest.fixture
def world_readable() -> Iterator[Path]:
    """A 0755 directory outside tmp_path (0700), so a vassal running as nobody can read its files."""
    d = Path(tempfile.mkdtemp(prefix="emp-tyrant-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("argv", [[str(EMPEROR_BIN)], [sys.executable, "-m", "emperor"]])
def test_version(argv: list[str]) -> None:
    out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("emperor "), out


def test_config_errors_are_reported_with_exit_78(tmp_path: Path) -> None:
    ini = tmp_path / "emperor.ini"
    ini.write_text(f"[uwsgi]\nemperor = {tmp_path / 'missing'}\n")
    out = subprocess.run([sys.executable, "-m", "emperor", "--ini", str(ini)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 78 and "is not a directory" in out.stderr, out
    ini.write_text(f"[uwsgi]\nemperor = {tmp_path}\nemperor-throttle = soon\n")
    out = subprocess.run([sys.executable, "-m", "emperor", "--ini", str(ini)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 78 and "emperor.ini:3" in out.stderr and "emperor-throttle" in out.stderr, out


def test_second_emperor_on_the_same_pidfile_is_refused(rig: Rig, tmp_path: Path, procs: ProcGroup) -> None:
    pidfile = tmp_path / "e.pid"
    first = rig.start(f"pidfile = {pidfile}")
    wait_for(lambda: pidfile.exists() and pidfile.read_text() == f"{first.pid}\n", 10, what="pidfile")
    second = procs.start([sys.executable, "-m", "emperor", "--emperor", str(rig.enabled), "--pidfile",
                          str(pidfile)], name="second")
    assert second.wait(20) == 1
    assert f"another emperor (pid {first.pid}) holds {pidfile}" in second.log_text()
    assert pidfile.read_text() == f"{first.pid}\n"


def test_systemd_unit_verifies() -> None:
    """``systemd-analyze verify`` on the shipped unit, ExecStart pointed at this install."""
    with tempfile.TemporaryDirectory() as d:
        unit = Path(d) / "emperor.service"
        unit.write_text(UNIT.read_text().replace("/usr/local/bin/emperor", str(EMPEROR_BIN)))
        out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                             timeout=60)
    assert out.returncode == 0, out.stderr
    text = UNIT.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text


def test_init_script_start_status_reload_stop(rig: Rig, tmp_path: Path) -> None:
    """The LSB script really runs: start (daemonized, pidfile), status 0, reload (SIGHUP),
    touch-logreopen after a rename, stop (graceful, pidfile and sockets removed), status 3."""
    subprocess.run(["sh", "-n", str(INIT_SCRIPT)], check=True)
    subprocess.run(["shellcheck", str(INIT_SCRIPT)], check=True)
    rig.write("app")
    rig.enable("app")
    pidfile, logfile, reopen = tmp_path / "emperor.pid", tmp_path / "emperor.log", tmp_path / "reopen"
    reopen.touch()
    conf = tmp_path / "emperor.ini"
    conf.write_text(f"[uwsgi]\nemperor = {rig.enabled}\ntouch-logreopen = {reopen}\n")
    marker = f"initd-{os.getpid()}-{tmp_path.name}"
    env = {**os.environ, "DAEMON": str(EMPEROR_BIN), "CONFIG": str(conf), "PIDFILE": str(pidfile),
           "LOGFILE": str(logfile), "EMPEROR_DEFAULTS": str(tmp_path / "none"), MARKER_VAR: marker}

    def script(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(INIT_SCRIPT), action], env=env, capture_output=True, text=True,
                              timeout=60)

    assert script("status").returncode == 3
    started = script("start")
    try:
        assert started.returncode == 0, started
        pid = int(pidfile.read_text())
        assert psutil.pid_exists(pid) and psutil.Process(pid).ppid() == 1  # daemonized
        assert script("start").returncode == 0  # already running: still success (LSB)
        st = script("status")
        assert st.returncode == 0 and f"pid {pid}" in st.stdout
        rig.serving("app")
        wait_for(lambda: "ready: 'app.ini'" in logfile.read_text(), 10, what="ready in the log file")
        workers = rig.worker_pids_of(pid, "app", logfile.read_text())

        assert script("reload").returncode == 0
        wait_for(lambda: "reloaded: 'app.ini'" in logfile.read_text(), 15, what="reloaded after SIGHUP")
        def new_workers() -> bool:
            now = rig.worker_pids_of(pid, "app", logfile.read_text())
            return bool(now) and not now & workers

        wait_for(new_workers, 10, what="new workers")

        # logrotate: rename, then touch the reopen file -> the emperor writes to a new file
        logfile.rename(tmp_path / "emperor.log.1")
        os.utime(reopen, ns=(0, reopen.stat().st_mtime_ns + 1_000_000_000))
        wait_for(lambda: logfile.exists() and "log: reopened" in logfile.read_text(), 10,
                 what="a new log file")

        stopped = script("stop")
        assert stopped.returncode == 0, stopped
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not pidfile.exists() and not rig.sock("app").exists()
        assert script("status").returncode == 3
        assert script("stop").returncode == 0  # stopping a stopped service is success (LSB)
        assert "exiting: emperor" in logfile.read_text()
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        wait_for(lambda: not _marked(marker), 10, what="no process of the init.d emperor left")
    assert_no_orphans(marker=marker)


def _marked(marker: str) -> list[int]:
    from harness.procs import marked_pids

    return marked_pids(marker)


def test_tyrant_runs_each_vassal_as_its_files_owner(procs: ProcGroup, world_readable: Path,
                                                     sock_dir: Path) -> None:
    """Tyrant mode: the vassal runs as the owner of its ini (from fstat of the opened file);
    a root-owned or world-writable file is refused with one clear line."""
    nobody = 65534
    socks = world_readable / "socks"
    socks.mkdir()
    socks.chmod(0o1777)  # the vassal binds here as whichever user owns its file
    rig = Rig(world_readable / "vassals", socks, procs)
    for d in (rig.root, rig.avail, rig.enabled):
        d.chmod(0o755)
    rig.app.chmod(0o644)
    for name, owner, mode in (("user", nobody, 0o644), ("rooted", 0, 0o644), ("open", nobody, 0o666)):
        path = rig.write(name)
        os.chown(path, owner, owner)
        path.chmod(mode)
        rig.enable(name)
    rig.start("emperor-tyrant = true")
    rig.wait_log(r"refused: 'rooted.ini': owned by uid 0 \(root\)")
    rig.wait_log(r"refused: 'open.ini': mode 0666 lets other users edit it")
    if not _others_can_run(sys.executable):
        # This machine's interpreter lives where other users cannot reach it (e.g. a pyenv
        # under /root, mode 0700): the emperor checks before the spawn and refuses the file
        # once, naming it, the user and the interpreter (issue 8 item 16), instead of
        # throttling a vassal that can never exec.
        rig.wait_log(r"refused: 'user.ini': tyrant mode would run it as its owner, but uid 65534 \(gid "
                     r"65534\) cannot (execute the interpreter|read) .*no search permission")
        assert sys.executable in rig.log or "standard library" in rig.log
        assert "spawned:" not in rig.log and "throttled:" not in rig.log
        return
    rig.serving("user")
    master = rig.vassal_pid("user")
    assert master
    p = psutil.Process(master)
    assert p.uids().real == nobody and p.gids().real == nobody
    assert all(psutil.Process(w).uids().effective == nobody for w in rig.worker_pids("user"))
    assert "spawned: 'rooted.ini'" not in rig.log and "spawned: 'open.ini'" not in rig.log

    # a change of owner restarts the vassal under the new owner
    mark = rig.mark()
    os.chown(rig.avail / "user.ini", 1, 1)  # daemon
    rig.wait_log(r"stopped: 'user.ini'", after=mark)
    wait_for(lambda: rig.vassal_pid("user") and psutil.Process(rig.vassal_pid("user")).uids().real == 1, 20,
             what="vassal running as uid 1", ignore=(psutil.Error,))


def _others_can_run(path: str) -> bool:
    """True if a user other than root, outside root's groups, can reach and execute ``path``."""
    real = Path(os.path.realpath(path))
    for d in [*reversed(real.parents), real]:
        if not d.stat().st_mode & 0o001:
            return False
    prefix = Path(sys.prefix).resolve()
    return all(d.stat().st_mode & 0o001 for d in [*reversed(prefix.parents), prefix])
