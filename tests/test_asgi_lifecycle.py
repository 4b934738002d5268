"""ASGI vassals over their life: lifespan, harakiri on a blocked loop, recycling, reload, stop.

Each test starts its own vassal (tests/apps/asgiapp.py) and talks uwsgi to its socket, or
runs it under a real emperor.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from harness import (
    BackgroundLoad,
    ProcGroup,
    http_get,
    pack,
    request,
    uwsgi_params_directive,
    wait_for,
    wait_for_log,
)
from test_asgi import start_asgi, stats_doc
from vassal_runner import APPS, worker_pids

pytestmark = pytest.mark.live  # starts real processes (README: Tests)


def get(sock: str, path: str, query: str = "", timeout: float = 10.0) -> tuple[int, bytes]:
    status, _, body, _ = request(sock, [("REQUEST_METHOD", "GET"), ("PATH_INFO", path),
                                        ("QUERY_STRING", query)], timeout=timeout)
    return status, body


def in_flight(stats: Path) -> int:
    """Requests in flight over all workers, from the vassal's stats server."""
    return sum(w["in_flight"] for w in stats_doc(stats)["workers"])


def events(path: Path, word: str) -> list[int]:
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines() if line.split()[0] == word]


def test_lifespan_startup_state_and_shutdown_per_worker(procs: ProcGroup, sock_dir: Path,
                                                         tmp_path: Path) -> None:
    log = tmp_path / "events"
    sock = str(sock_dir / "a.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "2", env={"ASGI_EVENTS": str(log)})
    workers = worker_pids(proc)
    assert sorted(events(log, "startup")) == sorted(workers)  # before "ready": every worker started
    status, body = get(sock, "/state")
    assert status == 200 and json.loads(body)["started_by"] in workers  # lifespan state, per worker
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0
    assert sorted(events(log, "shutdown")) == sorted(workers)


def test_lifespan_off_and_auto_without_support(procs: ProcGroup, sock_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "events"
    sock = str(sock_dir / "off.sock")
    start_asgi(procs, "--socket", sock, "--lifespan", "off", env={"ASGI_EVENTS": str(log)})
    assert get(sock, "/")[0] == 200 and events(log, "startup") == []
    sock2 = str(sock_dir / "auto.sock")
    proc = start_asgi(procs, "--socket", sock2, app="asgiapp:http_only", name="auto")
    assert get(sock2, "/") == (200, b"http only\n")
    assert "does not support ASGI lifespan" in proc.log_text()
    proc3 = start_asgi(procs, "--socket", str(sock_dir / "on.sock"), "--lifespan", "on",
                       app="asgiapp:http_only", name="on", ready=False)
    assert proc3.wait(15) == 22
    assert "lifespan startup failed" in proc3.log_text()


def test_failing_startup_exits_cannot_boot_with_the_traceback(procs: ProcGroup, sock_dir: Path) -> None:
    t0 = time.monotonic()
    proc = start_asgi(procs, "--socket", str(sock_dir / "f.sock"), "--processes", "2", ready=False,
                      env={"ASGI_FAIL_STARTUP": "1"})
    assert proc.wait(15) == 22
    took = time.monotonic() - t0
    text = proc.log_text()
    assert "Traceback" in text and "RuntimeError: database unreachable" in text, text
    assert "ready" not in text
    assert took < 5, took  # python start-up and import included; the failure itself is immediate


def test_failing_startup_is_throttled_by_the_emperor(procs: ProcGroup, sock_dir: Path,
                                                     tmp_path: Path) -> None:
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    (vassals / "bad.ini").write_text(f"[uwsgi]\nsocket = {sock_dir}/bad.sock\nchdir = {APPS}\n"
                                     "asgi = asgiapp:app\nenv = ASGI_FAIL_STARTUP=1\n")
    ini = tmp_path / "emperor.ini"
    ini.write_text(f"[uwsgi]\nemperor = {vassals}\nemperor-control = off\n")
    emperor = procs.start([sys.executable, "-m", "emperor", "--ini", str(ini)], name="emperor")
    wait_for_log(emperor, r"RuntimeError: database unreachable", timeout=20)
    wait_for_log(emperor, r"throttled.*bad\.ini|bad\.ini.*throttled|status 22", timeout=20)
    m = wait_for_log(emperor, r"next attempt in ([\d.]+) s", timeout=20)
    assert float(m.group(1)) >= 1


def test_harakiri_kills_a_worker_whose_loop_is_blocked(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "h.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "1", "--harakiri", "2")
    [old] = worker_pids(proc)
    t0 = time.monotonic()
    status, _ = get(sock, "/block", "s=60", timeout=30)
    assert status == 0  # the worker died with the request: closed without an answer
    assert time.monotonic() - t0 < 10
    wait_for_log(proc, r"HARAKIRI: worker 1 .*GET /block", timeout=5)
    wait_for(lambda: worker_pids(proc) and old not in worker_pids(proc), 10, what="a new worker")
    wait_for(lambda: get(sock, "/")[0] == 200, 10, what="serving again", ignore=(OSError,))


def test_harakiri_spares_slow_requests_that_await(procs: ProcGroup, sock_dir: Path) -> None:
    """A request that awaits for longer than harakiri does not block the loop: no kill."""
    sock = str(sock_dir / "s.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "1", "--harakiri", "1")
    status, body = get(sock, "/sleep", "s=3", timeout=10)
    assert status == 200, body
    assert "HARAKIRI" not in proc.log_text()


def test_max_requests_recycles_between_requests(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "m.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "1", "--max-requests", "3",
                      "--max-requests-delta", "0")
    [first] = worker_pids(proc)
    for _ in range(7):  # connections made while the worker is replaced wait in the listen queue
        assert get(sock, "/")[0] == 200
    wait_for_log(proc, r"recycled: max-requests \(3 requests\)")
    assert first not in worker_pids(proc)
    served = re.findall(r'"GET / -" 200 .* pid=(\d+)', proc.log_text())
    assert len(served) == 7 and max(served.count(p) for p in served) == 3, served  # none took a 4th


def replaced(stats: Path, served_by: int) -> None:
    """Wait until the worker that served the last request (and recycles) has been replaced by one
    that accepts. (A test that stops the vassal while a worker is being forked can lose the SIGTERM
    to that worker: see the report on the fork window in emperor/vassal/master.py.)"""
    def settled() -> bool:
        workers = stats_doc(stats)["workers"]
        return bool(workers) and all(w["accepting"] and w["pid"] != served_by for w in workers)

    wait_for(settled, 10, what=f"worker pid {served_by} replaced by an accepting one")


def test_reload_on_rss_recycles_after_the_request(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "rss.sock")
    stats = sock_dir / "stats.sock"
    proc = start_asgi(procs, "--socket", sock, "--processes", "1", "--stats", str(stats),
                      "--reload-on-rss", "1")  # always over 1 MB
    status, body = get(sock, "/scope")
    assert status == 200
    wait_for_log(proc, r"worker 1 \(pid \d+\) recycled: reload-on-rss \(\d+ MB > 1 MB\)")
    replaced(stats, json.loads(body)["pid"])


def test_recycle_is_bounded_by_reload_mercy(procs: ProcGroup, sock_dir: Path) -> None:
    """max-requests while a request streams for ever: the worker stops accepting, and after
    reload-mercy it closes the stream and exits, so the master can replace it."""
    sock = str(sock_dir / "b.sock")
    stats = sock_dir / "stats.sock"
    proc = start_asgi(procs, "--socket", sock, "--processes", "1", "--max-requests", "1", "--stats",
                      str(stats), "--max-requests-delta", "0", "--reload-mercy", "2")
    [first] = worker_pids(proc)
    endless = socket.socket(socket.AF_UNIX)
    endless.connect(sock)
    endless.sendall(pack([("REQUEST_METHOD", "GET"), ("PATH_INFO", "/stream"),
                          ("QUERY_STRING", "n=1000")]))
    assert endless.recv(100).startswith(b"HTTP/1.1 200")
    assert get(sock, "/")[0] == 200  # the first to end (requests count when they end): now recycling
    wait_for_log(proc, r"1 request\(s\) still in flight after reload-mercy", timeout=10)
    wait_for(lambda: worker_pids(proc) and first not in worker_pids(proc), 10, what="a new worker")
    status, body = get(sock, "/scope")
    assert status == 200
    endless.close()
    replaced(stats, json.loads(body)["pid"])  # it recycles after this request too


def test_graceful_reload_and_stop_finish_in_flight_requests(procs: ProcGroup, sock_dir: Path,
                                                            tmp_path: Path) -> None:
    log = tmp_path / "events"
    sock = str(sock_dir / "r.sock")
    stats = sock_dir / "stats.sock"
    proc = start_asgi(procs, "--socket", sock, "--processes", "2", "--stats", str(stats),
                      env={"ASGI_EVENTS": str(log)})
    old = worker_pids(proc)
    results: list[tuple[int, bytes]] = []

    def slow() -> None:
        results.append(get(sock, "/sleep", "s=1.5", timeout=20))

    threads = [threading.Thread(target=slow) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: in_flight(stats) == 6, 10, what="6 requests in flight (stats)")
    mark = proc.log_size()
    os.kill(proc.pid, signal.SIGHUP)
    wait_for_log(proc, r"ready: 2 worker", after=mark, timeout=15)
    for t in threads:
        t.join(20)
    assert [s for s, _ in results] == [200] * 6, results
    wait_for(lambda: not (worker_pids(proc) & old), 10, what="the old workers to exit")
    wait_for(lambda: sorted(events(log, "shutdown")) == sorted(old), 10,
             what="the old workers' lifespan shutdown")
    # graceful stop with requests in flight
    threads = [threading.Thread(target=slow) for _ in range(4)]
    results.clear()
    for t in threads:
        t.start()
    wait_for(lambda: in_flight(stats) == 4, 10, what="4 requests in flight (stats)")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(15) == 0
    for t in threads:
        t.join(20)
    assert [s for s, _ in results] == [200] * 4, results


def test_reload_under_load_through_nginx_fails_nothing(procs: ProcGroup, sock_dir: Path,
                                                      nginx: Any) -> None:
    sock = str(sock_dir / "u.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "2")
    ng = nginx()
    ng.add_uwsgi("/", sock)
    ng.start()
    old = worker_pids(proc)

    def probe() -> None:
        status, _, body = http_get(ng.url("/sleep?s=0.05"))
        if status != 200:
            raise AssertionError(f"HTTP {status} {body[:80]!r}")

    with BackgroundLoad(probe, threads=8, seconds=30) as load:
        wait_for(lambda: load.result.ok >= 50, 10, what="load before the reload")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: worker_pids(proc) and not (worker_pids(proc) & old), 15, what="new workers")
        settled = load.result.ok
        wait_for(lambda: load.result.ok >= settled + 50, 10, what="load served by the new workers")
    assert load.result.failed == 0 and load.result.ok > 100, load.result


@pytest.mark.parametrize("loop,module", [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_asgi_loop_choice(procs: ProcGroup, sock_dir: Path, loop: str, module: str) -> None:
    sock = str(sock_dir / "l.sock")
    start_asgi(procs, "--socket", sock, "--asgi-loop", loop)
    status, body = get(sock, "/scope")
    assert status == 200 and json.loads(body)["loop"].split(".")[0] == module


def test_lazy_apps_imports_in_each_worker(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "z.sock")
    proc = start_asgi(procs, "--socket", sock, "--processes", "2", "--lazy-apps")
    assert get(sock, "/") == (200, b"hello asgi\n")
    bad = start_asgi(procs, "--socket", str(sock_dir / "zb.sock"), "--lazy-apps", app="testapp:application",
                     name="lazy-wsgi", ready=False)
    assert bad.wait(15) == 22  # the kind check runs in the worker too
    assert "is a WSGI application" in bad.log_text()
    assert proc.alive()


def test_need_app_false_serves_500(procs: ProcGroup, sock_dir: Path) -> None:
    sock = str(sock_dir / "n.sock")
    start_asgi(procs, "--socket", sock, "--need-app", "false", app="no_such_module:app")
    status, body = get(sock, "/")
    assert status == 500 and b"application not loaded" in body


def test_example_asgi_vassal_under_the_emperor(procs: ProcGroup, sock_dir: Path, tmp_path: Path,
                                              nginx: Any) -> None:
    """vassals-examples/apps-available/asgi.ini under an emperor, behind nginx as in the demo's
    nginx-site.conf (/asgi, SCRIPT_NAME + modifier1 30): hello and the streamed clock."""
    examples = Path(__file__).resolve().parent.parent / "vassals-examples"
    shutil.copytree(examples / "apps", tmp_path / "apps")
    (tmp_path / "apps-available").mkdir()
    (tmp_path / "apps-enabled").mkdir()
    ini = (examples / "apps-available" / "asgi.ini").read_text().replace("/tmp/emperor-demo", str(sock_dir))
    (tmp_path / "apps-available" / "asgi.ini").write_text(ini)
    (tmp_path / "apps-enabled" / "asgi.ini").symlink_to("../apps-available/asgi.ini")
    (tmp_path / "emperor.ini").write_text(f"[uwsgi]\nemperor = {tmp_path}/apps-enabled\n"
                                          "emperor-control = off\n")
    site = (examples / "nginx-site.conf").read_text()
    block = re.search(r"location /asgi \{(.*?)\}", site, re.S)
    assert block is not None
    ng = nginx()
    ng.add_location("/asgi", block.group(1).replace("/tmp/emperor-demo", str(sock_dir))
                    .replace("include uwsgi_params;", uwsgi_params_directive()))  # nginx -p is ours
    ng.start()
    emperor = procs.start([sys.executable, "-m", "emperor", "--ini", str(tmp_path / "emperor.ini")],
                          name="emperor")
    wait_for_log(emperor, r"ready: 'asgi\.ini'", timeout=20)
    status, _, body = http_get(ng.url("/asgi/"))
    assert status == 200 and body.startswith(b"Hello from ASGI! (worker up since "), body
    assert b"since ?" not in body  # the lifespan ran
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", ng.port), timeout=10) as s:
        s.sendall(b"GET /asgi/clock HTTP/1.0\r\nHost: x\r\n\r\n")
        first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 200") and time.monotonic() - t0 < 1.0  # not after 5 s
