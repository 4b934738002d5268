"""HTTP listeners against a live vassal (http-socket): a raw-socket client and http.client.

One vassal serves the module: 2 workers, an HTTP socket on TCP and on a Unix path, and a
uwsgi socket at the same time. Tests that need other options (timeouts, one worker) start
their own.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ProcGroup, free_port, request, wait_for, wsgi_vars
from harness.http_client import RawHTTP, chunked, request_bytes
from harness.procs import Proc
from vassal_runner import start_vassal, worker_pids

pytestmark = pytest.mark.live  # real processes (README: Tests)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("httplive")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    procs = ProcGroup(tmp / "logs")
    try:
        port = free_port()
        unix = str(socks / "http.sock")
        uw = str(socks / "uwsgi.sock")
        proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http11-socket", unix,
                            "--socket", uw, "--processes", "2", name="http")
        yield {"tcp": ("127.0.0.1", port), "unix": unix, "uwsgi": uw, "proc": proc, "port": port}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


@pytest.fixture(params=["tcp", "unix"])
def addr(request: pytest.FixtureRequest, live: dict[str, object]) -> object:
    return live[request.param]


def one(addr: object, data: bytes, head_request: bool = False) -> tuple[RawHTTP, object]:
    c = RawHTTP(addr)  # type: ignore[arg-type]
    c.send(data)
    return c, c.response(head_request)


def get_env(addr: object, path: str = "/env", headers: dict[str, str] | None = None) -> dict[str, str]:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", path, headers))
        r = c.response()
    assert r.status == 200, r
    return json.loads(r.body)  # type: ignore[no-any-return]


def test_get_environ(addr: object, live: dict[str, object]) -> None:
    env = get_env(addr, "/env/caf%C3%A9%2Fx?a=1&b=%20", {"X-Custom": "v1", "Cookie": "a=1"})
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"].encode("latin-1").decode() == "/env/café/x"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["REQUEST_URI"] == "/env/caf%C3%A9%2Fx?a=1&b=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["HTTP_HOST"] == "test" and env["HTTP_X_CUSTOM"] == "v1" and env["HTTP_COOKIE"] == "a=1"
    assert env["SCRIPT_NAME"] == "" and env["wsgi.url_scheme"] == "http"
    if isinstance(addr, tuple):
        assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"].isdigit()
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(live["port"]))
    else:
        assert env["REMOTE_ADDR"] == "unix:"


def test_headers_with_underscores_are_dropped_and_duplicates_joined(addr: object) -> None:
    raw = (b"GET /env HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.1.1.1\r\nX_Forwarded_For: 6.6.6.6\r\n"
           b"Accept: a\r\nAccept: b\r\nCookie: x=1\r\nCookie: y=2\r\n\r\n")
    c, r = one(addr, raw)
    c.close()
    env = json.loads(r.body)  # type: ignore[attr-defined]
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1"
    assert env["HTTP_ACCEPT"] == "a, b" and env["HTTP_COOKIE"] == "x=1; y=2"


def test_response_has_date_and_length(addr: object) -> None:
    c, r = one(addr, request_bytes("GET", "/hello"))
    c.close()
    assert r.status == 200 and r.body == b"hello /hello"  # type: ignore[attr-defined]
    assert r.header("Date") and r.header("Content-Length") == "12"  # type: ignore[attr-defined]
    assert r.header("Connection") is None  # type: ignore[attr-defined]


def test_head_has_no_body(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("HEAD", "/head-body") + request_bytes("GET", "/hello"))
        r = c.response(head_request=True)
        assert r.status == 200 and r.header("Content-Length") == "29"
        r2 = c.response()  # the next response starts right after the head: no body was sent
        assert r2.body == b"hello /hello"


@pytest.mark.parametrize("path", ["/204", "/304"])
def test_no_body_statuses(addr: object, path: str) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", path) + request_bytes("GET", "/hello"))
        r = c.response()
        assert r.status == int(path[1:]) and r.header("Transfer-Encoding") is None
        assert c.response().body == b"hello /hello"


def test_post_echo_and_1mib(addr: object) -> None:
    for body in (b"hello", os.urandom(1 << 20)):
        c, r = one(addr, request_bytes("POST", "/echo", {"Content-Type": "application/x"}, body))
        c.close()
        assert r.status == 200 and r.body == body  # type: ignore[attr-defined]


def test_chunked_upload_is_dechunked(addr: object) -> None:
    parts = [b"a" * 10, os.urandom(70000), b"tail\n"]
    raw = request_bytes("POST", "/echo-chunks", {"Transfer-Encoding": "chunked"}) + chunked(*parts)
    c, r = one(addr, raw)
    assert r.status == 200 and r.body == b"".join(parts)  # type: ignore[attr-defined]
    c.send(request_bytes("POST", "/env", {"Transfer-Encoding": "chunked"}) + chunked(b"x"))
    env = json.loads(c.response().body)
    c.close()
    assert "CONTENT_LENGTH" not in env and env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_input_terminated_is_set(addr: object) -> None:
    raw = request_bytes("POST", "/echo-lines", {"Transfer-Encoding": "chunked"}) + chunked(b"l1\nl2\n", b"l3")
    c, r = one(addr, raw)
    assert json.loads(r.body) == ["l1\n", "l2\n", "l3"]  # type: ignore[attr-defined]
    c.send(request_bytes("GET", "/wsgi-flags"))
    flags = json.loads(c.response().body)
    c.close()
    assert flags["wsgi.input_terminated"] is True and flags["wsgi.multiprocess"] is True


def test_big_streamed_and_file_wrapper(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/big?n=65536"))
        r = c.response()
        assert r.body == b"x" * 65536 and r.header("Content-Length") == "65536"
        c.send(request_bytes("GET", "/stream?n=3"))
        r = c.response()
        assert r.header("Transfer-Encoding") == "chunked" and r.body == b"chunk 0\nchunk 1\nchunk 2\n"
        c.send(request_bytes("GET", "/file?n=2000"))  # through wsgiref's validator: iterated
        assert c.response().body == b"0123456789" * 2000
        c.send(request_bytes("GET", "/sendfile?n=20000&skip=5"))  # file_wrapper: sendfile + length
        r = c.response()
        assert r.header("Content-Length") == "199995" and r.body == (b"0123456789" * 20000)[5:]
        c.send(request_bytes("GET", "/write"))
        assert c.response().body == b"written and returned"


def test_keepalive_reuse_with_http_client(live: dict[str, object]) -> None:
    host, port = live["tcp"]  # type: ignore[misc]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        ports = set()
        for i in range(20):
            conn.request("GET", f"/env?i={i}")
            resp = conn.getresponse()
            env = json.loads(resp.read())
            assert env["QUERY_STRING"] == f"i={i}"
            ports.add(env["REMOTE_PORT"])
        assert len(ports) == 1  # one TCP connection served all 20
        conn.request("POST", "/echo", body=b"z" * 100000)
        assert conn.getresponse().read() == b"z" * 100000
    finally:
        conn.close()


def test_pipelining_in_order(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/a") + request_bytes("POST", "/echo", body=b"payload")
               + request_bytes("GET", "/stream?n=2") + request_bytes("GET", "/b"))
        assert c.response().body == b"hello /a"
        assert c.response().body == b"payload"
        assert c.response().body == b"chunk 0\nchunk 1\n"
        assert c.response().body == b"hello /b"


def test_length_bodies_cut_anywhere_are_read_whole(addr: object) -> None:
    """Content-Length bodies (counted by the parser, not llhttp, after a plain head) sent in
    pieces cut at random points, pipelined with the next request, and read by the app whole,
    in read(1000) steps, line by line, and in large reads after a small one and a line (the
    large ones receive straight into the result, http_wire.recv_body): every byte reaches the
    right request."""
    import random

    rng = random.Random(12)
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        for i in range(40):
            body = rng.randbytes(rng.choice([1, 9, 999, 1000, 1001, 70000, 300000]))
            path = rng.choice(["/echo", "/echo-chunks", "/echo-lines", "/echo-mixed?step=40000",
                               "/echo-mixed?step=16384", "/echo-mixed?step=1000000"])
            if path == "/echo-lines":
                body = body.replace(b"\r", b"").replace(b"\n", b"")[:500] + b"\nline two\nlast"
            data = request_bytes("POST", path, body=body) + request_bytes("GET", f"/after{i}")
            cuts = sorted(rng.sample(range(1, len(data)), min(6, len(data) - 1)))
            for start, end in itertools.pairwise([0, *cuts, len(data)]):
                c.send(data[start:end])
            r = c.response()
            if path == "/echo-lines":
                assert "".join(json.loads(r.body)).encode("latin-1") == body, (i, path)
            else:
                assert r.status == 200 and r.body == body, (i, path, len(body))
            assert c.response().body == f"hello /after{i}".encode(), i


def _vm_peak(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmPeak:"))


def test_a_huge_announced_body_is_not_reserved_before_it_comes(live: dict[str, object]) -> None:
    """A read of a large Content-Length body receives into an object allocated up front
    (http_wire.recv_body), but only up to DIRECT_MAX: a client that announces 2 GB and sends
    10 bytes must not make a worker reserve 2 GB. The workers' peak address space stays put,
    and they keep serving."""
    proc = live["proc"]
    pids = worker_pids(proc)  # type: ignore[arg-type]
    before = {pid: _vm_peak(pid) for pid in pids}
    for _ in range(4):  # reaches both workers
        with RawHTTP(live["tcp"]) as c:  # type: ignore[arg-type]
            c.send(request_bytes("POST", "/echo", {"Content-Length": str(2_000_000_000)}) + b"0123456789")
    assert get_env(live["tcp"])["REQUEST_METHOD"] == "GET"
    assert worker_pids(proc) == pids  # type: ignore[arg-type]
    grew = {pid: _vm_peak(pid) - before[pid] for pid in pids}
    assert all(g < 256 << 20 for g in grew.values()), grew


def test_expect_100_continue(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/echo", {"Expect": "100-continue", "Content-Length": "5"}))
        interim = c.response()
        assert interim.status == 100
        c.send(b"hello")
        r = c.response()
        assert r.status == 200 and r.body == b"hello"


def test_expect_100_not_read_closes(addr: object) -> None:
    """An app that answers without reading: no 100 is sent, and the connection closes
    (the client would otherwise send a body we never asked for)."""
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/ignore-body", {"Expect": "100-continue", "Content-Length": "5"}))
        r = c.response()
        assert r.status == 200 and r.header("Connection") == "close"
        assert c.closed_by_peer()


def test_http10(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/stream?n=2", version="HTTP/1.0"))
        r = c.response()
        assert r.header("Transfer-Encoding") is None and r.header("Connection") == "close"
        assert r.body == b"chunk 0\nchunk 1\n"
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/a", {"Connection": "keep-alive"}, version="HTTP/1.0"))
        r = c.response()
        assert r.header("Connection") == "keep-alive" and r.body == b"hello /a"
        c.send(request_bytes("GET", "/b", version="HTTP/1.0"))
        r = c.response()
        assert r.body == b"hello /b" and c.closed_by_peer()


def test_connection_close_request(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/a", {"Connection": "close"}))
        r = c.response()
        assert r.header("Connection") == "close" and c.closed_by_peer()


@pytest.mark.parametrize(("raw", "status"), [
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x3\r\n\r\nabc", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: a\r\n\r\n", 400),
    (b"GET /a\x00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x07b\r\n\r\n", 400),
    (b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"FROB / HTTP/1.1\r\nHost: t\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
])
def test_hardening_live(addr: object, raw: bytes, status: int) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(raw)
        r = c.response()
        assert r.status == status, r
        assert r.header("Connection") == "close" and r.body.startswith(str(status).encode())
        assert c.closed_by_peer()


def test_head_limits_live(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
        r = c.response()
        assert r.status == 414 and b"URI too long" in r.body
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(70))
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
        r = c.response()
        assert r.status == 431 and b"headers too large" in r.body


def test_a_good_request_then_a_bad_one_pipelined(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        bad = b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"
        c.send(request_bytes("GET", "/a") + bad + request_bytes("GET", "/b"))
        assert c.response().body == b"hello /a"
        assert c.response().status == 400
        assert c.closed_by_peer()  # /b is never answered: nothing after a bad request is trusted


def test_app_errors_close(addr: object) -> None:
    for path in ("/raise", "/bad-header", "/cl-te"):
        with RawHTTP(addr) as c:  # type: ignore[arg-type]
            c.send(request_bytes("GET", path))
            r = c.response()
            assert r.status == 500 and r.header("Connection") == "close", path
            assert b"pwned" not in r.raw_head
            assert c.closed_by_peer()


def test_uwsgi_socket_of_the_same_vassal(live: dict[str, object]) -> None:
    status, _h, body, _raw = request(live["uwsgi"], wsgi_vars(path="/raw/x"))  # type: ignore[arg-type]
    assert status == 200 and body == b"hello /raw/x"


def test_http_to_the_uwsgi_socket_gets_a_helpful_400(live: dict[str, object]) -> None:
    with RawHTTP(live["uwsgi"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/"))
        r = c.response()
    assert r.status == 400
    assert b"uwsgi_pass" in r.body and b"http-socket" in r.body


# ---- keep-alive policy: own vassals ----------------------------------------------------


def test_idle_keepalive_connection_is_closed(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive", "1", "--processes", "1")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/a"))
        assert c.response().body == b"hello /a"
        t0 = time.monotonic()
        assert c.closed_by_peer(within=5.0)
        assert 0.5 < time.monotonic() - t0 < 4.0


def test_per_connection_request_cap(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive-requests", "3")
    with RawHTTP(("127.0.0.1", port)) as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/{i}"))
            r = c.response()
        assert r.header("Connection") == "close" and c.closed_by_peer()


def test_slowloris_head_releases_the_worker(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", "--socket-timeout", "1")
    slow = socket.create_connection(("127.0.0.1", port))
    try:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # never finished
        t0 = time.monotonic()
        with RawHTTP(("127.0.0.1", port), timeout=10) as c:
            c.send(request_bytes("GET", "/fast"))
            assert c.response().body == b"hello /fast"
        assert time.monotonic() - t0 < 3.5  # socket-timeout (1 s) plus slack, not forever
        slow.settimeout(5)
        assert slow.recv(100) == b""  # the slow client was dropped
    finally:
        slow.close()


@pytest.mark.parametrize("path", ["/big?n=16000000", "/file?n=1600000", "/stream?n=400000"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_a_client_that_never_reads_releases_the_worker(procs: ProcGroup, tmp_path: Path, path: str,
                                                        family: str) -> None:
    """A fresh connection's socket-timeout is set only before a call that would block (a
    request that comes and goes at once never pays for it): a client that asks for a large
    answer (whole in C, sendfile, streamed) and never reads it still frees the only worker
    within socket-timeout. (On a Unix socket an accepted connection inherits no timeout from
    the listener, as a TCP one does.)"""
    addr: object = ("127.0.0.1", free_port()) if family == "tcp" else str(tmp_path / "h.sock")
    bind = f"127.0.0.1:{addr[1]}" if isinstance(addr, tuple) else str(addr)
    start_vassal(procs, "--http-socket", bind, "--processes", "1", "--socket-timeout", "1")
    with RawHTTP(addr, timeout=15) as stuck:  # type: ignore[arg-type]
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.send(request_bytes("GET", path))
        t0 = time.monotonic()
        with RawHTTP(addr, timeout=15) as c:  # type: ignore[arg-type]
            c.send(request_bytes("GET", "/fast"))
            assert c.response().body == b"hello /fast"
        assert time.monotonic() - t0 < 6  # socket-timeout (1 s) plus slack, not forever


@pytest.mark.parametrize("path", ["/echo", "/echo-chunks"])
def test_a_body_trickling_past_body_read_timeout_releases_the_worker(procs: ProcGroup, path: str) -> None:
    """body-read-timeout bounds the whole body on an http-socket too: a client sending a byte
    now and then, each within socket-timeout, loses the only worker once the deadline has
    passed (looked at before each read: one large read in C for /echo, the parser's pieces for
    /echo-chunks), and the next client is served."""
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1",
                 "--socket-timeout", "2", "--body-read-timeout", "1")
    stop = threading.Event()
    slow = socket.create_connection(("127.0.0.1", port))

    # connected and sent first: the only worker accepts in the kernel queue's order
    slow.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n")

    def trickle() -> None:
        deadline = time.monotonic() + 30
        while not stop.wait(0.2) and time.monotonic() < deadline:
            try:
                slow.sendall(b"x" * 50)
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        t0 = time.monotonic()
        with RawHTTP(("127.0.0.1", port), timeout=15) as c:
            c.send(request_bytes("GET", "/fast"))
            assert c.response().body == b"hello /fast"
        assert time.monotonic() - t0 < 6  # body-read-timeout (1 s) + a wait, not the 20 s of trickle
    finally:
        stop.set()
        t.join()
        slow.close()


def test_a_client_trickling_after_an_error_answer_does_not_hold_the_worker(procs: ProcGroup) -> None:
    """After an error answer the worker reads and drops what the client still sends (so our
    close does not reset the answer away), but for a bounded time: a client that keeps sending
    a byte at a time must not pin the only worker (it did: each read restarted the wait)."""
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1")
    stop = threading.Event()
    bad = socket.create_connection(("127.0.0.1", port))

    def trickle() -> None:
        bad.sendall(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
        deadline = time.monotonic() + 20
        while not stop.wait(0.05) and time.monotonic() < deadline:
            try:
                bad.sendall(b"x")
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        bad.settimeout(10)
        assert bad.recv(12) == b"HTTP/1.1 400"  # the error answer, then the worker lingers
        with RawHTTP(("127.0.0.1", port), timeout=8) as c:  # answered long before the trickle ends
            c.send(request_bytes("GET", "/fast"))
            assert c.response().body == b"hello /fast"
    finally:
        stop.set()
        t.join()
        bad.close()


def test_idle_connection_never_waits_behind_a_busy_worker(procs: ProcGroup, tmp_path: Path) -> None:
    """A keep-alive connection idle in worker W; W gets a slow request on another connection:
    the next request on the idle connection is served at once by the other worker."""
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    addr = ("127.0.0.1", port)
    for _round in range(4):
        with RawHTTP(addr) as idle:
            idle.send(request_bytes("GET", "/pid"))
            idle.response()
            done = threading.Event()

            mark = tmp_path / f"inflight{_round}"

            def slow(mark: Path = mark, done: threading.Event = done) -> None:
                with RawHTTP(addr, timeout=10) as c:
                    c.send(request_bytes("GET", f"/sleep?s=2&mark={mark}"))
                    c.response()
                done.set()

            t = threading.Thread(target=slow)
            t.start()
            wait_for(mark.exists, timeout=5)  # a worker is now busy on the slow request
            t0 = time.monotonic()
            idle.send(request_bytes("GET", "/pid"))
            assert idle.response().status == 200
            assert time.monotonic() - t0 < 1.0, "the idle connection waited behind the busy worker"
            assert not done.is_set()
            t.join()


def _held(pid: int, port: int) -> int:
    """Established connections to ``port`` whose server side this process holds."""
    import psutil

    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_fast_requests_leave_idle_connections_in_the_worker(procs: ProcGroup, tmp_path: Path) -> None:
    """Lazy parking: a fast request does not hand the worker's other idle keep-alive
    connections to the master (behind nginx that would send nearly every request through the
    master). A slow one does not either while no other worker is free to take them (one worker
    here): parking would only send them round the master and back to this same worker."""
    port = free_port()
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1")
    (wpid,) = worker_pids(proc)
    addr = ("127.0.0.1", port)

    with RawHTTP(addr) as a, RawHTTP(addr) as b:
        for _ in range(20):
            for c in (a, b):
                c.send(request_bytes("GET", "/pid"))
                assert c.response().status == 200
        wait_for(lambda: _held(wpid, port) == 2, timeout=3)  # both stay with the worker
        assert _held(proc.pid, port) == 0  # none went through the master
        mark = tmp_path / "inflight"
        a.send(request_bytes("GET", f"/sleep?s=1&mark={mark}"))
        wait_for(mark.exists, timeout=5)  # the only worker is busy
        watch_until = time.monotonic() + 0.5  # 50x PARK_AFTER: the old code parked b within 10 ms
        while time.monotonic() < watch_until:
            assert _held(proc.pid, port) == 0, "parked although no other worker could take it"
        assert a.response().status == 200
        b.send(request_bytes("GET", "/pid"))
        assert b.response().status == 200
        assert _held(proc.pid, port) == 0


def _one_worker_holds(x: RawHTTP, idle: RawHTTP, slow: RawHTTP, busy: Path) -> set[int]:
    """Two workers: ``x`` keeps one busy for 1 s, so the other accepts ``idle`` and ``slow`` and
    holds both; returns that worker's pid once ``x`` is answered (both workers then wait)."""
    x.send(request_bytes("GET", f"/sleep?s=1&mark={busy}"))
    wait_for(busy.exists, timeout=5)
    pids = set()
    for c in (idle, slow):
        c.send(request_bytes("GET", "/pid"))
        pids.add(int(c.response().body.split()[0]))
    assert len(pids) == 1
    assert x.response().status == 200
    return pids


