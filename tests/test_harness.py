"""Tests of the harness itself, against real nginx and a tiny in-test uwsgi server (no vassal needed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    BackgroundLoad,
    Nginx,
    ProcGroup,
    Received,
    TinyUwsgiServer,
    UwsgiTimeout,
    WaitTimeout,
    assert_no_orphans,
    exchange,
    free_port,
    header,
    http_get,
    http_request,
    load_loop,
    pack,
    pack_header,
    pack_vars,
    parse_http_response,
    pid_alive,
    raw_exchange,
    request,
    unpack_vars,
    wait_for,
    wait_for_log,
    wait_for_socket,
    wsgi_vars,
)

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


# ------------------------------------------------------------------ packing
def test_pack_matches_the_wire_layout() -> None:
    # header: modifier1, u16 little-endian datasize, modifier2; then u16le-length-prefixed pairs
    assert pack({"A": "b"}) == b"\x00\x06\x00\x00" + b"\x01\x00A\x01\x00b"
    packet = pack([("K", "")], body=b"xyz", modifier1=30, modifier2=9)
    assert packet == b"\x1e\x05\x00\x09" + b"\x01\x00K\x00\x00" + b"xyz"
    assert pack_header(0x0213) == bytes.fromhex("00130200")


def test_vars_roundtrip_keeps_order_duplicates_empty_and_bytes() -> None:
    pairs: list[tuple[str | bytes, str | bytes]] = [
        ("HTTP_COOKIE", "a=1"), ("CONTENT_LENGTH", ""), ("HTTP_COOKIE", "b=2"), (b"K\xff", b"\x00\xfe")]
    assert unpack_vars(pack_vars(pairs)) == [
        (b"HTTP_COOKIE", b"a=1"), (b"CONTENT_LENGTH", b""), (b"HTTP_COOKIE", b"b=2"), (b"K\xff", b"\x00\xfe")]


def test_pack_refuses_what_the_header_cannot_express() -> None:
    with pytest.raises(ValueError, match="65535"):
        pack([(f"K{i}", "v" * 7000) for i in range(10)])
    with pytest.raises(ValueError, match=r"truncated|overruns"):
        unpack_vars(b"\x05\x00AB")


def test_parse_http_response_forms() -> None:
    assert parse_http_response(b"HTTP/1.1 404 Not Found\r\nA: b\r\n\r\nx") == (404, [("A", "b")], b"x")
    assert parse_http_response(b"Status: 201 Created\r\n\r\n")[0] == 201
    assert parse_http_response(b"Content-Type: text/plain\r\n\r\nhi")[0] == 200


# ------------------------------------------------------------------ client <-> tiny server
@pytest.mark.parametrize("family", ["unix", "tcp4", "tcp6"])
def test_request_against_tiny_server(family: str, sock_dir: Path) -> None:
    if family == "tcp6" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    addrs: dict[str, str | tuple[str, int]] = {
        "unix": str(sock_dir / "t.sock"), "tcp4": ("127.0.0.1", 0), "tcp6": ("::1", 0)}
    addr = addrs[family]
    try:
        srv = TinyUwsgiServer(addr)
    except OSError as e:  # ::1 may be unconfigured in some containers
        pytest.skip(f"cannot bind {addr}: {e}")
    with srv:
        body = b"0123456789" * 1000
        status, headers, rbody, raw = request(srv.addr, wsgi_vars("POST", "/echo", body=body), body)
        assert status == 200, raw
        assert header(headers, "content-length") == str(len(rbody))
        assert rbody == b"path=/echo body=10000\n"
    assert srv.errors == []
    assert srv.received[0].var("REQUEST_METHOD") == "POST" and srv.received[0].body == body


def test_closed_without_reply_is_status_zero_and_raw_exchange_sees_it(sock_dir: Path) -> None:
    def drop(req: Received) -> bytes:
        return b""

    with TinyUwsgiServer(str(sock_dir / "d.sock"), handler=drop) as srv:
        assert request(srv.addr, wsgi_vars(), modifier1=99) == (0, [], b"", b"")
        assert raw_exchange(srv.addr, pack(wsgi_vars())) == b""
    assert [r.modifier1 for r in srv.received] == [99, 0]


def test_exchange_times_out_on_a_silent_peer(sock_dir: Path) -> None:
    path = str(sock_dir / "silent.sock")
    with socket.socket(socket.AF_UNIX) as lsn:
        lsn.bind(path)
        lsn.listen(1)
        with pytest.raises(UwsgiTimeout):
            exchange(path, b"\x00\x00\x00\x00", timeout=0.3)


# ------------------------------------------------------------------ nginx
def test_nginx_fronts_unix_and_tcp_backends(nginx: Callable[..., Nginx], sock_dir: Path) -> None:
    with TinyUwsgiServer(str(sock_dir / "u.sock")) as unix_srv, TinyUwsgiServer(("127.0.0.1", 0)) as tcp_srv:
        ng = nginx()
        ng.add_uwsgi("/", unix_srv.nginx_upstream)
        ng.add_uwsgi("/tcp/", tcp_srv.addr, extra="uwsgi_modifier1 30;")
        second = ng.add_server()
        ng.add_uwsgi("/", tcp_srv.nginx_upstream, server=second)
        ng.start()

        st, _, body = http_get(ng.url("/hello?x=1"), headers={"X-Dup": "1"})
        assert (st, body) == (200, b"path=/hello body=0\n")
        st, _, body = http_request(ng.url("/tcp/up"), "POST", b"z" * 200_000,
                                   headers={"Content-Type": "application/octet-stream"})
        assert (st, body) == (200, b"path=/tcp/up body=200000\n")
        assert http_get(ng.url("/", server=second))[0] == 200

    got = unix_srv.received[0]
    assert got.var("REQUEST_METHOD") == "GET" and got.var("QUERY_STRING") == "x=1"
    assert got.var("HTTP_X_DUP") == "1" and got.var("CONTENT_LENGTH") == ""
    assert tcp_srv.received[0].modifier1 == 30 and tcp_srv.received[0].var("CONTENT_LENGTH") == "200000"
    assert unix_srv.errors == tcp_srv.errors == []
    assert "GET /hello?x=1" in ng.access_log()


def test_nginx_502_for_missing_socket_is_in_error_log(nginx: Callable[..., Nginx], sock_dir: Path) -> None:
    ng = nginx()
    ng.add_uwsgi("/", sock_dir / "nobody-home.sock")
    ng.start()
    assert http_get(ng.url("/"))[0] == 502
    wait_for(lambda: ng.grep_error_log(r"nobody-home\.sock failed"), 5, what="connect() failure logged")


def test_nginx_stop_leaves_no_process(tmp_path: Path) -> None:
    group = ProcGroup(tmp_path / "logs")
    ng = Nginx(tmp_path / "ng", group=group)
    ng.add_location("= /ping", "return 200 pong;")
    ng.start()
    assert http_get(ng.url("/ping")) [::2] == (200, b"pong")
    pids = [ng.proc.pid, *ng.proc.snapshot()] if ng.proc else []
    assert len(pids) == 2  # master + 1 worker
    ng.reload()
    ng.stop()
    assert ng.proc is not None and ng.proc.popen.returncode == 0  # SIGQUIT is a clean exit
    assert_no_orphans(ng.proc.seen, group.marker)
    assert not any(pid_alive(p) for p in pids)


# ------------------------------------------------------------------ processes
CHILD_TREE = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
print("ready", flush=True)
time.sleep(300)
"""

