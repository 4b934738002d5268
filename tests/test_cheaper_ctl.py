"""Cheaper under an emperor: ``emperor ctl list/status`` show the worker counts the vassal reports
(WORKERS), and ``emperor ctl scale`` moves the ceiling (docs/autoscaling.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import BackgroundLoad, ProcGroup, request, wait_for, wsgi_vars
from test_control import ctl, ok, start
from test_emperor_rig import EventStream, Rig

pytestmark = pytest.mark.live  # real processes (README: Tests)


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def counts(endpoint: str) -> tuple[int, int, int]:
    v = ok(endpoint, "status", "app")["vassal"]
    return v["workers"], v["workers_min"], v["workers_max"]


def test_ctl_shows_counts_and_scale_moves_the_ceiling(rig: Rig, sock_dir: Path) -> None:
    rig.write("app", processes=6, extra="cheaper = 1\ndisable-logging = true")
    endpoint = start(rig, sock_dir, "app")
    stream = EventStream(endpoint)
    try:
        stream.connect(rig, "app.ini")
        _burst_scale_and_back(rig, endpoint)
        assert ("app.ini", "workers") in stream.events()
    finally:
        stream.stop()


def _burst_scale_and_back(rig: Rig, endpoint: str) -> None:
    wait_for(lambda: counts(endpoint) == (1, 1, 6), 15, what="status: 1 worker, cheaper 1 to 6")
    r = ctl(endpoint, "list")
    assert r.returncode == 0 and "WORKERS" in r.stdout and "1 (1-6)" in r.stdout, r.stdout

    def probe() -> bool:
        return request(str(rig.sock("app")), wsgi_vars(path="/sleep", query="s=0.05"), timeout=20)[0] == 200

    with BackgroundLoad(probe, threads=12, seconds=60, max_requests=20_000) as burst:
        wait_for(lambda: counts(endpoint)[0] == 6, 45, interval=0.1, what="6 workers in ctl status")
        assert "6 (1-6)" in ctl(endpoint, "list").stdout
        r = ctl(endpoint, "scale", "app", "3")  # under cheaper: the ceiling, and what runs
        assert r.returncode == 0, r
        assert r.stdout.startswith("scaled: app.ini: ceiling set to 3 worker(s); cheaper keeps 1 to 3, "
                                   "3 running now (master pid "), r.stdout
        wait_for(lambda: counts(endpoint) == (3, 1, 3), 15, interval=0.1, what="ceiling 3, 3 workers")
        wait_for(lambda: len(rig.worker_pids("app")) == 3, 15, what="the workers above 3 exited")
    assert burst.result.failed == 0, burst.result.failures[:5]
    wait_for(lambda: counts(endpoint) == (1, 1, 3), 45, interval=0.1, what="back to 1 after the burst")
    v = ok(endpoint, "status", "app")["vassal"]
    assert v["cheaper_spawns"] >= 5 and v["cheaper_cheaps"] >= 2, v
    assert "cheaper: spawned" in rig.log and "cheaper: retiring" in rig.log


# ---- the text of `emperor ctl scale` (pure: the reply dict the emperor sends) ---------------
@pytest.mark.parametrize(("counts", "text"), [
    ((1, 1, 8), "scaled: app.ini: ceiling set to 8 worker(s); cheaper keeps 1 to 8, 1 running now "
                "(master pid 42; until its next reload)"),
    ((8, 8, 8), "scaled: app.ini to 8 worker(s) (master pid 42; until its next reload)"),
    ((2, 8, 8), "scaled: app.ini to 8 worker(s), 2 running when it answered, the others starting "
                "(master pid 42; until its next reload)"),
])
def test_scale_text_says_the_ceiling_and_the_count(counts: tuple[int, int, int], text: str) -> None:
    from emperor.control.cli import _scaled

    cur, low, high = counts
    reply = {"scaled": "app.ini", "processes": 8, "pid": 42, "workers": cur, "workers_min": low,
             "workers_max": high}
    assert _scaled(reply) == text
    assert "now runs" not in _scaled(reply)
