"""The vassal master's lifecycle with real processes: reload, stop, recycle, harakiri, crashes.

Each test starts its own vassal (and nginx where a client's view matters) and polls against
deadlines; the ``procs`` fixture fails the test if any process is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from harness import BackgroundLoad, http_request, request, wait_for, wait_for_log
from vassal_runner import APPS, start_vassal, worker_pids

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/pid", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
       "SERVER_NAME": "t", "SERVER_PORT": "80"}


def get(sock: str, path: str = "/pid", timeout: float = 10.0) -> tuple[int, bytes]:
    path, _, query = path.partition("?")
    status, _, body, _ = request(sock, {**GET, "PATH_INFO": path, "QUERY_STRING": query}, timeout=timeout)
    return status, body


def behind_nginx(nginx, sock: str) -> str:  # type: ignore[no-untyped-def]
    ng = nginx()
    ng.add_uwsgi("/", sock)
    ng.start()
    return ng.url("/").rstrip("/")


def test_sighup_reload_under_load_loses_nothing(procs, nginx, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2")
    url = behind_nginx(nginx, sock)
    before_pids = worker_pids(v)
    before = http_request(url + "/pid")[2].split()[1]
    with BackgroundLoad(lambda: http_request(url + "/pid", timeout=10)[0] == 200, threads=4,
                        seconds=20) as load:
        wait_for(lambda: load.result.ok > 50, 10, what="load running")
        mark = v.log_size()
        os.kill(v.pid, signal.SIGHUP)
        wait_for_log(v, r"ready: 2 worker", after=mark, timeout=15)
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 50, 10, what="requests after the reload")
    assert load.result.failed == 0, load.result
    assert worker_pids(v).isdisjoint(before_pids)
    assert http_request(url + "/pid")[2].split()[1] != before, "the app was not imported afresh"
    assert v.alive


def test_reload_with_broken_config_keeps_old_one(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ini = tmp_path / "app.ini"
    sock = str(sock_dir / "app.sock")
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nchdir = {APPS}\nmodule = testapp\n")
    v = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="ini")
    wait_for_log(v, r"ready: 1 worker")
    pids = worker_pids(v)
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nchdir = {APPS}\nmodule = testapp\nprocesses = many\n")
    mark = v.log_size()
    os.kill(v.pid, signal.SIGHUP)
    m = wait_for_log(v, r"reload refused.*", after=mark)
    assert "app.ini:5: processes" in m.group(0)
    assert get(sock)[0] == 200 and worker_pids(v) == pids


def test_sigterm_finishes_inflight_request_then_cleans_up(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    pidfile = tmp_path / "v.pid"
    v = start_vassal(procs, "--socket", sock, "--vacuum", "--pidfile", str(pidfile))
    assert pidfile.read_text().strip() == str(v.pid)
    result: dict[str, object] = {}
    mark = tmp_path / "in-flight"
    t = threading.Thread(target=lambda: result.update(r=get(sock, f"/sleep?s=1.5&mark={mark}")))
    t.start()
    wait_for(mark.exists, 5, what="request in flight")
    v.popen.send_signal(signal.SIGTERM)
    t.join(10)
    assert result["r"] == (200, b"slept")
    assert v.wait(10) == 0
    assert not os.path.exists(sock) and not pidfile.exists()


def test_sigint_is_a_fast_stop(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2")
    slow = threading.Thread(target=lambda: _ignore(lambda: get(sock, "/sleep?s=30", timeout=30)), daemon=True)
    slow.start()
    wait_for(lambda: psutil.Process(v.pid).children(), 5)
    v.popen.send_signal(signal.SIGINT)
    assert v.wait(5) == 0


def _ignore(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except Exception:
        pass


def test_harakiri_kills_worker_and_its_process_group(procs, nginx, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2", "--harakiri", "1")
    url = behind_nginx(nginx, sock)
    child_pidfile = tmp_path / "child.pid"
    with BackgroundLoad(lambda: http_request(url + "/", timeout=10)[0] == 200, threads=2, seconds=30) as load:
        status = http_request(f"{url}/spawn-child?pidfile={child_pidfile}", timeout=15)[0]
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 20, 10, what="other requests served")
    assert status == 502  # the stuck worker was killed: nginx saw the connection close
    assert load.result.failed == 0, load.result
    m = wait_for_log(v, r"HARAKIRI: worker \d \(pid \d+\) spent more than 1 s on '([^']*)'")
    assert m.group(1).startswith("GET /spawn-child")
    grandchild = int(child_pidfile.read_text())
    wait_for(lambda: not psutil.pid_exists(grandchild) or
             psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE, 5, what="grandchild killed")
    wait_for(lambda: len(worker_pids(v)) == 2, 5, what="worker respawned")


def test_max_requests_recycles_without_errors(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2", "--max-requests", "20",
                     "--max-requests-delta", "5")
    pids_seen: set[bytes] = set()

    def probe() -> bool:
        status, body = get(sock)
        pids_seen.add(body.split()[0])
        return status == 200

    result = BackgroundLoad(probe, threads=3, seconds=20, max_requests=200).start().join()
    assert result.failed == 0, result
    assert len(pids_seen) >= 6, pids_seen  # 200 requests / ~22 per worker
    assert "recycled: max-requests" in v.log_text()


def test_reload_on_rss_recycles_after_the_response(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--reload-on-rss", "80")
    status, body = get(sock, "/leak?mb=120")
    assert status == 200  # the response that crossed the limit is delivered whole
    wait_for_log(v, r"recycled: reload-on-rss")
    wait_for(lambda: get(sock)[1].split()[0] != body, 5, what="a new worker")


def test_crashed_worker_is_respawned_and_logged(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock)
    old = worker_pids(v)
    assert get(sock, "/crash")[0] == 0  # closed without a response
    wait_for_log(v, r"worker 1 \(pid \d+\) killed by signal 9 \(SIGKILL\) \(possible OOM\); respawning")
    wait_for(lambda: get(sock)[0] == 200, 5, what="respawned worker serving")
    assert worker_pids(v).isdisjoint(old)
    get(sock, "/exit")
    wait_for_log(v, r"exited with status 3; respawning")


def test_threads_serve_concurrently(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = str(sock_dir / "app.sock")
    v = start_vassal(procs, "--socket", sock, "--threads", "4")
    results: list[tuple[int, bytes]] = []
    path = f"/barrier?dir={tmp_path}&n=4"
    threads = [threading.Thread(target=lambda: results.append(get(sock, path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [(200, b"met")] * 4  # four requests met inside one single-process vassal
    assert len(worker_pids(v)) == 1


def _run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emperor.vassal", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=APPS)


def test_exit_statuses_tell_cannot_boot_from_crash(tmp_path: Path, sock_dir: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[uwsgi]\nsocket = /tmp/x.sock\nprocesses = two\n")
    r = _run("--ini", str(bad))
    assert r.returncode == 78 and "bad.ini:3: processes: bad value" in r.stderr
    bad.write_text("[uwsgi]\nsockett = /tmp/x.sock\n")  # a warning (uWSGI's rule), then no socket at all
    r = _run("--ini", str(bad))
    assert r.returncode == 78 and "bad.ini:2: sockett: unknown option, ignored (did you mean 'socket'?)" \
        in r.stderr and "no socket configured" in r.stderr
    r = _run("--socket", str(sock_dir / "a.sock"), "--module", "no_such_module_here")
    assert r.returncode == 22 and "No module named 'no_such_module_here'" in r.stderr
    assert not (sock_dir / "a.sock").exists()


def test_refuses_regular_file_and_live_socket(procs, tmp_path: Path, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    victim = sock_dir / "important.txt"
    victim.write_text("keep me")
    r = _run("--socket", str(victim), "--module", "testapp")
    assert r.returncode == 75 and "exists and is not a socket" in r.stderr
    assert victim.read_text() == "keep me"
    sock = str(sock_dir / "live.sock")
    start_vassal(procs, "--socket", sock)
    r = _run("--socket", sock, "--module", "testapp")
    assert r.returncode == 75 and "in use by a live server" in r.stderr
    assert get(sock)[0] == 200


def test_stale_socket_is_replaced_and_vacuum_checks_inode(procs, sock_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import socket as s

    sock = str(sock_dir / "app.sock")
    stale = s.socket(s.AF_UNIX)
    stale.bind(sock)
    stale.close()  # a socket file nobody listens on
    v = start_vassal(procs, "--socket", sock, "--vacuum")
    assert get(sock)[0] == 200
    os.unlink(sock)
    Path(sock).write_text("someone else's file now")
    v.popen.send_signal(signal.SIGTERM)
    assert v.wait(10) == 0
    assert Path(sock).read_text() == "someone else's file now"
    assert "no longer our socket" in v.log_text()


def test_logto_and_chmod_socket(procs, sock_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sock = sock_dir / "app.sock"
    logfile = tmp_path / "vassal.log"
    procs.start([sys.executable, "-m", "emperor.vassal", "--chdir", str(APPS), "--module", "testapp",
                 "--socket", str(sock), "--chmod-socket", "660", "--logto", str(logfile)], name="logto")
    wait_for(lambda: logfile.exists() and "ready: 1 worker" in logfile.read_text(), 10, what="log file")
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    assert get(str(sock), "/hello")[0] == 200
    wait_for(lambda: '"GET /hello HTTP/1.1" 200' in logfile.read_text(), 5, what="request line in logto")