def _slow_request_frees_the_idle_one(proc: Proc, port: int, idle: RawHTTP, slow: RawHTTP, pids: set[int],
                                     mark: Path) -> None:
    """A 2 s request on ``slow``: the worker holding ``idle`` parks it for the free worker, which
    serves a request on it while the slow one still runs."""
    slow.send(request_bytes("GET", f"/sleep?s=2&mark={mark}"))
    wait_for(mark.exists, timeout=5)
    wait_for(lambda: _held(proc.pid, port) == 1, timeout=1.0)  # idle parked for the free worker
    t0 = time.monotonic()
    idle.send(request_bytes("GET", "/pid"))
    r = idle.response()
    assert r.status == 200 and int(r.body.split()[0]) not in pids  # served by the other worker
    assert time.monotonic() - t0 < 1.0
    assert slow.response().status == 200


def test_slow_request_parks_idle_connections_for_a_free_worker(procs: ProcGroup, tmp_path: Path) -> None:
    """Two workers: the one holding an idle connection gets busy on a slow request while the
    other waits for work, so the idle connection goes to the master (and on to the free
    worker), and a request on it is served while the slow one still runs."""
    port = free_port()
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    addr = ("127.0.0.1", port)
    with RawHTTP(addr, timeout=10) as x, RawHTTP(addr) as idle, RawHTTP(addr, timeout=10) as slow:
        pids = _one_worker_holds(x, idle, slow, tmp_path / "busy")
        _slow_request_frees_the_idle_one(proc, port, idle, slow, pids, tmp_path / "inflight")


