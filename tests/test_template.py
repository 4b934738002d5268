"""The template process (``emperor-template``, issue #13 "Cold start"): vassals forked from a
pre-imported runtime, re-parented to the emperor (a child subreaper), with the exec path as the
fallback; and the orphans the emperor adopts as a subreaper. Real emperors, real vassals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, pid_alive, wait_for
from harness.procs import TEMPLATE_COMM
from test_emperor_rig import Rig

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

MARK = b"EMPEROR_TEMPLATE_FD="  # in the initial environment of the template, so of its forks


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def forked(pid: int) -> bool:
    """Forked from the template (its initial environment is the template's), not exec'd."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        return MARK in f.read()


def template_pid(emperor: int) -> int | None:
    for c in psutil.Process(emperor).children():
        try:
            if c.name() == TEMPLATE_COMM and c.status() != psutil.STATUS_ZOMBIE:
                return c.pid
        except psutil.Error:
            continue
    return None


def gone(pid: int) -> bool:
    """Exited and reaped (no zombie left either)."""
    return not os.path.exists(f"/proc/{pid}")


def test_forked_vassal_serves_reloads_stops_and_is_reaped(rig: Rig) -> None:
    rig.write("a")
    rig.enable("a")
    proc = rig.start()
    rig.serving("a", "v1")
    master = rig.vassal_pid("a")
    assert master is not None and forked(master)
    assert psutil.Process(master).ppid() == proc.pid  # re-parented: the emperor's own child
    assert os.getsid(master) == master  # its own session, as an exec'd vassal
    # its title is its own, not the template's command line (setproctitle set up in the template)
    wait_for(lambda: psutil.Process(master).cmdline()[0].startswith("emperor: master a"), 10,
             what="the forked master's title")
    wait_for(lambda: all(w.cmdline()[0].startswith("emperor: worker")
                         for w in psutil.Process(master).children()), 10, what="the workers' titles")
    tpl = template_pid(proc.pid)
    assert tpl is not None
    assert os.listdir(f"/proc/{tpl}/task") == [str(tpl)]  # one thread: fork() is safe in it

    mark = rig.mark()
    rig.write("a", tag="v2")  # the file changes: a graceful reload
    rig.serving("a", "v2")
    assert rig.vassal_pid("a") == master  # a reload keeps the master

    mark = rig.mark()
    (rig.enabled / "a.ini").unlink()
    rig.wait_log(r"stopped: 'a\.ini' \(pid \d+\) exited with status 0", after=mark)
    wait_for(lambda: gone(master), 10, what="the master reaped")
    wait_for(lambda: not rig.tree(), 10, what="no vassal process left")
    assert template_pid(proc.pid) == tpl  # the template stays for the next one
    assert "did not exit within" not in rig.log  # the vassal never waited for its intermediate


def test_sigkill_of_the_emperor_kills_forked_vassals_and_the_template(rig: Rig, procs: ProcGroup) -> None:
    for name in ("a", "b"):
        rig.write(name)
        rig.enable(name)
    proc = rig.start()
    for name in ("a", "b"):
        rig.serving(name)
    wait_for(lambda: len(rig.tree()) >= 6, 10, what="2 masters and 4 workers")
    masters = [rig.vassal_pid(n) for n in ("a", "b")]
    assert all(m is not None and forked(m) for m in masters)
    tpl = template_pid(proc.pid)
    assert tpl is not None
    everyone = [(p, psutil.Process(p).create_time()) for p in [*rig.tree(), tpl]]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    wait_for(lambda: not any(pid_alive(p, c) for p, c in everyone), 5, what="vassals and template gone")
    procs.stop(proc)


def test_template_off_execs_every_vassal(rig: Rig) -> None:
    rig.write("a")
    rig.enable("a")
    proc = rig.start("emperor-template = false")
    rig.serving("a")
    master = rig.vassal_pid("a")
    assert master is not None and not forked(master)
    assert template_pid(proc.pid) is None


def test_vassal_with_another_interpreter_is_execed(rig: Rig, tmp_path: Path) -> None:
    """home = a venv whose python is not ours: exec, as before (the template cannot be that python)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                   check=True)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "emperor-src.pth").write_text(str(Path(__file__).resolve().parents[1]) + "\n")
    rig.write("a", extra=f"home = {venv}")
    rig.enable("a")
    rig.write("b")
    rig.enable("b")
    rig.start()
    rig.serving("a")
    rig.serving("b")
    a, b = rig.vassal_pid("a"), rig.vassal_pid("b")
    assert a is not None and b is not None
    assert not forked(a)  # exec'd with the venv's python
    assert forked(b)


def test_killed_template_is_restarted_and_spawns_go_on(rig: Rig) -> None:
    rig.write("a")
    rig.enable("a")
    proc = rig.start()
    rig.serving("a")
    tpl = template_pid(proc.pid)
    assert tpl is not None
    mark = rig.mark()
    os.kill(tpl, signal.SIGKILL)
    rig.wait_log(r"template: lost \(pid \d+\)", after=mark)
    wait_for(lambda: gone(tpl), 10, what="the dead template reaped")
    rig.write("b")
    rig.enable("b")
    rig.serving("b")  # exec'd or forked by the new template: it serves either way
    rig.wait_log(r"template: started \(pid \d+\)", after=mark, timeout=20)
    new = wait_for(lambda: template_pid(proc.pid), 10, what="a new template")
    assert new != tpl
    rig.write("c")
    rig.enable("c")
    rig.serving("c")
    c = rig.vassal_pid("c")
    assert c is not None and forked(c)  # once it is ready, spawns go through it again
    rig.serving("a")  # the running vassal never noticed


ORPHAN_APP = '''\
import os
import subprocess

def application(environ, start_response):
    # a child in its own process group (so its vassal's group kill misses it), in the vassal's session
    child = subprocess.Popen(["sleep", "300"], process_group=0)
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(child.pid))
    body = f"{os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def test_orphans_adopted_by_the_emperor_are_killed_and_reaped(rig: Rig, tmp_path: Path) -> None:
    """SIGKILL a vassal master: its workers (parent-death signal) and a process a worker started
    in another group are re-parented to the emperor, a subreaper; none is left as a zombie or alive."""
    app = tmp_path / "orphan_app.py"
    app.write_text(ORPHAN_APP)
    pid_file = tmp_path / "child.pid"
    rig.avail.joinpath("a.ini").write_text(
        f"[uwsgi]\nsocket = {rig.sock('a')}\nwsgi-file = {app}\nprocesses = 2\nenv = PID_FILE={pid_file}\n")
    rig.enable("a")
    proc = rig.start()
    status, body = wait_for(lambda: rig.get("a"), 20, what="a answering", ignore=(OSError,))
    assert status == 200
    master = rig.vassal_pid("a")
    assert master is not None
    workers = list(rig.worker_pids("a"))
    orphan = int(wait_for(lambda: pid_file.read_text().strip(), 10, what="pid file", ignore=(OSError,)))
    assert psutil.Process(orphan).ppid() == int(body)
    mark = rig.mark()
    os.kill(master, signal.SIGKILL)
    rig.wait_log(rf"orphans: adopted pid {orphan}", after=mark)
    for pid in (master, *workers, orphan):
        wait_for(lambda p=pid: gone(p), 10, what=f"pid {pid} killed and reaped")
    rig.serving("a")  # respawned meanwhile
    assert proc.alive()


def test_detached_daemon_adopted_by_the_emperor_is_left_running(rig: Rig, tmp_path: Path) -> None:
    """A process that made its own session (a daemon, e.g. for smart-attach-daemon) is adopted, not killed."""
    app = tmp_path / "daemon_app.py"
    app.write_text(ORPHAN_APP.replace("process_group=0", "start_new_session=True"))
    pid_file = tmp_path / "child.pid"
    rig.avail.joinpath("a.ini").write_text(
        f"[uwsgi]\nsocket = {rig.sock('a')}\nwsgi-file = {app}\nprocesses = 1\nenv = PID_FILE={pid_file}\n")
    rig.enable("a")
    proc = rig.start()
    wait_for(lambda: rig.get("a")[0] == 200, 20, what="a answering", ignore=(OSError,))
    daemon = int(wait_for(lambda: pid_file.read_text().strip(), 10, what="pid file", ignore=(OSError,)))
    master = rig.vassal_pid("a")
    assert master is not None
    mark = rig.mark()
    try:
        os.kill(master, signal.SIGKILL)
        rig.wait_log(rf"orphans: adopted pid {daemon}, a detached daemon", after=mark)
        assert psutil.Process(daemon).ppid() == proc.pid and psutil.Process(daemon).status() != "zombie"
    finally:
        os.kill(daemon, signal.SIGTERM)  # it ends: the emperor reaps it
    wait_for(lambda: gone(daemon), 10, what="the daemon reaped after it exited")


def test_stuck_template_is_killed_and_the_vassal_execed(rig: Rig) -> None:
    """A template that does not answer (SIGSTOP) costs one bounded wait: it is killed, the
    vassal is exec'd and serves, and a new template takes over."""
    rig.write("a")
    rig.enable("a")
    proc = rig.start()
    rig.serving("a")
    tpl = template_pid(proc.pid)
    assert tpl is not None
    os.kill(tpl, signal.SIGSTOP)
    mark = rig.mark()
    rig.write("b")
    rig.enable("b")
    rig.wait_log(r"template: lost \(pid \d+\): no answer within", after=mark)
    rig.serving("b")
    b = rig.vassal_pid("b")
    assert b is not None and not forked(b)  # the fallback: exec
    wait_for(lambda: gone(tpl), 10, what="the stuck template killed and reaped")
    wait_for(lambda: template_pid(proc.pid) not in (None, tpl), 20, what="a new template")
    rig.serving("a")


def test_identity_options_apply_to_a_forked_vassal(tmp_path: Path, procs: ProcGroup) -> None:
    """uid/gid in the vassal's own file (no home venv: forked) are applied as for an exec'd one."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs root")
    import pwd

    from identity_rig import APP, Emperor, get_json, ids, remove, world_dir

    world = world_dir()
    try:
        (world / "app.py").write_text(APP)
        (world / "socks").mkdir(mode=0o755)
        emp = Emperor(world, procs)
        nobody = pwd.getpwnam("nobody")
        emp.write("a", "\n".join(["[uwsgi]", f"socket = {world}/socks/a.sock", f"chdir = {world}",
                                  "module = app", "processes = 1", "uid = nobody",
                                  f"gid = {nobody.pw_gid}", f"env = ROOT_FILE={world}/none", ""]))
        emp.start()
        info = wait_for(lambda: get_json(world / "socks" / "a.sock"), 20, what="a answering",
                        ignore=(OSError, AssertionError))
        assert (info["uid"], info["gid"]) == (nobody.pw_uid, nobody.pw_gid), info
        worker = int(str(info["pid"]))
        assert forked(psutil.Process(worker).ppid())  # its master came from the template
        assert ids(worker)[0] == (nobody.pw_uid,) * 4
    finally:
        remove(world)


def test_orphans_sees_our_children_with_their_session() -> None:
    """The listing the orphan reaper works from: our children from /proc, each with its session."""
    from emperor.empire import orphans

    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert child.pid in orphans.children()
        stat = orphans._stat(child.pid)
        assert stat is not None and stat[1] == stat[2] == child.pid  # its own group and session
    finally:
        child.kill()
        child.wait()
    assert child.pid not in orphans.children()
