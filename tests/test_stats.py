"""Vassal and emperor stats with real processes: the uwsgitop/uwsgi_exporter keys and types, the real
uwsgitop under a pseudo-terminal, /metrics, and readers that must not stall serving (row 17 of
reliability-security.md table 1.11).
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import ProcGroup, free_port, request, wait_for, wait_for_log, wait_for_socket, wsgi_vars
from test_emperor_rig import Rig
from vassal_runner import start_vassal, worker_pids

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

UWSGITOP = Path(sys.executable).parent / "uwsgitop"

# What uwsgitop and uwsgi_exporter read (reliability-security.md 3.7); all integers unless listed.
TOP_INT = ("listen_queue", "listen_queue_errors", "signal_queue", "load", "pid", "uid", "gid")
WORKER_INT = ("id", "pid", "accepting", "requests", "delta_requests", "exceptions", "harakiri_count",
              "signals", "signal_queue", "rss", "vsz", "running_time", "last_spawn", "respawn_count", "tx",
              "avg_rt")
SOCKET_INT = ("queue", "max_queue", "shared", "can_offload")
APP_INT = ("id", "modifier1", "startup_time", "requests", "exceptions")
CORE_INT = ("id", "requests", "static_requests", "routed_requests", "offloaded_requests", "write_errors",
            "read_errors", "in_request")


def fetch(addr: str | tuple[str, int], timeout: float = 5.0) -> bytes:
    fam = socket.AF_INET if isinstance(addr, tuple) else socket.AF_UNIX
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(addr)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def http(addr: tuple[str, int], path: str) -> tuple[str, bytes]:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode(), body


def ints(obj: dict, keys: tuple[str, ...], where: str) -> None:  # type: ignore[type-arg]
    for k in keys:
        assert k in obj, f"{where}: missing {k}"
        assert type(obj[k]) is int, f"{where}.{k} = {obj[k]!r} is not a JSON integer"


def check_vassal_doc(doc: dict) -> None:  # type: ignore[type-arg]
    assert isinstance(doc["version"], str) and isinstance(doc["cwd"], str)
    ints(doc, TOP_INT, "top")
    assert doc["sockets"] and doc["workers"]
    for s in doc["sockets"]:
        ints(s, SOCKET_INT, "sockets[]")
        assert isinstance(s["name"], str) and s["proto"] == "uwsgi"
    for w in doc["workers"]:
        ints(w, WORKER_INT, "workers[]")
        assert w["status"] in ("idle", "busy", "cheap", "pause") or w["status"].startswith("sig")
        for a in w["apps"]:
            ints(a, APP_INT, "apps[]")
        for c in w["cores"]:
            ints(c, CORE_INT, "cores[]")
            assert isinstance(c["vars"], list)


def get(sock: str, path: str = "/pid") -> int:
    status, _, _, _ = request(sock, wsgi_vars(path=path), timeout=10)
    return status


def test_vassal_stats_document_has_the_exporter_keys_as_integers(procs: ProcGroup, sock_dir: Path) -> None:
    sock, stats = str(sock_dir / "app.sock"), str(sock_dir / "stats.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2", "--stats", stats)
    for _ in range(10):
        assert get(sock) == 200
    doc = json.loads(fetch(stats))
    check_vassal_doc(doc)
    assert doc["pid"] == v.pid
    assert {w["pid"] for w in doc["workers"]} == worker_pids(v)
    assert sum(w["requests"] for w in doc["workers"]) == 10
    assert all(w["accepting"] == 1 for w in doc["workers"])
    assert any(w["avg_rt"] > 0 and w["running_time"] > 0 and w["tx"] > 0 for w in doc["workers"])
    assert all(w["rss"] > 0 and w["vsz"] >= w["rss"] for w in doc["workers"])
    assert os.stat(stats).st_mode & 0o777 == 0o600
    # delta_requests: since the previous document (documents are cached for 50 ms, hence the wait)
    wait_for(lambda: sum(w["delta_requests"] for w in json.loads(fetch(stats))["workers"]) == 0, 5,
             what="delta_requests back to 0")


def test_stats_http_and_prometheus_metrics(procs: ProcGroup, sock_dir: Path) -> None:
    pytest.importorskip("prometheus_client")
    sock, port = str(sock_dir / "app.sock"), free_port()
    start_vassal(procs, "--socket", sock, "--processes", "2", "--stats", f"127.0.0.1:{port}", "--stats-http")
    for _ in range(5):
        assert get(sock) == 200
    head, body = http(("127.0.0.1", port), "/")
    assert head.startswith("HTTP/1.0 200") and "application/json" in head
    check_vassal_doc(json.loads(body))
    head, body = http(("127.0.0.1", port), "/metrics")
    text = body.decode()
    assert head.startswith("HTTP/1.0 200") and "text/plain" in head
    assert 'emperor_request_duration_seconds_bucket{le="+Inf",vassal="vassal"} 5.0' in text, text
    assert 'emperor_request_duration_seconds_count{vassal="vassal"} 5.0' in text
    for name in ("emperor_worker_requests_total", "emperor_busy_workers", "emperor_listen_queue",
                 "emperor_worker_respawns_total", "emperor_worker_exceptions_total"):
        assert name in text, name


def run_uwsgitop(addr: str, expect: list[str], timeout: float = 15.0) -> str:
    """Run the real uwsgitop under a pseudo-terminal until every string of ``expect`` is on screen."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update(TERM="xterm", LINES="40", COLUMNS="200")
        os.execv(sys.executable, [sys.executable, str(UWSGITOP), "--frequency", "1", addr])
    screen = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    break
            text = screen.decode("utf-8", "replace")
            if "Traceback" in text or all(e in text for e in expect):
                break
        os.write(fd, b"q")
        wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid, 5, what="uwsgitop to quit")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    return screen.decode("utf-8", "replace")


