"""On-demand vassals with real processes: an emperor that holds the socket, a vassal that starts at
the first connection (which it serves), leaves after ``idle`` and starts again at the next one.

Each of uWSGI's three ways of naming the socket (directory, extension file, command), a vassal
that cannot start (its clients are closed at once, never left waiting), a stuck one (the emperor
goes on governing the others), and ``cheap`` (no worker before the first connection).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, free_port, request, wait_for, wsgi_vars
from test_emperor_rig import Rig

pytestmark = pytest.mark.live  # real processes (README: Tests)

IDLE = 2


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def od_text(rig: Rig, tag: str = "v1", extra: str = "") -> str:
    """A vassal without a socket of its own: the emperor's on-demand socket is its socket."""
    return (f"[uwsgi]\nwsgi-file = {rig.app}\nprocesses = 1\nenv = APP_TAG={tag}\n"
            f"idle = {IDLE}\ndie-on-idle = true\n{extra}\n")


def enable_od(rig: Rig, name: str, **kw: str) -> Path:
    (rig.avail / f"{name}.ini").write_text(od_text(rig, **kw))
    return rig.enable(name)


def get(addr: str, timeout: float = 10.0) -> tuple[int, str]:
    target: str | tuple[str, int] = addr
    if ":" in addr and not addr.startswith("/"):
        host, _, port = addr.rpartition(":")
        target = (host, int(port))
    status, _, body, _ = request(target, wsgi_vars(path="/"), timeout=timeout)  # type: ignore[arg-type]
    return status, body.decode()


def lifecycle(rig: Rig, name: str, addr: str) -> None:
    """No process before the first request; the first request answered; gone after idle; again."""
    rig.wait_log(rf"on-demand: '{name}\.ini' waits for a connection on {re.escape(addr)}")
    time.sleep(0.5)  # a wrong emperor would spawn it now: give it the chance to be wrong
    assert f"spawned: '{name}.ini'" not in rig.log and rig.vassal_pid(name) is None, rig.log
    status, body = get(addr)  # the very first connection is served (queued, not refused)
    assert status == 200 and body.startswith("v1 "), body
    first = rig.vassal_pid(name)
    assert first is not None
    rig.wait_log(rf"idle: '{name}\.ini' \(pid {first}\) exited with status 0 after its idle period",
                 timeout=IDLE + 10)
    rig.wait_log(rf"on-demand: '{name}\.ini' waits for a connection on {re.escape(addr)} again")
    wait_for(lambda: rig.vassal_pid(name) is None, 5, what="no vassal process after idle")
    status, body = get(addr)
    assert status == 200 and body.startswith("v1 ")
    second = rig.vassal_pid(name)
    assert second is not None and second != first


def test_directory_mode_lifecycle_and_reload(rig: Rig, sock_dir: Path) -> None:
    od = sock_dir / "od"
    od.mkdir()
    enable_od(rig, "app")
    rig.start(f"emperor-on-demand-directory = {od}")
    addr = str(od / "app.socket")
    lifecycle(rig, "app", addr)
    # a reload re-executes the master: the emperor's socket crosses it (by name), still served
    mark = rig.mark()
    (rig.avail / "app.ini").write_text(od_text(rig, tag="v2"))
    rig.wait_log(r"reloaded: 'app\.ini'", after=mark)
    wait_for(lambda: get(addr)[1].startswith("v2 "), 10, what="v2 after the reload")
    assert os.path.exists(addr)  # the vassal never removes the emperor's socket file


def test_extension_mode_tcp_and_ordinary_vassals(rig: Rig) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    enable_od(rig, "app")
    (rig.enabled / "app.ini.socket").write_text(f"{addr}\nignored second line\n")
    rig.write("plain", tag="p1")  # no app.ini.socket-like file: an ordinary vassal, started at once
    rig.enable("plain")
    rig.start("emperor-on-demand-extension = .socket")
    rig.serving("plain", "p1")
    lifecycle(rig, "app", addr)


