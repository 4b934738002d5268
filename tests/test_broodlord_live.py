"""Broodlord with real processes: an emperor, slow one-worker vassals behind nginx, bursts.

Faults table rows 12-15 (reliability-security.md §2.4): zergs are lent within about 2 s
of the backlog crossing the threshold, the backlog falls, no request fails while zergs
come and go, idle zergs are reclaimed, the pool cap holds with two overloaded vassals,
a SIGKILLed zerg loses at most its in-flight requests and its slot returns, a parent
crash does not crash-loop on "address in use", and removing the parent's ini stops its
zergs. Every wait polls against a deadline; every load is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, free_port, http_get, wait_for
from test_backlog import ss_recvq
from test_emperor_rig import EventStream, Rig

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

SLEEP = "/sleep?s=0.05"
THRESHOLD = 4
IDLE = 2


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def vassal_ini(rig: Rig, name: str, addr: str, zerg_processes: int = 4) -> str:
    zsock = rig.socks / f"{name}-zerg.sock"
    common = f"wsgi-file = {rig.app}\nenv = APP_TAG={name}\ndisable-logging = true\n"
    return (f"[uwsgi]\nsocket = {addr}\nprocesses = 1\n{common}"
            f"vassal-sos-backlog = {THRESHOLD}\nzerg-server = {zsock}\n\n"
            f"[zerg]\nzerg = {zsock}\nprocesses = {zerg_processes}\n{common}"
            f"idle = {IDLE}\ndie-on-idle = true\n")


def add_vassal(rig: Rig, ng: Nginx, name: str, kind: str, **kw: int) -> str:
    addr = f"127.0.0.1:{free_port()}" if kind == "tcp" else str(rig.sock(name))
    (rig.avail / f"{name}.ini").write_text(vassal_ini(rig, name, addr, **kw))
    ng.add_uwsgi(f"/{name}/", addr if kind != "tcp" else ("127.0.0.1", int(addr.rsplit(":", 1)[1])))
    return addr


def zerg_pids(rig: Rig, parent: str | None = None) -> list[int]:
    """Live zerg masters (children of the emperor started from a [zerg] section)."""
    assert rig.proc is not None
    out = []
    try:
        kids = psutil.Process(rig.proc.pid).children()
    except psutil.Error:
        return []
    for k in kids:
        try:
            line = " ".join(k.cmdline())
            if ":zerg" in line and k.status() != psutil.STATUS_ZOMBIE and (
                    parent is None or f"{parent}.ini:zerg" in line):
                out.append(k.pid)
        except psutil.Error:
            continue
    return out


def ok_through(ng: Nginx, path: str) -> Callable[[], bool]:
    def probe() -> bool:
        status, _, body = http_get(ng.url(path), timeout=15)
        if status != 200:
            raise AssertionError(f"{path}: HTTP {status} {body[:80]!r}")
        return True

    return probe


class Sampler:
    """Every 0.1 s: the listen queue as ``ss`` sees it and the zergs alive (per parent)."""

    def __init__(self, rig: Rig, addrs: dict[str, str]) -> None:
        self.rig, self.addrs = rig, addrs
        self.rows: list[tuple[float, dict[str, int | None], dict[str, int]]] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            queues = {n: ss_recvq(a) for n, a in self.addrs.items()}
            zergs = {n: len(zerg_pids(self.rig, n)) for n in self.addrs}
            self.rows.append((time.monotonic() - self.t0, queues, zergs))
            self._stop.wait(0.1)

    def max_total_zergs(self) -> int:
        return max((sum(z.values()) for _, _, z in self.rows), default=0)

    def last_queue(self, name: str) -> int | None:
        return self.rows[-1][1][name] if self.rows else None

    def first_cross(self, name: str) -> float | None:
        return next((t for t, q, _ in self.rows if (q[name] or 0) >= THRESHOLD), None)


@contextmanager
def sampling(rig: Rig, addrs: dict[str, str]) -> Iterator[Sampler]:
    s = Sampler(rig, addrs)
    s._thread.start()
    try:
        yield s
    finally:
        s._stop.set()
        s._thread.join(2)


def served_by(ng: Nginx, name: str, n: int) -> set[str]:
    pids = set()
    for _ in range(n):
        status, _, body = http_get(ng.url(f"/{name}/"), timeout=10)
        if status == 200:
            pids.add(body.decode().split()[-1])
    return pids


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_burst_lends_zergs_and_idle_reclaims_them(rig: Rig, nginx: Callable[..., Nginx], kind: str) -> None:
    """Rows 12-13 on TCP and on a Unix socket (where uWSGI's broodlord reads a backlog of 0)."""
    ng = nginx()
    addr = add_vassal(rig, ng, "app", kind)
    ng.start()
    rig.enable("app")
    endpoint = f"ipc://{rig.socks}/ctl/control"
    (rig.socks / "ctl").mkdir(mode=0o700)
    rig.start(f"emperor-broodlord = 3\nemperor-control = {endpoint}")
    wait_for(lambda: http_get(ng.url("/app/"))[0] == 200, 20, what="app serving", ignore=(OSError,))
    assert zerg_pids(rig) == []
    stream = EventStream(endpoint)
    try:
        stream.connect(rig, "app.ini")
        _burst_and_reclaim(rig, ng, addr, stream)
    finally:
        stream.stop()
    assert served_by(ng, "app", 5)  # the vassal keeps serving alone
    assert os.path.exists(rig.socks / "app-zerg.sock")
    if kind == "unix":
        assert rig.sock("app").exists()  # the zergs never removed their parent's socket


def _burst_and_reclaim(rig: Rig, ng: Nginx, addr: str, stream: EventStream) -> None:

    with sampling(rig, {"app": addr}) as s:
        mark = rig.mark()
        t_load = time.monotonic() - s.t0
        with BackgroundLoad(ok_through(ng, f"/app{SLEEP}"), threads=12, seconds=25) as load:
            rig.wait_log(r"asking the emperor for reinforcements \(backlog \d+\)", after=mark, timeout=5)
            rig.wait_log(r"lent: zerg 1/3 to 'app.ini' \(backlog \d+\)", after=mark, timeout=5)
            t_lent = time.monotonic() - s.t0
            rig.wait_log(r"zerg ready: 'app.ini:zerg#\d+'", after=mark, timeout=10)
            # the backlog falls below the threshold once enough zergs serve the same socket
            wait_for(lambda: (q := s.last_queue("app")) is not None and q < THRESHOLD, 15,
                     what="the backlog to fall below the threshold")
            fell = time.monotonic() - s.t0
            wait_for(lambda: load.result.ok >= 100, 15, what="load served meanwhile")
        assert load.result.failed == 0, load.result
        cross = s.first_cross("app")
        assert cross is not None and cross >= t_load - 0.2
        assert t_lent - cross < 2.5, (cross, t_lent)  # about 2 s: one probe interval + the emperor
        assert s.max_total_zergs() <= 3
        peak = max(q["app"] or 0 for t, q, _ in s.rows if t <= fell)
        assert peak >= THRESHOLD and (s.last_queue("app") or 0) < THRESHOLD
        lent = rig.count(r"lent: zerg", mark)
        assert 1 <= lent <= 3

        # silence: every zerg leaves after `idle` s and the count returns to 0
        wait_for(lambda: not zerg_pids(rig), IDLE + 10, what="the zergs to be reclaimed")
        wait_for(lambda: rig.count(r"gone: zerg", mark) == lent, 5, what="every zerg gone")
        reclaimed = r"reclaimed: zerg 'app.ini:zerg#\d+' of 'app.ini' \(pid \d+\), idle \d+ s"
        assert rig.count(reclaimed, mark) == lent
        assert rig.count(r"lost: zerg", mark) == 0
        assert re.search(r"gone: zerg .* \(pool 0/3\)", rig.log)
        # the control plane's event stream says the same: one "lend" and one "reclaim" per zerg
        wait_for(lambda: stream.events().count(("app.ini", "reclaim")) == lent, 5, what="reclaim events")
        assert stream.events().count(("app.ini", "lend")) == lent


def test_pool_cap_holds_with_two_overloaded_vassals(rig: Rig, nginx: Callable[..., Nginx]) -> None:
    """Rows 12 and 15: two vassals over the threshold share a pool of 2 (one each), never more."""
    ng = nginx()
    addrs = {name: add_vassal(rig, ng, name, "unix", zerg_processes=1) for name in ("a", "b")}
    ng.start()
    for name in addrs:
        rig.enable(name)
    rig.start("emperor-broodlord = 2")
    for name in addrs:
        wait_for(lambda n=name: http_get(ng.url(f"/{n}/"))[0] == 200, 20, what=f"{name} serving",
                 ignore=(OSError,))
    with sampling(rig, addrs) as s:
        mark = rig.mark()
        with BackgroundLoad(ok_through(ng, f"/a{SLEEP}"), threads=10, seconds=20) as la, \
                BackgroundLoad(ok_through(ng, f"/b{SLEEP}"), threads=10, seconds=20) as lb:
            wait_for(lambda: len(zerg_pids(rig, "a")) == 1 and len(zerg_pids(rig, "b")) == 1, 10,
                     what="one zerg per vassal")
            t_full = time.monotonic()
            # both keep asking (1 + 1 processes for 10 clients each): the pool stays full, shared
            wait_for(lambda: time.monotonic() - t_full > 3, 5, interval=0.2, what="3 s at full pool")
        assert la.result.failed == 0 and lb.result.failed == 0, (la.result, lb.result)
        assert s.max_total_zergs() <= 2, s.max_total_zergs()
        assert rig.count(r"lent: zerg", mark) == 2  # no flip-flop: no zerg taken back and re-lent
        assert rig.count(r"stopping: zerg", mark) == 0
        wait_for(lambda: not zerg_pids(rig), IDLE + 10, what="the zergs to be reclaimed")


def test_sigkill_zerg_parent_crash_and_removal(rig: Rig, nginx: Callable[..., Nginx]) -> None:
    """Row 14: a SIGKILLed zerg loses at most its in-flight request and its slot returns. A
    parent crash while zergs hold its TCP port: zergs stopped, parent respawned without an
    "address in use" loop. Removing the parent's ini stops its zergs (row 16)."""
    ng = nginx()
    add_vassal(rig, ng, "app", "tcp", zerg_processes=1)
    ng.start()
    rig.enable("app")
    rig.start("emperor-broodlord = 2")
    wait_for(lambda: http_get(ng.url("/app/"))[0] == 200, 20, what="app serving", ignore=(OSError,))

    mark = rig.mark()
    with BackgroundLoad(ok_through(ng, f"/app{SLEEP}"), threads=12, seconds=30) as load:
        wait_for(lambda: len(zerg_pids(rig)) == 2, 10, what="two zergs")
        rig.wait_log(r"zerg ready: .*zerg#2", after=mark)
        victim = zerg_pids(rig)[0]
        before = load.result.failed
        os.kill(victim, signal.SIGKILL)
        rig.wait_log(rf"lost: zerg '.*' of 'app.ini' \(pid {victim}\) killed by SIGKILL.*its slot is free",
                     after=mark)
        # the slot returns: the backlog is still high, so a new zerg is lent into it
        wait_for(lambda: len(zerg_pids(rig)) == 2 and victim not in zerg_pids(rig), 10,
                 what="the slot lent again")
        lost = load.result.failed - before
        assert lost <= 1, load.result  # at most the request the zerg's one worker had in flight

        # parent crash while its zergs hold the TCP port: zergs stop first, the respawn binds
        parent = rig.vassal_pid("app")
        assert parent
        m2 = rig.mark()
        os.kill(parent, signal.SIGKILL)
        rig.wait_log(r"stopping: zerg .* \(its vassal exited", after=m2)
        rig.wait_log(r"ready: 'app.ini'", after=m2, timeout=20)
    assert rig.count(r"Address already in use|cannot bind", m2) == 0, rig.log
    assert rig.count(r"throttled: 'app.ini'", m2) == 0

    # zergs again, then remove the parent's ini: its zergs stop with it
    m3 = rig.mark()
    with BackgroundLoad(ok_through(ng, f"/app{SLEEP}"), threads=12, seconds=20):
        wait_for(lambda: zerg_pids(rig), 10, what="a zerg for the respawned vassal")
        rig.wait_log(r"zerg ready", after=m3)
    (rig.enabled / "app.ini").unlink()
    rig.wait_log(r"stopping: zerg .* \(its vassal is stopping\)", after=m3)
    rig.wait_log(r"stopped: 'app.ini'", after=m3)
    wait_for(lambda: not zerg_pids(rig) and not rig.tree(), 15, what="no vassal or zerg left")