def test_slow_request_right_after_a_fast_one_still_parks(procs: ProcGroup, tmp_path: Path) -> None:
    """The park timer is not reset per loop turn: one set by a fast request may still run when
    a slow request starts a few ms later. It must then wait for what is left of the slow
    request's own PARK_AFTER and park the idle connection, not lapse with the fast request."""
    port = free_port()
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2")
    addr = ("127.0.0.1", port)
    for _round in range(3):
        with RawHTTP(addr, timeout=10) as x, RawHTTP(addr) as idle, RawHTTP(addr, timeout=10) as slow:
            pids = _one_worker_holds(x, idle, slow, tmp_path / f"busy{_round}")
            slow.send(request_bytes("GET", "/pid"))  # arms the timer (idle is held)...
            assert slow.response().status == 200
            # ...still running when the slow request starts
            _slow_request_frees_the_idle_one(proc, port, idle, slow, pids, tmp_path / f"inflight{_round}")


def test_threads_keepalive(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--threads", "2")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        ports = set()
        for _ in range(100):  # none may be lost between threads, the worker and the master
            conn.request("GET", "/env")
            ports.add(json.loads(conn.getresponse().read())["REMOTE_PORT"])
        assert len(ports) == 1
    finally:
        conn.close()


def test_threads_hold_idle_connections_in_the_worker(procs: ProcGroup, tmp_path: Path) -> None:
    """A threaded worker keeps an idle keep-alive connection after the response (its main
    thread polls it) instead of handing it to the master after every request; while all its
    threads are busy and no other worker waits, it keeps it too, and serves it afterwards."""
    port = free_port()
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--threads", "2", "--processes", "1")
    (wpid,) = worker_pids(proc)
    addr = ("127.0.0.1", port)
    with RawHTTP(addr) as idle, RawHTTP(addr, timeout=10) as s1, RawHTTP(addr, timeout=10) as s2:
        for _ in range(10):
            idle.send(request_bytes("GET", "/pid"))
            assert idle.response().status == 200
        wait_for(lambda: _held(wpid, port) == 1, timeout=3)
        assert _held(proc.pid, port) == 0  # never went through the master
        marks = [tmp_path / "m1", tmp_path / "m2"]
        s1.send(request_bytes("GET", f"/sleep?s=1&mark={marks[0]}"))
        s2.send(request_bytes("GET", f"/sleep?s=1&mark={marks[1]}"))
        wait_for(lambda: all(m.exists() for m in marks), timeout=5)  # both threads busy
        watch_until = time.monotonic() + 0.3
        while time.monotonic() < watch_until:
            assert _held(proc.pid, port) == 0, "parked although no other worker could take it"
        idle.send(request_bytes("GET", "/pid"))
        assert idle.response().status == 200  # served once a thread is free
        assert s1.response().status == 200 and s2.response().status == 200


def test_protocol_http_makes_socket_lines_speak_http(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--socket", f"127.0.0.1:{port}", "--protocol", "http")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/p"))
        assert c.response().body == b"hello /p"