def test_exec_mode(rig: Rig, sock_dir: Path) -> None:
    script = rig.root / "where.sh"
    script.write_text(f'#!/bin/sh\ncase "$1" in *app.ini) echo {sock_dir}/exec-app.sock;; esac\n')
    script.chmod(0o755)
    enable_od(rig, "app")
    rig.write("plain", tag="p1")
    rig.enable("plain")  # the command prints nothing for it: ordinary
    proc = rig.start(f"emperor-on-demand-exec = {script}")
    rig.serving("plain", "p1")
    rig.wait_log(r"on-demand: 'app\.ini' waits")
    proc.popen.send_signal(signal.SIGHUP)  # reload every vassal: a sleeping one stays asleep
    rig.wait_log(r"signal: SIGHUP")
    lifecycle(rig, "app", str(sock_dir / "exec-app.sock"))


def closed_fast(addr: str, within: float) -> float:
    """A request that gets no answer (the connection is closed or reset), and how long it took."""
    t0 = time.monotonic()
    try:
        status, body = get(addr, timeout=within + 5)
    except (OSError, ValueError):
        status, body = 0, ""
    took = time.monotonic() - t0
    assert status == 0, f"answered {status} {body[:60]!r}"
    assert took < within, f"the client waited {took:.2f} s"
    return took


def test_failing_vassal_closes_connections_fast(rig: Rig, sock_dir: Path) -> None:
    od = sock_dir / "od"
    od.mkdir()
    (rig.avail / "bad.ini").write_text(od_text(rig, extra="env = APP_CRASH=1"))
    rig.enable("bad")
    (rig.avail / "conf.ini").write_text(od_text(rig, extra="processes = many"))  # invalid: FAILED
    rig.enable("conf")
    rig.start(f"emperor-on-demand-directory = {od}")
    bad, conf = str(od / "bad.socket"), str(od / "conf.socket")
    rig.wait_log(r"on-demand: 'bad\.ini' waits")
    # the first client triggers the start; the app crashes at import: it is closed, not left hanging
    closed_fast(bad, within=5)
    rig.wait_log(r"throttled: 'bad\.ini'")
    for _ in range(3):  # while throttled: closed at once by the emperor, no spawn
        closed_fast(bad, within=1)
    rig.wait_log(r"refused: \d+ connection\(s\) to 'bad\.ini'", timeout=5)
    closed_fast(conf, within=5)
    rig.wait_log(r"failed: 'conf\.ini'")
    closed_fast(conf, within=1)
    # and it recovers when fixed: touching the file retries; the next connection is served
    (rig.avail / "bad.ini").write_text(od_text(rig, tag="v1"))
    rig.wait_log(r"retrying: 'bad\.ini'")
    wait_for(lambda: get(bad)[0] == 200, 15, what="bad.ini fixed", ignore=(OSError, ValueError))


STUCK_APP = "import time\ntime.sleep(300)\n"


def test_stuck_vassal_does_not_block_the_emperor(rig: Rig, sock_dir: Path) -> None:
    od = sock_dir / "od"
    od.mkdir()
    stuck_app = rig.root / "stuck.py"
    stuck_app.write_text(STUCK_APP)
    (rig.avail / "stuck.ini").write_text(f"[uwsgi]\nwsgi-file = {stuck_app}\nprocesses = 1\n")
    (rig.enabled / "stuck.ini.sock").write_text(str(sock_dir / "stuck.sock"))
    rig.enable("stuck")
    rig.write("b", tag="b1")
    rig.enable("b")  # b.ini has no b.ini.sock: an ordinary vassal
    b_ini = rig.avail / "b.ini"
    rig.start("emperor-on-demand-extension = .sock\nreload-mercy = 2")
    rig.serving("b", "b1")
    rig.wait_log(r"on-demand: 'stuck\.ini' waits")
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(str(sock_dir / "stuck.sock"))
        client.sendall(b"\0\0\0\0")  # a request the stuck vassal will never read
        rig.wait_log(r"spawned: 'stuck\.ini'")
        mark = rig.mark()
        b_ini.write_text(rig.vassal_text("b", tag="b2"))
        rig.wait_log(r"reloaded: 'b\.ini'", after=mark, timeout=10)
        rig.serving("b", "b2", timeout=10)
    finally:
        client.close()


