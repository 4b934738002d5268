"""The emperor with real vassals, real sockets and nginx: the symlink workflow and the faults.

Each test starts one emperor (``python -m emperor --ini emperor.ini``) over a temporary
apps-enabled directory and drives it only from outside: symlinks, touches, signals.
Faults table rows (reliability-security.md §2.4) are named in the docstrings.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, TinyUwsgiServer, http_get, wait_for
from test_emperor_rig import Rig, fd_count

pytestmark = pytest.mark.live  # starts real processes (README: Tests)


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def ok_through(ng: Nginx, path: str) -> Callable[[], bool]:
    def probe() -> bool:
        status, _, body = http_get(ng.url(path), timeout=10)
        if status != 200:
            raise AssertionError(f"{path}: HTTP {status} {body[:80]!r}")
        return True

    return probe


def test_symlink_workflow_through_nginx(rig: Rig, nginx: Callable[..., Nginx]) -> None:
    """Symlink in -> serving; touch under load -> reloaded, new workers, no failed request
    (row 1); an editor's atomic save -> the new config; 1,000 touches in a second -> a
    handful of reloads and the final config (row 18); rename; dangling link; removal ->
    stopped and socket gone (row 16)."""
    ng = nginx()
    ng.add_uwsgi("/", rig.sock("app"))
    ng.add_uwsgi("/renamed/", rig.sock("app"))
    ng.start()
    rig.write("app", tag="v1")
    rig.start()

    t0 = time.monotonic()
    link = rig.enable("app")
    wait_for(lambda: http_get(ng.url("/"))[0] == 200, 20, what="first 200 through nginx", ignore=(OSError,))
    first_200 = time.monotonic() - t0
    rig.wait_log(r"spawned: 'app.ini' \(pid \d+\)")
    rig.wait_log(r"ready: 'app.ini'")
    assert first_200 < 10, first_200

    # touch -> graceful reload with new worker pids, zero failed requests under load
    wait_for(lambda: len(rig.worker_pids("app")) == 2, 10, what="two workers")
    old_workers, master = rig.worker_pids("app"), rig.vassal_pid("app")
    mark = rig.mark()
    with BackgroundLoad(ok_through(ng, "/"), threads=4, seconds=30) as load:
        wait_for(lambda: load.result.ok >= 20, 10, what="load running before the reload")
        os.utime(link)  # touch: follows the link to the target
        rig.wait_log(r"reloaded: 'app.ini'", after=mark)
        wait_for(lambda: rig.worker_pids("app") and not (rig.worker_pids("app") & old_workers), 10,
                 what="new worker pids")
        settled = load.result.ok
        wait_for(lambda: load.result.ok >= settled + 20, 10, what="load served by the new workers")
    assert load.result.failed == 0 and load.result.ok > 0, load.result
    assert rig.vassal_pid("app") == master  # the master keeps its pid and its socket

    # an editor's atomic save (write a temp file, rename it over the target) -> v2
    mark = rig.mark()
    tmp = rig.avail / ".app.ini.swp"
    tmp.write_text(rig.vassal_text("app", tag="v2"))
    tmp.replace(rig.avail / "app.ini")
    rig.serving("app", "v2")
    rig.wait_log(r"reloaded: 'app.ini'", after=mark)
    assert rig.count(r"stopping: 'app.ini'", mark) == 0

    # 1,000 touches within about a second, the last one with new content -> few reloads, v3 applied
    mark = rig.mark()
    target = rig.avail / "app.ini"
    t_end = time.monotonic() + 1.0
    for _ in range(999):
        os.utime(target)
        time.sleep(max(0.0, min(0.001, t_end - time.monotonic())))  # pace: 1,000 touches over ~1 s
    target.write_text(rig.vassal_text("app", tag="v3"))  # the 1,000th change carries new content
    rig.serving("app", "v3")
    wait_for(lambda: rig.count(r"reloading: 'app.ini'", mark) == rig.count(r"reloaded: 'app.ini'", mark),
             10, what="the last reload to finish")
    reloads = rig.count(r"reloading: 'app.ini'", mark)
    assert 1 <= reloads <= 5, rig.proc.log_text(mark) if rig.proc else ""

    # rename -> the old name stops, the new one starts, same socket (it waits for the old one)
    mark = rig.mark()
    renamed = rig.enabled / "renamed.ini"
    link.rename(renamed)
    rig.wait_log(r"stopped: 'app.ini'", after=mark)
    rig.wait_log(r"ready: 'renamed.ini'", after=mark, timeout=20)
    wait_for(lambda: http_get(ng.url("/renamed/"))[0] == 200, 10, what="renamed vassal serving",
             ignore=(OSError,))

    # dangling link -> stopped and socket gone; target back -> started again
    mark = rig.mark()
    (rig.avail / "app.ini").rename(rig.avail / "app.ini.off")
    rig.wait_log(r"stopped: 'renamed.ini'", after=mark)
    wait_for(lambda: not rig.sock("app").exists(), 10, what="socket removed")
    (rig.avail / "app.ini.off").rename(rig.avail / "app.ini")
    rig.wait_log(r"ready: 'renamed.ini'", after=mark)
    rig.serving("app", "v3")

    # removal -> graceful stop, socket removed, no vassal process left
    mark = rig.mark()
    renamed.unlink()
    rig.wait_log(r"stopped: 'renamed.ini' \(pid \d+\) exited with status 0", after=mark)
    wait_for(lambda: not rig.sock("app").exists(), 10, what="socket removed")
    wait_for(lambda: not rig.tree(), 10, what="no vassal process left")


def test_crashing_vassal_is_throttled_while_others_serve(rig: Rig, nginx: Callable[..., Nginx]) -> None:
    """A vassal that crashes on import is throttled with a growing delay while two healthy
    ones serve with zero errors (row 6); fixing it and touching it restarts it at once
    (row 7); SIGKILL of a healthy master -> respawned now, the other unaffected (row 5)."""
    ng = nginx()
    for name in ("a", "b"):
        rig.write(name)
        rig.enable(name)
        ng.add_uwsgi(f"/{name}/", rig.sock(name))
    ng.start()
    rig.write("bad", crash=True)
    rig.enable("bad")
    rig.start("emperor-throttle = 200\nemperor-max-throttle = 1600")
    for name in ("a", "b"):
        rig.serving(name)

    def both() -> bool:
        return ok_through(ng, "/a/")() and ok_through(ng, "/b/")()

    with BackgroundLoad(both, threads=2, seconds=40) as load:
        rig.wait_log(r"throttled: 'bad.ini' .* next attempt in 1.6 s", timeout=20)
        first = rig.log.index("spawned: 'bad.ini'")
        times = [m for m in rig.log[first:].splitlines() if "spawned: 'bad.ini'" in m]
        assert 4 <= len(times) <= 7, times
        assert "exited with status 22 (the application could not be loaded)" in rig.log
    assert load.result.failed == 0 and load.result.ok > 0, load.result

    # the fix: the file changes -> retried at once, throttle forgotten
    mark = rig.mark()
    t0 = time.monotonic()
    rig.write("bad", tag="fixed")
    rig.serving("bad", "fixed", timeout=10)
    assert time.monotonic() - t0 < 5
    assert rig.count(r"retrying: 'bad.ini'", mark) == 1

    # SIGKILL one loyal master while the other one is under load
    rig.serving("a")  # a request makes it loyal
    rig.wait_log(r"loyal: 'a.ini'")
    victim = rig.vassal_pid("a")
    assert victim
    mark = rig.mark()
    with BackgroundLoad(ok_through(ng, "/b/"), threads=2, seconds=30) as load:
        os.kill(victim, signal.SIGKILL)
        rig.wait_log(rf"died: 'a.ini' \(pid {victim}\) killed by SIGKILL \(possible OOM kill\)", after=mark)
        t0 = time.monotonic()
        rig.serving("a")
        assert time.monotonic() - t0 < 5
        settled = load.result.ok
        wait_for(lambda: load.result.ok >= settled + 10, 10, what="more load on b")
    assert load.result.failed == 0 and load.result.ok > 0, load.result
    assert rig.vassal_pid("a") not in (None, victim)


def test_broken_ini_waits_for_a_fix_and_a_bad_edit_keeps_the_old_config(rig: Rig) -> None:
    """An invalid ini at boot -> failed, no zombie, retried when the file changes; a syntax
    error written into a running vassal's ini keeps the old config serving and is logged
    (row 17)."""
    (rig.avail / "broken.ini").write_text(f"[uwsgi]\nsocket = {rig.sock('broken')}\nprocesses = many\n")
    rig.enable("broken")
    rig.write("live", tag="v1")
    rig.enable("live")
    rig.start()
    rig.wait_log(r"failed: 'broken.ini' .*(processes|invalid configuration)")
    rig.serving("live", "v1")
    rig.write("other")
    rig.enable("other")  # a later event and rescan: it must not respawn the broken one
    rig.serving("other")
    assert rig.count(r"spawned: 'broken.ini'") == 1
    assert not [p for p in rig.tree() if psutil.Process(p).status() == psutil.STATUS_ZOMBIE]

    mark = rig.mark()
    rig.write("broken", tag="ok")
    rig.serving("broken", "ok")
    rig.wait_log(r"retrying: 'broken.ini'", after=mark)

    mark = rig.mark()
    master = rig.vassal_pid("live")
    (rig.avail / "live.ini").write_text(rig.vassal_text("live", tag="v2") + "processes = lots\n")
    rig.wait_log(r"config error: 'live.ini'|reload failed: 'live.ini'", after=mark)
    assert rig.get("live")[1].startswith("v1 ")
    assert rig.vassal_pid("live") == master


def test_sighup_reloads_all_and_sigterm_stops_gracefully(rig: Rig, nginx: Callable[..., Nginx],
                                                         tmp_path: Path) -> None:
    """SIGHUP under load on three vassals -> each reloads, zero failed requests (row 2);
    SIGTERM during a slow request -> it completes, exit 0, sockets and pidfile removed
    (row 3); systemd notifications along the way."""
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(20)
    ng = nginx()
    names = ("a", "b", "c")
    for name in names:
        rig.write(name)
        rig.enable(name)
        ng.add_uwsgi(f"/{name}/", rig.sock(name))
    ng.start()
    pidfile = tmp_path / "emperor.pid"
    proc = rig.start(f"pidfile = {pidfile}", env={"NOTIFY_SOCKET": str(notify_path)})
    try:
        msg = listener.recv(4096).decode()
        assert msg.startswith("READY=1\nSTATUS=The emperor is governing 3 vassals"), msg
        assert pidfile.read_text() == f"{proc.pid}\n"
        for name in names:
            rig.serving(name)

        def all_three() -> bool:
            return all(ok_through(ng, f"/{n}/")() for n in names)

        old = {n: rig.worker_pids(n) for n in names}
        mark = rig.mark()
        with BackgroundLoad(all_three, threads=3, seconds=30) as load:
            wait_for(lambda: load.result.ok >= 10, 10, what="load running before SIGHUP")
            os.kill(proc.pid, signal.SIGHUP)
            for n in names:
                rig.wait_log(rf"reloaded: '{n}.ini'", after=mark)
            wait_for(lambda: all(rig.worker_pids(n) and not rig.worker_pids(n) & old[n] for n in names), 10,
                     what="new workers everywhere")
            settled = load.result.ok
            wait_for(lambda: load.result.ok >= settled + 10, 10, what="load served by the new workers")
        assert load.result.failed == 0 and load.result.ok > 0, load.result
        seen = []
        while not any(m.startswith("READY=1") for m in seen):
            seen.append(listener.recv(4096).decode())
        assert seen[0].startswith("RELOADING=1"), seen

        # graceful stop while a slow request is in flight
        result: list[tuple[int, bytes]] = []
        with BackgroundLoad(lambda: result.append(http_get(ng.url("/a/sleep?s=2"), timeout=20)[::2]),
                            threads=1, max_requests=1):
            sleeping = rig.root / "sleeping"
            wait_for(sleeping.exists, 10, interval=0.02, what="the slow request to reach a worker")
            os.kill(proc.pid, signal.SIGTERM)
            assert proc.wait(40) == 0
        assert result and result[0][0] == 200, result
        while not listener.recv(4096).decode().startswith("STOPPING=1"):
            pass
    finally:
        listener.close()
    assert "exiting: emperor" in rig.log
    assert not pidfile.exists()
    assert not any(rig.sock(n).exists() for n in names)


def test_sigkill_of_the_emperor_leaves_no_orphan(rig: Rig, procs: ProcGroup) -> None:
    """SIGKILL the emperor -> every vassal and worker gone within about a second (row 4);
    a new emperor starts cleanly over the stale sockets."""
    for name in ("a", "b"):
        rig.write(name)
        rig.enable(name)
    proc = rig.start()
    for name in ("a", "b"):
        rig.serving(name)
    wait_for(lambda: len(rig.tree()) >= 6, 10, what="2 masters and 4 workers")
    tree = [(p, psutil.Process(p).create_time()) for p in rig.tree()]
    proc.snapshot()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    t0 = time.monotonic()
    from harness import pid_alive

    wait_for(lambda: not any(pid_alive(p, c) for p, c in tree), 5, interval=0.02, what="vassals gone")
    assert time.monotonic() - t0 < 2.0
    procs.stop(proc)

    rig.start()
    for name in ("a", "b"):
        rig.serving(name)


def test_fd_limit_and_crash_cycles_do_not_hurt_the_emperor(rig: Rig) -> None:
    """Row 20 (a small fd limit, more vassals than fit: per-vassal errors, the emperor stays
    up and catches up when fds free) and row 19 (crash/respawn cycles: the emperor's fd
    count and RSS stay flat). Row 19 asks for 1,000 cycles; 40 keep the suite fast, and an
    fd leak of even one per spawn shows up as 40."""
    rig.write("crash", crash=True)
    rig.enable("crash")
    proc = rig.start("emperor-throttle = 1\nemperor-max-throttle = 1",
                     cmd_prefix=("prlimit", "--nofile=40:40"))
    rig.wait_log(r"attempt 3\)")
    base_fds, base_rss = fd_count(proc.pid), psutil.Process(proc.pid).memory_info().rss
    wait_for(lambda: rig.count(r"spawned: 'crash.ini'") >= 40, 60, what="40 crash cycles")
    wait_for(lambda: fd_count(proc.pid) <= base_fds, 5, what=f"fd count back to {base_fds}")
    assert psutil.Process(proc.pid).memory_info().rss < base_rss + 8 * 2**20
    (rig.enabled / "crash.ini").unlink()
    rig.wait_log(r"removed: 'crash.ini'|stopped: 'crash.ini'")

    # 16 vassals, 2 fds each in the emperor, do not fit under 40 fds: some cannot spawn
    names = [f"v{i:02d}" for i in range(16)]
    mark = rig.mark()
    for name in names:
        rig.write(name, processes=1)
        rig.enable(name)
    rig.wait_log(r"cannot spawn: .*Too many open files", after=mark, timeout=30)
    assert proc.alive()
    running = wait_for(lambda: [n for n in names if rig.vassal_pid(n)], 20, what="some vassals running")
    for name in running[:2]:
        rig.serving(name)
    # free fds: disable most vassals; the refused ones that remain then start
    keep = names[-3:]
    for name in names[:-3]:
        (rig.enabled / f"{name}.ini").unlink()
    for name in keep:
        rig.serving(name, timeout=30)
    assert proc.alive()


def test_foreign_server_on_the_socket_is_left_alone(rig: Rig, sock_dir: Path) -> None:
    """Row 21: the vassal's socket path is held by a live foreign server -> the vassal fails
    with a clear message and is throttled; the foreign server keeps answering."""
    with TinyUwsgiServer(str(rig.sock("taken"))) as foreign:
        rig.write("taken")
        rig.enable("taken")
        rig.start("emperor-throttle = 300")
        rig.wait_log(r"throttled: 'taken.ini' .*(status 75|a socket could not be bound)", timeout=20)
        status, body = rig.get("taken")
        assert status == 200 and body.startswith("path=/"), body
        assert foreign.received
    mark = rig.mark()
    rig.serving("taken", timeout=20)  # once the foreign server is gone, the next attempt binds
    assert "spawned: 'taken.ini'" in rig.log[mark:]


def _rescans(rig: Rig) -> int:
    """Periodic rescans are silent; the emperor logs them only with EMPEROR_DEBUG."""
    return rig.count(r"rescan:")


def test_refused_files_and_monitor_restart(rig: Rig) -> None:
    """Links to a FIFO, a device, a directory or a loop are refused with one log line each
    and never block the emperor; row 28: restarting the watchdog thread (SIGWINCH) leaves
    every vassal running (they are spawned from the main thread)."""
    os.mkfifo(rig.avail / "fifo.ini")
    (rig.enabled / "fifo.ini").symlink_to(rig.avail / "fifo.ini")
    (rig.enabled / "dev.ini").symlink_to("/dev/zero")
    (rig.enabled / "loop.ini").symlink_to("loop.ini")
    (rig.enabled / "dir.ini").symlink_to(rig.avail)
    rig.write("good")
    rig.enable("good")
    proc = rig.start("emperor-freq = 0.2", env={"EMPEROR_DEBUG": "1"})
    rig.serving("good")
    refusals = (("fifo", "a FIFO"), ("dev", "a device"), ("loop", "symlink loop"), ("dir", "a directory"))
    for name, why in refusals:
        rig.wait_log(rf"refused: '{name}.ini': .*{why}")
    wait_for(lambda: rig.count(r"spawned: 'late") == 0 and rig.count("accepted") == 0 and
             _rescans(rig) >= 3, 10, what="three more periodic rescans")
    for name in ("fifo", "dev", "loop", "dir"):
        assert rig.count(rf"refused: '{name}.ini'") == 1

    before = rig.vassal_pid("good")
    workers = rig.worker_pids("good")
    mark = rig.mark()
    os.kill(proc.pid, signal.SIGWINCH)
    rig.wait_log(r"monitor: restarted", after=mark)
    rig.write("late")
    rig.enable("late")  # the new watcher sees new links
    rig.serving("late")
    assert rig.vassal_pid("good") == before and rig.worker_pids("good") == workers