def test_http_option_binds_a_worker_served_listener(procs: ProcGroup) -> None:
    port = free_port()
    proc = start_vassal(procs, "--http", f"127.0.0.1:{port}")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/p"))
        assert c.response().body == b"hello /p"
    wait_for(lambda: "(http, fd" in proc.log_text(), timeout=5)


def test_forwarded_headers_from_loopback_by_default(addr: object) -> None:
    env = get_env(addr, headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"


def test_forwarded_headers_only_from_allowed_peers(procs: ProcGroup, tmp_path: Path) -> None:
    port = free_port()
    unix = str(tmp_path / "h.sock")
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http-socket", unix,
                 "--forwarded-allow-ips", "10.0.0.0/8, 192.0.2.1")
    fwd = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
    env = get_env(("127.0.0.1", port), headers=fwd)  # loopback is not listed here
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"
    assert env["HTTP_X_FORWARDED_FOR"] == "198.51.100.1, 203.0.113.9"  # still visible as a header
    env = get_env(unix, headers=fwd)  # a Unix-socket peer is always believed
    assert env["REMOTE_ADDR"] == "203.0.113.9" and env["wsgi.url_scheme"] == "https"
    env = get_env(unix, headers={"X-Forwarded-Proto": "gopher"})
    assert env["wsgi.url_scheme"] == "http"