DETACHED = """
import subprocess, sys, time
p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print("grandchild", p.pid, flush=True)
"""


def test_stop_kills_the_tree_and_fixture_sees_no_orphans(procs: ProcGroup) -> None:
    p = procs.start([PY, "-c", CHILD_TREE], name="tree")
    wait_for_log(p, r"ready")
    kids = wait_for(p.snapshot, 5, what="child process")
    assert procs.stop(p, signal.SIGTERM, timeout=5, grace=0.3) == -signal.SIGTERM
    assert not any(pid_alive(k) for k in kids)  # the orphaned child was killed by pid...
    assert len(p.forced) == 1 and "outlived tree" in p.forced[0]  # ...and reported
    with pytest.raises(AssertionError, match="had to be killed"):
        procs.assert_no_orphans()
    p.forced.clear()  # seen and handled here; the fixture's own check must now pass


def test_orphan_scan_catches_a_detached_grandchild(procs: ProcGroup) -> None:
    p = procs.start([PY, "-c", DETACHED], name="detacher")
    m = wait_for_log(p, r"grandchild (\d+)")
    gc = int(m.group(1))
    p.wait(10)
    try:
        assert gc in procs.leftovers()  # found through the marker env var, not the tree
        with pytest.raises(AssertionError, match="processes left running"):
            assert_no_orphans([], procs.marker)
    finally:
        os.kill(gc, signal.SIGKILL)  # by the pid we started
    wait_for(lambda: not pid_alive(gc), 5, what="grandchild gone")


def test_wait_for_reports_what_and_fails_fast_on_dead_process(procs: ProcGroup) -> None:
    with pytest.raises(WaitTimeout, match="the impossible"):
        wait_for(lambda: False, 0.1, what="the impossible")
    p = procs.start([PY, "-c", "print('bye')"], name="quitter")
    with pytest.raises(WaitTimeout, match=r"exited with 0(.|\n)*bye"):
        wait_for_socket(("127.0.0.1", free_port()), timeout=30, proc=p)


def test_load_loop_counts_and_bounds() -> None:
    calls = iter(range(10**6))

    def fn() -> bool:
        n = next(calls)
        if n % 10 == 0:
            raise ConnectionError(f"boom {n}")
        return True

    r = load_loop(fn, threads=3, seconds=30, max_requests=100)
    assert (r.ok, r.failed, r.total) == (90, 10, 100)
    assert len(r.failures) == 10 and "ConnectionError: boom" in r.failures[0]
    with BackgroundLoad(lambda: False, threads=2) as bg:
        wait_for(lambda: bg.result.failed >= 5, 5, what="some failures")
    assert bg.result.failed >= 5 and bg.result.ok == 0


# ------------------------------------------------------------------ scripts
def test_scripts_are_shellcheck_clean() -> None:
    demo = ROOT / "contrib" / "demo"
    scripts = [ROOT / ".ci" / "run", demo / "run.sh", demo / "setup.sh"]
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