@pytest.mark.skipif(not UWSGITOP.exists(), reason="uwsgitop is not installed (pip install -e '.[test]')")
def test_real_uwsgitop_shows_our_workers(procs: ProcGroup, sock_dir: Path) -> None:
    sock, stats = str(sock_dir / "app.sock"), str(sock_dir / "stats.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "3", "--stats", stats)
    assert get(sock) == 200
    pids = [str(p) for p in worker_pids(v)]
    screen = run_uwsgitop(stats, [*pids, f"masterpid: {v.pid}"])
    assert "Traceback" not in screen and "unable to get" not in screen, screen[-2000:]
    for p in pids:
        assert p in screen, (p, screen[-2000:])


def test_stuck_and_parallel_stats_readers_do_not_stall_serving(procs: ProcGroup, sock_dir: Path) -> None:
    """100 parallel readers plus one that connects and never reads, one that never sends its
    HTTP request: requests keep their latency (a wide "not stalled" bound, not a benchmark)."""
    sock, stats = str(sock_dir / "app.sock"), str(sock_dir / "stats.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2", "--stats", stats, "--socket-timeout", "2")

    def probe(n: int) -> list[float]:
        out = []
        for _ in range(n):
            t = time.monotonic()
            assert get(sock) == 200
            out.append(time.monotonic() - t)
        return out

    before = statistics.median(probe(40))
    stuck = socket.socket(socket.AF_UNIX)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stuck.connect(stats)  # never reads
    stop = threading.Event()
    results = {"ok": 0, "closed": 0, "bad": 0}
    lock = threading.Lock()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = fetch(stats, timeout=10)
                key = "ok" if data and json.loads(data)["pid"] == v.pid else "closed"
            except (OSError, ValueError):
                key = "bad"
            with lock:
                results[key] += 1

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(100)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: results["ok"] >= 100, 20, what="stats readers being served")
        during = statistics.median(probe(40))
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        stuck.close()
    assert results["bad"] == 0, results
    assert during < max(20 * before, 0.25), (before, during)
    assert v.alive() and get(sock) == 200
    check_vassal_doc(json.loads(fetch(stats)))


def test_emperor_stats_and_uwsgitop_on_it(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> None:
    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    port = free_port()
    rig.enable("app")
    rig.start(extra=f"emperor-stats = 127.0.0.1:{port}\nemperor-control = off")
    rig.serving("app")
    wait_for_socket(("127.0.0.1", port))
    doc = wait_for(lambda: (d := json.loads(fetch(("127.0.0.1", port))))["vassals"][0]["state"] == "loyal"
                   and d, 10, what="the vassal loyal in the emperor's stats")
    assert doc["emperor"] == [str(rig.enabled)] and doc["emperor_tyrant"] == 0
    assert type(doc["throttle_level"]) is int and doc["blacklist"] == []
    (v,) = doc["vassals"]
    assert v["id"] == "app.ini" and v["pid"] == rig.vassal_pid("app")
    assert v["loyal"] == 1 and v["ready"] == 1 and v["last_error"] == ""
    for key in ("pid", "born", "last_mod", "loyal", "ready", "accepting", "first_run", "last_run", "cursed",
                "zerg", "uid", "gid", "respawns", "throttle_level"):
        assert type(v[key]) is int, key
    if UWSGITOP.exists():
        screen = run_uwsgitop(f"127.0.0.1:{port}", ["app.ini", str(v["pid"])])
        assert "Traceback" not in screen and "app.ini" in screen, screen[-2000:]


def test_stats_server_never_blocks_on_a_reader_that_does_not_read(sock_dir: Path) -> None:
    """A 4 MB document and a reader that never reads: service() returns at once, the pending
    write is dropped at the deadline, and the cap on pending readers closes extra connections."""
    from emperor.statsserver import StatsServer

    now = [0.0]
    big = b"x" * (4 << 20)
    server = StatsServer(str(sock_dir / "s.sock"), lambda: big, timeout=5.0, max_clients=3,
                         clock=lambda: now[0])
    clients = []
    try:
        for _ in range(5):
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(sock_dir / "s.sock"))
            clients.append(c)
        t = time.monotonic()
        for _ in range(20):
            server.service()
        assert time.monotonic() - t < 2.0
        assert len(server.clients) == 3 and server.refused == 2  # two got an immediate EOF
        now[0] = 6.0
        server.expire()
        assert not server.clients
    finally:
        for c in clients:
            c.close()
        server.close()
    assert not (sock_dir / "s.sock").exists()