def test_forwarded_allow_ips_is_validated(procs: ProcGroup) -> None:
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{free_port()}", "--forwarded-allow-ips",
                        "10.0.0.0/33", ready=False)
    assert proc.wait(timeout=10) != 0
    wait_for(lambda: "forwarded-allow-ips" in proc.log_text(), timeout=5)


def test_limit_post_on_http(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--limit-post", "1000")
    addr = ("127.0.0.1", port)
    with RawHTTP(addr) as c:
        c.send(request_bytes("POST", "/echo", body=b"x" * 2000))
        r = c.response()
        assert r.status == 413 and b"limit-post" in r.body and c.closed_by_peer()
    with RawHTTP(addr) as c:
        c.send(request_bytes("POST", "/echo-chunks", {"Transfer-Encoding": "chunked"})
               + chunked(b"x" * 600, b"y" * 600))
        r = c.response()
        assert r.status == 413 and c.closed_by_peer()
    with RawHTTP(addr) as c:
        c.send(request_bytes("POST", "/echo", body=b"x" * 1000))
        assert c.response().body == b"x" * 1000


def test_keepalive_off(procs: ProcGroup) -> None:
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive", "false")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/a"))
        r = c.response()
        assert r.header("Connection") == "close" and c.closed_by_peer()


def test_unread_body_is_drained_and_the_connection_kept(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/ignore-body", body=b"z" * 50000) + request_bytes("GET", "/next"))
        r = c.response()
        assert r.body == b"ignored" and r.header("Connection") is None
        assert c.response().body == b"hello /next"


def test_close_after_cap_does_not_reset_the_last_response(procs: ProcGroup) -> None:
    """The client pipelines past the per-connection cap: the last answered response must
    arrive whole (a close with unread bytes would be a reset)."""
    port = free_port()
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive-requests", "2")
    for _ in range(3):
        with RawHTTP(("127.0.0.1", port)) as c:
            c.send(request_bytes("GET", "/a") + request_bytes("GET", "/big?n=8000000"))
            assert c.response().body == b"hello /a"
            c.send(request_bytes("GET", "/x") * 50)  # arrives while the body is being sent: never read
            r = c.response()
            assert r.header("Connection") == "close" and len(r.body) == 8000000


def test_stats_and_scoreboard_see_http_sockets(procs: ProcGroup, tmp_path: Path) -> None:
    port = free_port()
    stats = str(tmp_path / "stats.sock")
    start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--stats", stats, "--processes", "1")
    with RawHTTP(("127.0.0.1", port)) as c:
        for i in range(5):
            c.send(request_bytes("GET", f"/{i}"))
            c.response()

    def read_stats() -> dict[str, object]:
        s = socket.socket(socket.AF_UNIX)
        s.connect(stats)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return json.loads(data)  # type: ignore[no-any-return]

    st = read_stats()
    assert [x["proto"] for x in st["sockets"]] == ["http"]  # type: ignore[index, union-attr]
    wait_for(lambda: read_stats()["workers"][0]["requests"] >= 5, timeout=5)  # type: ignore[index]


def test_a_zerg_serves_lent_http_sockets(procs: ProcGroup, tmp_path: Path) -> None:
    """A zerg with ``protocol = http`` serves the parent's HTTP socket, keep-alive included."""
    import psutil
    from harness import wait_for_log

    port = free_port()
    zsock = tmp_path / "z.sock"
    parent = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--zerg-server", str(zsock),
                          "--processes", "1", name="parent")
    z = start_vassal(procs, "--zerg", str(zsock), "--protocol", "http", "--processes", "2", name="zerg")
    wait_for_log(parent, r"zerg server: handed 1 socket\(s\) to pid")
    zerg_workers = {c.pid for c in psutil.Process(z.pid).children()}

    def zerg_answered() -> bool:
        with RawHTTP(("127.0.0.1", port)) as c:
            c.send(request_bytes("GET", "/pid"))
            r = c.response()
            assert r.status == 200
            return int(r.body.split()[0]) in zerg_workers

    wait_for(zerg_answered, timeout=10, what="a zerg worker answering over HTTP")


