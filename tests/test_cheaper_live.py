"""Cheaper with real processes: a slow app (50 ms) behind nginx, on a Unix socket and on TCP.

A bounded burst from one worker (``cheaper = 1``, ``processes = 8``) must reach the ceiling,
fall back once the burst is over, and never fail a request, also while workers retire. Every
wait polls the vassal's stats against a deadline; nothing asserts on speed. The pure rules are
in tests/test_cheaper_policy.py (the busyness algorithm there, with an injected clock).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, free_port, http_get, wait_for
from harness.procs import Proc
from vassal_runner import start_vassal

pytestmark = pytest.mark.live  # real processes (README: Tests)

SLOW = "/sleep?s=0.05"


def stats(path: Path) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return json.loads(data)


def workers(path: Path) -> int:
    return int(stats(path)["cheaper"]["workers"])


def serve(procs: ProcGroup, nginx: Any, sock_dir: Path, kind: str, *opts: str) -> tuple[Proc, Nginx, Path]:
    st = sock_dir / "stats"
    if kind == "unix":
        addr: str = str(sock_dir / "app.sock")
        upstream: str | tuple[str, int] = addr
    else:
        port = free_port()
        addr, upstream = f"127.0.0.1:{port}", ("127.0.0.1", port)
    v = start_vassal(procs, "--socket", addr, "--processes", "8", "--cheaper", "1", "--stats", str(st),
                     "--disable-logging", "--listen", "256", *opts)
    ng = nginx()
    ng.add_uwsgi("/", upstream)
    ng.start()
    return v, ng, st


def ok(ng: Nginx) -> Any:
    def probe() -> bool:
        status, _, body = http_get(ng.url(SLOW), timeout=20)
        if status != 200:
            raise AssertionError(f"HTTP {status} {body[:80]!r}")
        return True

    return probe


def burst_and_back(v: Proc, ng: Nginx, st: Path, trickle_keep: int) -> dict[str, Any]:
    """Burst to 8 workers, then a trickle while the extra workers retire, then quiet until 1."""
    assert workers(st) == 1
    with BackgroundLoad(ok(ng), threads=16, seconds=60, max_requests=20_000) as burst:
        wait_for(lambda: workers(st) == 8, timeout=45, interval=0.05, what="8 workers under the burst")
    assert burst.result.failed == 0, burst.result.failures[:5]
    with BackgroundLoad(ok(ng), threads=1, seconds=60, max_requests=5_000) as trickle:
        wait_for(lambda: workers(st) <= trickle_keep, timeout=45, interval=0.05,
                 what=f"at most {trickle_keep} workers once the burst is over")
    assert trickle.result.failed == 0, trickle.result.failures[:5]
    wait_for(lambda: workers(st) == 1, timeout=45, interval=0.05, what="back to cheaper = 1")
    doc = stats(st)
    wait_for(lambda: len(stats(st)["workers"]) == 1, timeout=30, what="the retired workers exited")
    assert "upstream" not in ng.error_log(), ng.error_log()[-2000:]
    return doc["cheaper"]


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_spare_burst_grows_to_processes_and_falls_back(procs: ProcGroup, nginx: Any, sock_dir: Path,
                                                       kind: str) -> None:
    v, ng, st = serve(procs, nginx, sock_dir, kind)
    ch = burst_and_back(v, ng, st, trickle_keep=3)  # spare keeps one free worker next to the busy one
    assert (ch["algo"], ch["min"], ch["max"]) == ("spare", 1, 8)
    assert ch["spawns"] >= 7 and ch["cheaps"] >= 7, ch
    events = ch["events"]
    assert {e["event"] for e in events} == {"spawn", "cheap"}
    assert all(e["reason"] for e in events)
    assert any(e["event"] == "cheap" and e["workers"] > 1 for e in events), events  # retired together
    assert set(ch["spawns_by_rule"]) <= {"full-house", "overload"}


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_backlog_algorithm_reads_the_queue(procs: ProcGroup, nginx: Any, sock_dir: Path, kind: str) -> None:
    """``backlog`` grows from the listen queue, on a Unix socket too (uWSGI reads 0 there)."""
    v, ng, st = serve(procs, nginx, sock_dir, kind, "--cheaper-algo", "backlog", "--cheaper-overload", "2")
    ch = burst_and_back(v, ng, st, trickle_keep=2)
    assert ch["algo"] == "backlog"
    assert ch["spawns"] >= 7, ch
    assert "idle" in ch["cheaps_by_rule"], ch


def test_spare2_keeps_idle_workers(procs: ProcGroup, nginx: Any, sock_dir: Path) -> None:
    """``spare2`` spawns as soon as fewer than ``cheaper`` workers are idle."""
    v, ng, st = serve(procs, nginx, sock_dir, "unix", "--cheaper-algo", "spare2", "--cheaper-idle", "2")
    ch = burst_and_back(v, ng, st, trickle_keep=3)
    assert ch["algo"] == "spare2"
    assert "spare2" in ch["spawns_by_rule"], ch


def test_busyness_algorithm_live(procs: ProcGroup, nginx: Any, sock_dir: Path) -> None:
    """``busyness`` with a one-second window: the burst raises busyness above the maximum."""
    v, ng, st = serve(procs, nginx, sock_dir, "tcp", "--cheaper-algo", "busyness", "--cheaper-overload", "1",
                      "--cheaper-busyness-multiplier", "2")
    ch = burst_and_back(v, ng, st, trickle_keep=8)
    assert ch["algo"] == "busyness"
    assert ch["spawns"] >= 7 and ch["cheaps"] >= 7, ch


def test_scale_moves_the_ceiling(procs: ProcGroup, nginx: Any, sock_dir: Path) -> None:
    """SIGTTIN/SIGTTOU (as ``emperor ctl scale``) change the ceiling under cheaper, not the count."""
    import signal

    v, ng, st = serve(procs, nginx, sock_dir, "unix")
    v.popen.send_signal(signal.SIGTTOU)
    wait_for(lambda: stats(st)["cheaper"]["max"] == 7, timeout=10, what="the ceiling lowered to 7")
    assert workers(st) == 1
    with BackgroundLoad(ok(ng), threads=16, seconds=60, max_requests=20_000) as burst:
        wait_for(lambda: workers(st) == 7, timeout=45, interval=0.05, what="7 workers under the burst")
        assert len(stats(st)["workers"]) <= 7
    assert burst.result.failed == 0, burst.result.failures[:5]


def test_retiring_busy_workers_fails_no_request(procs: ProcGroup, nginx: Any, sock_dir: Path) -> None:
    """cheaper-rss-limit-hard = 1 byte retires a worker every second whatever it does, and the full
    house spawns one back: under load, busy workers are retired again and again (they finish their
    request; connections queued meanwhile go to the others)."""
    _, ng, st = serve(procs, nginx, sock_dir, "unix", "--cheaper-rss-limit-hard", "1")
    with BackgroundLoad(ok(ng), threads=12, seconds=90, max_requests=50_000) as load:
        wait_for(lambda: stats(st)["cheaper"]["cheaps_by_rule"].get("rss-hard", 0) >= 6, timeout=60,
                 interval=0.1, what="six workers retired by the RSS hard limit under load")
    assert load.result.failed == 0, load.result.failures[:5]
    assert load.result.ok > 0
    ch = stats(st)["cheaper"]
    assert ch["spawns_by_rule"].get("full-house", 0) >= 3, ch
    assert "upstream" not in ng.error_log(), ng.error_log()[-2000:]