# ---- issue 8, item 16: a stats address that cannot be served is a boot error --------------


def test_a_vassal_whose_stats_address_is_busy_does_not_boot(procs: ProcGroup, sock_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        sock = sock_dir / "app.sock"
        proc = start_vassal(procs, "--socket", str(sock), "--stats", f"127.0.0.1:{port}", ready=False)
        assert proc.wait(20) == 75  # Exit.SOCKET, as for a busy socket
    assert f"stats = 127.0.0.1:{port}" in proc.log_text() and "ready:" not in proc.log_text()
    assert not sock.exists()  # its own socket was removed again


def test_an_emperor_whose_stats_address_is_busy_does_not_start(tmp_path: Path, sock_dir: Path,
                                                                procs: ProcGroup) -> None:
    rig = Rig(tmp_path / "vassals", sock_dir, procs)
    rig.enable("app")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = rig.start(extra=f"emperor-stats = 127.0.0.1:{port}", wait=False)
        assert proc.wait(20) == 1
        assert f"cannot start: emperor-stats = 127.0.0.1:{port}" in rig.log
        assert "spawned" not in rig.log  # no vassal was started
        # daemonized: the command that started it reports the failure (an init script sees it)
        log = tmp_path / "daemon.log"
        ini = tmp_path / "daemon.ini"
        ini.write_text(f"[uwsgi]\nemperor = {rig.enabled}\nemperor-stats = 127.0.0.1:{port}\n"
                       f"daemonize = {log}\nemperor-control = off\n")
        r = subprocess.run([sys.executable, "-m", "emperor", "--ini", str(ini)], capture_output=True,
                           timeout=30)
        assert r.returncode == 1
        assert "cannot start: emperor-stats" in log.read_text()


def test_stats_follow_a_scale_and_a_reload_restores_the_ini_count(procs: ProcGroup, sock_dir: Path) -> None:
    """A scale is runtime only: the master keeps the new count (its stats show it, as the ``processes``
    key and the worker table), and a reload goes back to the ini's ``processes``."""
    sock, stats = str(sock_dir / "app.sock"), str(sock_dir / "stats.sock")
    v = start_vassal(procs, "--socket", sock, "--processes", "2", "--stats", stats)
    assert json.loads(fetch(stats))["processes"] == 2
    os.kill(v.pid, signal.SIGTTIN)
    wait_for(lambda: len(worker_pids(v)) == 3, 10, what="a third worker after SIGTTIN")
    wait_for(lambda: json.loads(fetch(stats))["processes"] == 3, 5, what="processes = 3 in the stats")
    mark = v.log_size()
    os.kill(v.pid, signal.SIGHUP)
    wait_for_log(v, r"ready: 2 worker", after=mark, timeout=15)
    wait_for(lambda: len(worker_pids(v)) == 2, 10, what="the ini's two workers after the reload")
    wait_for(lambda: json.loads(fetch(stats))["processes"] == 2, 5, what="processes = 2 after the reload",
             ignore=(OSError,))
    assert get(sock) == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the vassal as another user")
def test_boot_failure_after_the_stats_socket_opened_exits_cleanly(sock_dir: Path, tmp_path: Path) -> None:
    """The stats server is open before the final chdir as the user; a failure there must exit with
    its status (78, a configuration error), not with a traceback from closing a server the loop
    never registered."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # root's: nobody cannot enter it
    r = subprocess.run([sys.executable, "-m", "emperor.vassal", "--socket", str(sock_dir / "a.sock"),
                        "--stats", str(sock_dir / "stats"), "--chdir", str(private), "--uid", "nobody",
                        "--module", "testapp"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 78, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"chdir {private}" in r.stderr