def test_harakiri_on_an_http_request(procs: ProcGroup) -> None:
    port = free_port()
    proc = start_vassal(procs, "--http-socket", f"127.0.0.1:{port}", "--harakiri", "1", "--processes", "1")
    with RawHTTP(("127.0.0.1", port), timeout=10) as c:
        c.send(request_bytes("GET", "/hang"))
        assert c.closed_by_peer(within=8)  # the worker was killed: the connection closes
    wait_for(lambda: "GET /hang" in proc.log_text(), timeout=5)  # the request is named in the log
    with RawHTTP(("127.0.0.1", port), timeout=10) as c:  # a new worker serves
        c.send(request_bytes("GET", "/after"))
        assert c.response().body == b"hello /after"


def test_one_address_cannot_speak_both_protocols() -> None:
    from types import SimpleNamespace

    from emperor.addresses import AddressError
    from emperor.vassal.sockets import configured

    cfg = SimpleNamespace(socket=["/a.sock"], http_socket=["/b.sock"], http=None, protocol="uwsgi")
    assert configured(cfg, ["127.0.0.1:8443"]) == {"/a.sock": "uwsgi", "/b.sock": "http",
                                                   "127.0.0.1:8443": "https"}
    cfg.protocol = "http"
    assert configured(cfg, []) == {"/a.sock": "http", "/b.sock": "http"}
    cfg = SimpleNamespace(socket=["/a.sock"], http_socket=["/a.sock"], http=None, protocol="uwsgi")
    with pytest.raises(AddressError, match="both"):
        configured(cfg, [])
    cfg = SimpleNamespace(socket=None, http_socket=["/a.sock"], http=None, protocol="uwsgi")
    with pytest.raises(AddressError, match="https-socket"):
        configured(cfg, ["/a.sock"])


def test_upgrade_is_answered_then_closed(addr: object) -> None:
    with RawHTTP(addr) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/u", {"Connection": "Upgrade", "Upgrade": "websocket"})
               + request_bytes("GET", "/never"))
        r = c.response()
        assert r.body == b"hello /u" and r.header("Connection") == "close"
        assert c.closed_by_peer()
