"""The backlog probe against ``ss`` (TCP and Unix), the SOS and idle rules, and the zerg hand-off.

uWSGI reads a Unix socket's backlog as 0 on stock kernels; ours uses sock_diag and must
print what ``ss -xl`` prints. The zerg server speaks uWSGI's wire format (``uwsgi-zerg`` +
a native int + SCM_RIGHTS) and a zerg never removes a socket it did not create.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ProcGroup, free_port, request, wait_for, wait_for_log, wsgi_vars
from vassal_runner import start_vassal

from emperor.vassal import backlog, zerg
from emperor.vassal.backlog import Probe, Queue, SosWatch
from emperor.vassal.zerg import IdleWatch

pytestmark = pytest.mark.live  # starts real processes (README: Tests)


def ss_recvq(addr: str) -> int | None:
    """Recv-Q of a listening socket as ``ss`` prints it (``host:port`` or a Unix path)."""
    if addr.startswith("/"):
        cmd = ["ss", "-Hxl", "src", addr]
    else:
        cmd = ["ss", "-Htln", "sport", f"= :{addr.rsplit(':', 1)[1]}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split()
    if not out:
        return None
    return int(out[2] if addr.startswith("/") else out[1])


@pytest.fixture
def listeners(sock_dir: Path) -> Iterator[tuple[socket.socket, socket.socket, str, str]]:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(50)
    path = str(sock_dir / "q.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(77)
    yield tcp, unix, f"127.0.0.1:{tcp.getsockname()[1]}", path
    tcp.close()
    unix.close()


def test_probe_matches_ss_on_tcp_and_unix(listeners: tuple[socket.socket, socket.socket, str, str]) -> None:
    tcp, unix, taddr, upath = listeners
    probe = Probe([("t", tcp), ("u", unix)])
    assert probe.read() == {"t": Queue(0, 50), "u": Queue(0, 77)}
    clients = []
    try:
        for n in range(1, 6):
            c = socket.create_connection(tcp.getsockname())
            clients.append(c)
            for _ in range(2):
                u = socket.socket(socket.AF_UNIX)
                u.connect(upath)
                clients.append(u)
            got = probe.read()
            # ss and the probe read the same kernel counters: they agree exactly
            assert got["t"] == Queue(n, 50) and ss_recvq(taddr) == n
            assert got["u"] == Queue(2 * n, 77) and ss_recvq(upath) == 2 * n
        assert probe.backlog() == (10, Queue(10, 77))
        conn, _ = unix.accept()  # accepting takes one off the queue
        conn.close()
        assert probe.read()["u"] == Queue(9, 77) == Queue(ss_recvq(upath) or 0, 77)
    finally:
        for c in clients:
            c.close()
        probe.close()


def test_probe_reports_unknown_not_zero() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    not_listening = socket.socket()
    try:
        assert backlog.tcp_queue(not_listening) is None
        probe = Probe([("udp", udp)])
        assert probe.backlog() == (None, None)
    finally:
        udp.close()
        not_listening.close()


class FakeProbe(Probe):
    def __init__(self) -> None:
        super().__init__([])
        self.value: int | None = 0

    def backlog(self) -> tuple[int | None, Queue | None]:
        return self.value, (Queue(self.value, 100) if self.value is not None else None)


def test_sos_at_once_then_every_second_log_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """Probes every 0.25 s: the first SOS leaves at the first probe over the threshold, the
    next ones once a second while it holds; the log says so every 5 s, not every time."""
    probe = FakeProbe()
    w = SosWatch(probe, threshold=10, busy_secs=0, now=0.0)
    probe.value = 3
    assert w.check(0.0, all_busy=True) is None
    assert w.check(0.1, all_busy=True) is None  # between two probes
    probe.value = 37
    ticks = [k * 0.25 for k in range(1, 45)]  # 0.25 .. 11.0
    sent = [t for t in ticks if w.check(t, all_busy=True)]
    assert sent == [0.25 + k for k in range(11)]  # at once, then each second
    assert w.check(11.25, all_busy=True) == "37 10" and w.check(11.5, all_busy=True) is None
    lines = [r for r in caplog.records if "reinforcements" in r.getMessage()]
    assert len(lines) == 3 and lines[0].getMessage() == "asking the emperor for reinforcements (backlog 37)"


def test_sos_schedule_does_not_drift_when_ticks_come_late() -> None:
    """Ticks that arrive late keep the grid (0.25 s probes, 1 s SOS): a schedule taken from
    "now" would send at 0, 1.3, 2.6, ... and lend zergs ever later."""
    probe = FakeProbe()
    probe.value = 50
    w = SosWatch(probe, threshold=10, busy_secs=0, now=0.0)
    late = [k * 0.25 + 0.07 for k in range(0, 21)]  # every tick 70 ms late
    sent = [round(t, 2) for t in late if w.check(t, all_busy=True)]
    assert sent == [0.07, 1.07, 2.07, 3.07, 4.07, 5.07]
    assert w.check(9.5, all_busy=True) == "50 10" and w.next_check == 9.75  # a long stall: restart


def test_vassal_sos_when_the_backlog_cannot_be_read() -> None:
    probe = FakeProbe()
    probe.value = None
    w = SosWatch(probe, threshold=10, busy_secs=3, now=0.0)
    assert [w.check(t, all_busy=t >= 2) for t in range(0, 5)] == [None] * 5  # busy since 2
    assert w.check(5, all_busy=True) == "busy"
    assert [w.check(t, all_busy=True) for t in (6, 7)] == [None, None]  # at most once per 3 s
    assert w.check(8, all_busy=True) == "busy"
    assert w.check(9, all_busy=False) is None and w.check(10, all_busy=True) is None


def test_idle_watch() -> None:
    w = IdleWatch(5, now=0.0)
    assert w.check(0, busy=False, now=0.0) is None
    assert w.check(0, busy=False, now=5.0) is None  # "more than" idle seconds
    assert w.check(1, busy=False, now=6.0) is None  # a request: the clock restarts
    assert w.check(1, busy=True, now=20.0) is None  # a busy worker is never idle
    assert w.check(1, busy=False, now=21.0) is None
    assert w.check(1, busy=False, now=26.5) == pytest.approx(6.5)  # idle since the busy look


Listeners = tuple[socket.socket, socket.socket, str, str]


def test_zerg_server_wire_format(sock_dir: Path, listeners: Listeners) -> None:
    tcp, unix, taddr, upath = listeners
    lst = [zerg.Listener(taddr, tcp, "tcp"), zerg.Listener(upath, unix, "unix")]
    server = zerg.ZergServer(str(sock_dir / "z.sock"), lst)
    assert os.stat(sock_dir / "z.sock").st_mode & 0o777 == 0o600
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(sock_dir / "z.sock"))
    server.on_accept()
    msg, fds, _, _ = socket.recv_fds(client, 64, 8)
    assert msg == b"uwsgi-zerg" + struct.pack("=i", 2) and len(fds) == 2  # uWSGI's exact payload
    assert client.recv(1) == b""  # then the server closes
    for fd in fds:
        assert os.fstat(fd).st_ino in (os.fstat(tcp.fileno()).st_ino, os.fstat(unix.fileno()).st_ino)
        os.close(fd)
    client.close()
    server.close()
    assert not (sock_dir / "z.sock").exists()


def test_attach_errors(sock_dir: Path) -> None:
    with pytest.raises(zerg.ZergError, match="cannot connect"):
        zerg.attach([str(sock_dir / "nobody.sock")], timeout=0.3)
    with pytest.raises(zerg.ZergError, match="Unix socket"):
        zerg.attach(["127.0.0.1:1"], timeout=0.3)


def test_a_zerg_serves_the_parent_sockets_and_never_removes_them(procs: ProcGroup, sock_dir: Path) -> None:
    """Standalone (no emperor): a vassal with zerg-server, a zerg attached to it; both serve the
    same TCP and Unix sockets; the zerg's exit leaves the parent's socket file alone."""
    tcp_port = free_port()
    usock, zsock = sock_dir / "p.sock", sock_dir / "z.sock"
    parent = start_vassal(procs, "--socket", str(usock), "--socket", f"127.0.0.1:{tcp_port}",
                          "--zerg-server", str(zsock), "--vacuum", name="parent")
    z = start_vassal(procs, "--zerg", str(zsock), "--processes", "2", name="zerg")
    wait_for_log(z, r"zerg socket 127.0.0.1:\d+ attached")
    wait_for_log(parent, r"zerg server: handed 2 socket\(s\) to pid")

    def pids(addr: object) -> set[int]:
        seen = set()
        for _ in range(40):
            status, _, body, _ = request(addr, wsgi_vars(path="/pid"), timeout=5)  # type: ignore[arg-type]
            assert status == 200
            seen.add(int(body.split()[0]))
        return seen

    import psutil

    zerg_workers = {c.pid for c in psutil.Process(z.pid).children()}
    parent_workers = {c.pid for c in psutil.Process(parent.pid).children()}
    for addr in (str(usock), ("127.0.0.1", tcp_port)):
        wait_for(lambda a=addr: pids(a) & zerg_workers, 10, what="a zerg worker answering")  # type: ignore[misc]
    assert pids(str(usock)) <= zerg_workers | parent_workers
    procs.stop(z)
    assert usock.exists() and zsock.exists()  # the zerg vacuumed nothing
    status, _, _, _ = request(str(usock), wsgi_vars(path="/pid"), timeout=5)
    assert status == 200
    procs.stop(parent)
    assert not usock.exists() and not zsock.exists()  # the parent removes its own


def test_zerg_section_scope_is_validated(tmp_path: Path) -> None:
    """idle/die-on-idle are valid in [zerg] and (since on-demand vassals) in a vassal; an emperor
    option in a vassal is refused with its scope named."""
    ini = tmp_path / "a.ini"
    ini.write_text("[uwsgi]\nsocket = /tmp/x.sock\nzerg-server = /tmp/z.sock\nvassal-sos-backlog = 3\n\n"
                   "[zerg]\nzerg = /tmp/z.sock\nidle = 3\ndie-on-idle = true\n")
    bad = tmp_path / "b.ini"
    bad.write_text("[uwsgi]\nsocket = /tmp/x.sock\nemperor-freq = 3\n")
    run = [sys.executable, "-m", "emperor.vassal", "--ini"]
    from emperor import config
    from emperor.options import Scope

    assert config.from_args([("ini", f"{ini}:zerg")], Scope.ZERG).die_on_idle is True
    assert config.from_args([("ini", str(ini))], Scope.VASSAL).vassal_sos_backlog == 3
    idle = tmp_path / "idle.ini"
    idle.write_text("[uwsgi]\nsocket = /tmp/x.sock\nidle = 3\ndie-on-idle = true\n")
    assert config.from_args([("ini", str(idle))], Scope.VASSAL).idle == 3
    with pytest.raises(config.ConfigError, match="not valid in a vassal"):
        config.from_args([("ini", str(bad))], Scope.VASSAL)
    out = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 78 and "emperor-freq" in out.stderr