def test_cheap_forks_no_worker_before_the_first_connection(rig: Rig) -> None:
    rig.write("c", tag="c1", processes=2, extra="cheap = true")
    rig.enable("c")
    rig.start()
    rig.wait_log(r"ready: 'c\.ini'")
    pid = rig.vassal_pid("c")
    assert pid is not None
    time.sleep(0.5)
    assert psutil.Process(pid).children() == []  # no worker yet
    rig.serving("c", "c1")
    wait_for(lambda: len(psutil.Process(pid).children()) == 2, 10, what="2 workers after the request")


def test_on_demand_vassal_with_its_own_venv_and_user(procs: ProcGroup) -> None:
    """The hand-over survives the paths that start another interpreter and switch the user: the
    emperor starts a ``home`` vassal with the venv's python, which gets fd 0, drops to ``uid``
    after adopting it, and serves the first connection as that user from its own venv."""
    from identity_rig import APP, Emperor, get_json, make_venv, remove, world_dir

    world = world_dir()
    try:
        make_venv(world / "venv", {"verpkg": "1.0.0"})
        (world / "app.py").write_text(APP)
        od = world / "od"
        od.mkdir(mode=0o755)
        emp = Emperor(world, procs)
        emp.write("v", "\n".join(["[uwsgi]", f"chdir = {world}", "module = app", f"home = {world}/venv",
                                  "uid = nobody", "processes = 1", f"idle = {IDLE}", "die-on-idle = true",
                                  ""]))
        emp.start(f"emperor-on-demand-directory = {od}")
        emp.wait_log(r"on-demand: 'v\.ini' waits")
        assert "spawned: 'v.ini'" not in emp.log
        doc = get_json(od / "v.socket")  # the first connection, served by the venv's app as nobody
        assert doc["uid"] == 65534 and doc["version"] == "1.0.0" and doc["prefix"] == f"{world}/venv"
        emp.wait_log(r"on-demand: 'v\.ini' waits for a connection on .* again", timeout=IDLE + 10)
        assert get_json(od / "v.socket")["uid"] == 65534  # and again after its idle exit
    finally:
        remove(world)


def test_idle_without_die_on_idle_is_cheap_mode_on_the_emperors_socket(rig: Rig, sock_dir: Path) -> None:
    """An on-demand vassal with ``idle`` alone does not exit: its workers leave (cheap mode), the
    master keeps the socket the emperor handed it, and the next connection is served by the
    same master with new workers (docs/autoscaling.md, "idle: cheap mode")."""
    od = sock_dir / "od"
    od.mkdir()
    (rig.avail / "app.ini").write_text(f"[uwsgi]\nwsgi-file = {rig.app}\nprocesses = 1\n"
                                       f"env = APP_TAG=v1\nidle = {IDLE}\n")
    rig.enable("app")
    rig.start(f"emperor-on-demand-directory = {od}")
    addr = str(od / "app.socket")
    rig.wait_log(rf"on-demand: 'app\.ini' waits for a connection on {re.escape(addr)}")
    status, body = get(addr)
    assert status == 200 and body.startswith("v1 "), body
    master = rig.vassal_pid("app")
    assert master is not None
    workers = rig.worker_pids("app")
    assert workers
    rig.wait_log(r"idle for \d+ s \(no request, no busy worker\): cheap mode", timeout=IDLE + 10)
    wait_for(lambda: not rig.worker_pids("app"), 10, what="no worker left in cheap mode")
    assert rig.vassal_pid("app") == master  # the master stays: this is not die-on-idle
    assert "after its idle period" not in rig.log
    status, body = get(addr)  # served through the same socket, by new workers
    assert status == 200 and body.startswith("v1 "), body
    assert rig.vassal_pid("app") == master
    again = rig.worker_pids("app")
    assert again and not again & workers
