"""ASGI vassals on HTTP/1.1 sockets (issue #14): directly and behind nginx ``proxy_pass``.

One ASGI vassal (tests/apps/asgiapp.py, one worker) with an ``http-socket`` on TCP and nginx
in front of it with an upstream keepalive pool serve the module; the keep-alive policy tests
start their own vassal.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import BackgroundLoad, Nginx, ProcGroup, free_port, http_get, wait_for, wait_for_log
from harness.http_client import RawHTTP, request_bytes
from harness.procs import Proc
from test_asgi import stats_doc
from test_asgi_websocket import Client, early_ping_exchange
from test_http_tls import TLSClient, make_cert
from vassal_runner import APPS, worker_pids
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    TextMessage,
)

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

Addr = tuple[str, int]
WS_PROXY = ('proxy_http_version 1.1;\nproxy_set_header Upgrade $http_upgrade;\n'
            'proxy_set_header Connection "upgrade";\nproxy_read_timeout 60s;')


def start_asgi_http(procs: ProcGroup, *args: str, name: str = "asgi-http",
                    env: dict[str, str] | None = None) -> Proc:
    cmd = [sys.executable, "-m", "emperor.vassal", "--chdir", str(APPS), "--asgi", "asgiapp:app", *args]
    proc = procs.start(cmd, name=name, env=env)
    wait_for_log(proc, r"ready: \d+ worker", timeout=15)
    return proc


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("asgihttp")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    procs = ProcGroup(tmp / "logs")
    try:
        port = free_port()
        events = tmp / "events.log"
        vassal = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1",
                                 "--limit-post", "2000000", env={"ASGI_EVENTS": str(events)})
        ng = Nginx(tmp / "nginx", group=procs)
        up = ng.add_upstream("asgi_http", [("127.0.0.1", port)], "keepalive 8;")
        ng.add_proxy("/", up, extra="proxy_buffering off;\nproxy_request_buffering off;\n"
                                    "proxy_set_header X-Forwarded-For $remote_addr;\n"
                                    "proxy_set_header X-Forwarded-Proto https;")
        ng.add_proxy("/plain/", up + "/")  # proxy_pass http://asgi_http/: /plain/x -> /x
        ng.add_proxy("/ws", up, keepalive=False, extra=WS_PROXY)
        ng.start()
        yield {"addr": ("127.0.0.1", port), "vassal": vassal, "events": events, "ng": ng,
               "url": ng.url("/").rstrip("/")}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


def scope_of(c: RawHTTP, path: str = "/scope", headers: dict[str, str] | None = None) -> dict[str, object]:
    c.send(request_bytes("GET", path, headers))
    r = c.response()
    assert r.status == 200, r.body
    return json.loads(r.body)  # type: ignore[no-any-return]


# ---- directly ----------------------------------------------------------------------------
def test_json_get_scope_from_the_http_head(front: dict[str, object]) -> None:
    addr: Addr = front["addr"]  # type: ignore[assignment]
    conn = http.client.HTTPConnection(*addr, timeout=5)
    try:
        conn.request("GET", "/scope?a=1&b=%C3%A9", headers={"X-Custom": "v1"})
        resp = conn.getresponse()
        s = json.loads(resp.read())
        assert resp.status == 200 and resp.getheader("Date") and resp.getheader("Content-Type")
    finally:
        conn.close()
    assert s["type"] == "http" and s["http_version"] == "1.1" and s["method"] == "GET"
    assert s["scheme"] == "http" and s["root_path"] == "" and s["path"] == "/scope"
    assert s["raw_path"] == "/scope" and s["query_string"] == "a=1&b=%C3%A9"
    assert s["client"][0] == "127.0.0.1" and s["server"] == ["127.0.0.1", addr[1]]
    headers = dict(s["headers"])
    assert headers["x-custom"] == "v1" and headers["host"] == f"{addr[0]}:{addr[1]}"
    with RawHTTP(addr) as c:
        s = scope_of(c, "/sc%6Fpe")  # percent-decoded path, raw_path as sent
        assert s["path"] == "/scope" and s["raw_path"] == "/sc%6Fpe"


def test_forwarded_headers_only_from_trusted_peers(front: dict[str, object]) -> None:
    addr: Addr = front["addr"]  # type: ignore[assignment]
    fwd = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7", "X-Forwarded-Proto": "https"}
    with RawHTTP(addr) as c:
        s = scope_of(c, headers=fwd)
    assert s["scheme"] == "https" and s["client"] == ["198.51.100.7", 0]
    sock = socket.create_connection(addr, timeout=5, source_address=("127.0.0.2", 0))
    sock.sendall(request_bytes("GET", "/scope", {**fwd, "Connection": "close"}))
    raw = b""
    while chunk := sock.recv(65536):
        raw += chunk
    sock.close()
    s = json.loads(raw.partition(b"\r\n\r\n")[2].split(b"\r\n")[1])  # one chunk, then 0
    assert s["scheme"] == "http" and s["client"][0] == "127.0.0.2"


def test_keepalive_reuse(front: dict[str, object]) -> None:
    addr: Addr = front["addr"]  # type: ignore[assignment]
    conn = http.client.HTTPConnection(*addr, timeout=5)
    try:
        ports = set()
        for i in range(10):
            conn.request("GET", f"/scope?i={i}")
            s = json.loads(conn.getresponse().read())
            assert s["query_string"] == f"i={i}"
            ports.add(s["client"][1])
        assert len(ports) == 1  # one TCP connection served all 10
        conn.request("POST", "/echo", body=b"z" * 100000)
        assert conn.getresponse().read() == b"z" * 100000
    finally:
        conn.close()


def test_head_and_bodiless_responses_on_a_kept_connection(front: dict[str, object]) -> None:
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("HEAD", "/"))
        r = c.response(head_request=True)
        assert r.status == 200 and r.header("Transfer-Encoding") is None and r.header("Date")
        c.send(request_bytes("GET", "/"))  # parsed right only if the HEAD answer had no body
        assert c.response().body == b"hello asgi\n"


def test_streamed_upload_chunked(front: dict[str, object]) -> None:
    """/echo sends back each body event as it arrives: the first piece comes back before the
    second one is sent (the request body streams, de-chunked)."""
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/echo", {"Transfer-Encoding": "chunked"}) + b"5\r\nfirst\r\n")
        c.sock.settimeout(5)
        while b"first" not in c.buf:
            assert c._fill(), "closed before the first piece came back"
        c.send(b"6\r\nsecond\r\n0\r\n\r\n")
        while not c.buf.endswith(b"0\r\n\r\n"):
            assert c._fill()
        assert b"second" in c.buf


def test_streamed_download_each_chunk_at_once(front: dict[str, object]) -> None:
    addr: Addr = front["addr"]  # type: ignore[assignment]
    with socket.create_connection(addr, timeout=5) as sock:
        sock.sendall(request_bytes("GET", "/stream?n=4&delay=0.2"))
        buf, lags = b"", []
        while b"end\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk
            now = time.time()
            buf += chunk
            for line in chunk.split(b"\n"):
                parts = line.split(b" ")
                if len(parts) == 2 and parts[1].isdigit():
                    lags.append(now - float(parts[0]))
    assert b"transfer-encoding: chunked" in buf.lower()
    assert len(lags) == 4 and max(lags) < 0.1, lags


def test_client_disconnect_reaches_the_app(front: dict[str, object]) -> None:
    """The client goes away mid-response on a kept-alive HTTP connection: http.disconnect."""
    events = Path(str(front["events"]))
    before = events.read_text().count("disconnect") if events.exists() else 0
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/wait-disconnect"))
        while b"waiting" not in c.buf:
            assert c._fill()
    wait_for(lambda: events.exists() and events.read_text().count("disconnect") > before, 10,
             what="the app to see http.disconnect")


def test_pipelined_requests_in_order(front: dict[str, object]) -> None:
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/sleep?s=0.2") + request_bytes("POST", "/echo", body=b"payload")
               + request_bytes("GET", "/"))
        assert b"peak" in c.response().body
        assert c.response().body == b"payload"
        assert c.response().body == b"hello asgi\n"


def test_expect_100_continue(front: dict[str, object]) -> None:
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("POST", "/count", {"Expect": "100-continue", "Content-Length": "5"}))
        assert c.response().status == 100
        c.send(b"hello")
        r = c.response()
        assert r.status == 200 and json.loads(r.body)["bytes"] == 5


def test_http10_is_close_delimited(front: dict[str, object]) -> None:
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/stream?n=2&delay=0", version="HTTP/1.0"))
        r = c.response()
        assert r.header("Transfer-Encoding") is None and r.header("Connection") == "close"
        assert r.body.endswith(b"end\n") and c.closed_by_peer()


def test_bad_request_closes_only_that_connection(front: dict[str, object]) -> None:
    addr: Addr = front["addr"]  # type: ignore[assignment]
    with RawHTTP(addr) as good:
        assert scope_of(good)["method"] == "GET"
        with RawHTTP(addr) as bad:
            bad.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            assert bad.response().status == 400
            assert bad.closed_by_peer()
        with RawHTTP(addr) as bad:
            bad.send(request_bytes("GET", "/") + b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
            assert bad.response().body == b"hello asgi\n"
            assert bad.response().status == 400 and bad.closed_by_peer()
        assert scope_of(good)["method"] == "GET"  # the other connection is unaffected
    wait_for_log(front["vassal"], r"bad request", timeout=5)  # type: ignore[arg-type]


def test_error_answer_lingers_for_a_client_still_sending(front: dict[str, object]) -> None:
    """After a 400 the worker half-closes and reads what the client still sends, rather than
    closing at once: a close with unread bytes makes the kernel reset the client's next segment,
    which can destroy the answer before it is read (the sync worker's send_error does the same)."""
    addr: Addr = front["addr"]  # type: ignore[assignment]
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nBad Name: x\r\nContent-Length: 100000\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):  # the answer, then our FIN (write_eof), not a close
            got += chunk
        assert got.startswith(b"HTTP/1.1 400")
        for _ in range(20):  # the rest of the body the client was sending: read and dropped
            s.sendall(b"x" * 1000)
            s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)  # EOF (b"") while lingering; a reset raises
        s.shutdown(socket.SHUT_WR)


def test_app_error_is_500_and_closes(front: dict[str, object]) -> None:
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/raise"))
        assert c.response().status == 500 and c.closed_by_peer()
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        assert scope_of(c)["method"] == "GET"


def test_body_short_of_content_length_resets(front: dict[str, object]) -> None:
    """An app that declares 10 bytes and sends 5: the connection is cut (a reset), never left
    open for the client to read the next response as the missing bytes."""
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/short"))
        assert c.closed_by_peer()
        assert not c.buf.endswith(b"12345")
    wait_for_log(front["vassal"], r"bytes under the response's Content-Length", timeout=5)  # type: ignore[arg-type]
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        assert scope_of(c)["method"] == "GET"


# ---- behind nginx proxy_pass -----------------------------------------------------------
def test_behind_nginx_json_get_and_trusted_forwarding(front: dict[str, object]) -> None:
    status, _, body = http_get(str(front["url"]) + "/scope?x=1")
    assert status == 200, body
    s = json.loads(body)
    assert s["query_string"] == "x=1" and s["scheme"] == "https"  # X-Forwarded-Proto from nginx
    assert s["client"] == ["127.0.0.1", 0]  # X-Forwarded-For: the address nginx saw


def test_behind_nginx_upstream_keepalive_reuses_connections(front: dict[str, object]) -> None:
    """/plain/ sends no X-Forwarded-For, so the scope's client is nginx's upstream connection:
    one source port for every request means nginx reused one kept-alive connection."""
    ports = set()
    for _ in range(6):
        status, _, body = http_get(str(front["url"]) + "/plain/scope")
        assert status == 200, body
        s = json.loads(body)
        assert s["path"] == "/scope" and s["scheme"] == "http"
        ports.add(s["client"][1])
    assert len(ports) == 1, ports


def test_behind_nginx_streamed_response(front: dict[str, object]) -> None:
    url = str(front["url"])
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/stream?n=4&delay=0.2")
        resp = conn.getresponse()
        assert resp.status == 200
        lags = []
        while line := resp.readline():
            parts = line.split(b" ")
            if len(parts) == 2 and parts[1].strip().isdigit():
                lags.append(time.time() - float(parts[0]))
    finally:
        conn.close()
    assert len(lags) == 4 and max(lags) < 0.1, lags


def test_idle_connection_survives_a_graceful_reload(procs: ProcGroup) -> None:
    """An idle keep-alive connection is handed to the master at a reload (not closed under a
    proxy that may be reusing it); the next request on it is served by a new worker."""
    port = free_port()
    proc = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", name="park")
    old = worker_pids(proc)
    with RawHTTP(("127.0.0.1", port)) as c:
        assert scope_of(c)["pid"] in old
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: worker_pids(proc) and not (worker_pids(proc) & old), 15, what="new workers")
        assert not c.closed_by_peer(within=0.3)
        s = scope_of(c)
        assert s["pid"] not in old and s["pid"] in worker_pids(proc)


def test_reload_under_load_behind_nginx_keepalive_fails_nothing(procs: ProcGroup, nginx: Any) -> None:
    """Graceful reload with nginx holding kept-alive upstream connections: the old workers
    close their idle connections and finish the busy ones with Connection: close."""
    port = free_port()
    proc = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "2", name="reload")
    ng = nginx()
    up = ng.add_upstream("reload_up", [("127.0.0.1", port)], "keepalive 8;")
    ng.add_proxy("/", up)
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


# ---- WebSockets ------------------------------------------------------------------------
def _echo(c: Client, n: int) -> None:
    assert isinstance(c.handshake, AcceptConnection)
    for i in range(n):
        if i % 2:
            c.send(BytesMessage(data=bytes([i % 256]) * (i % 300)))
            assert c.message() == bytes([i % 256]) * (i % 300)
        else:
            c.send(TextMessage(data=f"message {i} é"))
            assert c.message() == f"message {i} é"
    c.send(CloseConnection(code=1000))
    assert isinstance(c.message(), CloseConnection)
    c.close()


def test_websocket_echo_direct(front: dict[str, object]) -> None:
    port = front["addr"][1]  # type: ignore[index]
    _echo(Client(port, "/ws"), 1000)
    c = Client(port, "/ws-scope", subprotocols=["chat"])
    assert isinstance(c.handshake, AcceptConnection) and c.handshake.subprotocol == "chat"
    s = json.loads(c.message())  # type: ignore[arg-type]
    assert s["type"] == "websocket" and s["scheme"] == "ws" and s["subprotocols"] == ["chat"]
    assert "method" not in s and s["path"] == "/ws-scope"
    c.close()
    c = Client(port, "/ws-refuse")
    assert isinstance(c.handshake, RejectConnection) and c.handshake.status_code == 403
    c.close()


def test_websocket_echo_behind_nginx_proxy_pass(front: dict[str, object]) -> None:
    port = int(str(front["url"]).rsplit(":", 1)[1])
    _echo(Client(port, "/ws"), 1000)


def test_websocket_closed_with_1001_on_graceful_stop(procs: ProcGroup) -> None:
    port = free_port()
    proc = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", name="ws-stop")
    c = Client(port, "/ws")
    assert isinstance(c.handshake, AcceptConnection)
    c.send(TextMessage(data="hi"))
    assert c.message() == "hi"
    proc.popen.send_signal(15)  # SIGTERM: graceful stop
    close = c.message()
    assert isinstance(close, CloseConnection) and close.code == 1001
    c.close()
    assert proc.wait(10) == 0


# ---- own vassals: TLS, timeouts, keep-alive policy -------------------------------------
def test_https_socket(procs: ProcGroup, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "asgi")
    port = free_port()
    start_asgi_http(procs, "--https-socket", f"127.0.0.1:{port},{cert},{key}", "--processes", "1")
    with TLSClient(port, cert) as c:
        s = scope_of(c)
        assert s["scheme"] == "https" and s["server"] == ["127.0.0.1", port]
        assert scope_of(c)["client"] == s["client"]  # kept alive over TLS
    ws = Client(port, "/ws-scope", sock=TLSClient(port, cert).sock)  # type: ignore[arg-type]
    assert isinstance(ws.handshake, AcceptConnection)
    assert json.loads(ws.message())["scheme"] == "wss"  # type: ignore[arg-type]
    ws.send(TextMessage(data="over tls"))
    assert ws.message() == "over tls"
    ws.close()


def test_slow_head_is_cut_after_socket_timeout(procs: ProcGroup) -> None:
    """A client trickling its head (slowloris) is cut after socket-timeout, not kept alive by
    each byte."""
    port = free_port()
    proc = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--socket-timeout", "1",
                           "--processes", "1")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        t0 = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        while time.monotonic() - t0 < 4:
            try:
                sock.sendall(b"X")
                sock.settimeout(0.3)
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed and time.monotonic() - t0 < 2.5
    wait_for_log(proc, r"sent only part of a request head", timeout=5)


def test_stats_count_requests_and_idle_keepalive_is_not_in_flight(procs: ProcGroup, sock_dir: Path) -> None:
    """Each request on a kept connection is counted; between requests the connection is not in
    flight (an idle worker looks idle to the stats, busyness and harakiri); during one it is."""
    port = free_port()
    stats = sock_dir / "stats.sock"
    start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", "--stats", str(stats))
    with RawHTTP(("127.0.0.1", port)) as c:
        for _ in range(3):
            c.send(request_bytes("GET", "/"))
            assert c.response().status == 200
        # the master may read the slot between the request count and the in-flight store
        # (scoreboard.py: no lock), so both are awaited together
        w = wait_for(lambda: ((d := stats_doc(stats)["workers"][0])["requests"] == 3
                              and d["in_flight"] == 0 and d), 5,
                     what="3 requests in the stats, none in flight")
        assert w["status"] == "idle"
        c.send(request_bytes("GET", "/sleep?s=1"))
        w = wait_for(lambda: (d := stats_doc(stats)["workers"][0])["in_flight"] == 1 and d, 5,
                     what="the slow request in flight")
        assert w["status"] == "busy"
        assert c.response().status == 200


def test_harakiri_on_a_blocked_loop(procs: ProcGroup) -> None:
    port = free_port()
    proc = start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--processes", "1", "--harakiri", "2")
    t0 = time.monotonic()
    with RawHTTP(("127.0.0.1", port), timeout=30) as c:
        c.send(request_bytes("GET", "/block?s=60"))
        assert c.closed_by_peer(within=10)  # the worker died with the request
    assert time.monotonic() - t0 < 10
    wait_for_log(proc, r"HARAKIRI: worker 1 .*GET /block", timeout=5)

    def serving() -> bool:
        with RawHTTP(("127.0.0.1", port)) as c:
            c.send(request_bytes("GET", "/"))
            return c.response().status == 200

    wait_for(serving, 10, what="serving again", ignore=(OSError, EOFError))


def test_idle_keepalive_connection_is_closed(procs: ProcGroup) -> None:
    port = free_port()
    start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive", "1", "--processes", "1")
    with RawHTTP(("127.0.0.1", port)) as c:
        c.send(request_bytes("GET", "/"))
        assert c.response().body == b"hello asgi\n"
        t0 = time.monotonic()
        assert c.closed_by_peer(within=5.0)
        assert 0.5 < time.monotonic() - t0 < 4.0


def test_per_connection_request_cap(procs: ProcGroup) -> None:
    port = free_port()
    start_asgi_http(procs, "--http-socket", f"127.0.0.1:{port}", "--http-keepalive-requests", "3",
                    "--processes", "1")
    with RawHTTP(("127.0.0.1", port)) as c:
        for _ in range(3):
            c.send(request_bytes("GET", "/"))
            r = c.response()
        assert r.header("Connection") == "close" and c.closed_by_peer()


def test_protocol_http_socket_and_max_requests(procs: ProcGroup, tmp_path: Path) -> None:
    """``protocol = http`` turns ``socket`` into an HTTP listener; max-requests recycles the
    worker between requests, and the stats count the requests."""
    port = free_port()
    proc = start_asgi_http(procs, "--socket", f"127.0.0.1:{port}", "--protocol", "http", "--processes", "1",
                           "--max-requests", "3", "--max-requests-delta", "0")
    pids = set()
    for _ in range(5):
        with RawHTTP(("127.0.0.1", port)) as c:
            pids.add(scope_of(c)["pid"])
    assert len(pids) >= 2
    wait_for_log(proc, r"recycled: max-requests", timeout=5)


# ---- defects of the HTTP codec (each test failed before its fix) ---------------------------
def test_worker_500_says_connection_close(front: dict[str, object]) -> None:
    """The worker's own 500 (the app raised, or returned without a response) ends the connection,
    so its head says so (RFC 9112 9.6), as the codec's 4xx do."""
    for path in ("/raise", "/nostart"):
        with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
            c.send(request_bytes("GET", path))
            r = c.response()
            assert r.status == 500 and r.header("Connection") == "close", (path, r.header("Connection"))
            assert r.header("Date") and c.closed_by_peer()


def test_disconnect_reaches_the_app_while_reading_is_paused(front: dict[str, object]) -> None:
    """A pipelined request waits in the parser with reading paused; the client then goes away:
    the app, still waiting on receive(), gets http.disconnect all the same."""
    events = Path(str(front["events"]))
    before = events.read_text().count("disconnect") if events.exists() else 0
    with RawHTTP(front["addr"]) as c:  # type: ignore[arg-type]
        c.send(request_bytes("GET", "/wait-disconnect"))
        while b"waiting" not in c.buf:  # the app has read its request and waits on receive()
            assert c._fill()
        c.send(request_bytes("GET", "/"))  # pipelined: parsed and held, reading paused (then our close)
    wait_for(lambda: events.exists() and events.read_text().count("disconnect") > before, 10,
             what="the app to see http.disconnect while its connection's reading is paused")


def _masked_text_frame(text: str) -> bytes:
    """One client-to-server text frame (RFC 6455 5.2: masked), small payload."""
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_frame_in_the_upgrade_packet_is_not_lost(front: dict[str, object]) -> None:
    """A client may send its first frame right behind the upgrade request, in the same packet:
    those bytes belong to the WebSocket and must reach the app."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    ws = WSConnection(ConnectionType.CLIENT)
    sock = socket.create_connection(front["addr"], timeout=10)  # type: ignore[arg-type]
    try:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/ws")) + _masked_text_frame("early bird"))
        got: list[Any] = []
        while not any(isinstance(e, TextMessage) for e in got):
            data = sock.recv(65536)
            assert data, f"closed before the echo; events so far: {got}"
            ws.receive_data(data)
            got += list(ws.events())
        assert isinstance(got[0], AcceptConnection)
        assert [e.data for e in got if isinstance(e, TextMessage)] == ["early bird"]
    finally:
        sock.close()


def _upgrade(path: str) -> bytes:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import Request

    return WSConnection(ConnectionType.CLIENT).send(Request(host="127.0.0.1", target=path))


def test_ping_behind_the_upgrade_is_answered_after_the_101(front: dict[str, object]) -> None:
    """A PING in the same packet as the upgrade request: its PONG comes after our 101, never
    before (a pong ahead of the handshake answer desynchronises the client)."""
    with socket.create_connection(front["addr"], timeout=10) as sock:  # type: ignore[arg-type]
        head, rest = early_ping_exchange(sock, _upgrade("/ws"))
    assert head.startswith(b"HTTP/1.1 101"), f"the first bytes are not the 101: {head[:80]!r}"
    assert rest.startswith(b"\x8a\x05early"), f"no pong right after the 101: {rest[:40]!r}"


def test_early_frames_dropped_when_the_app_refuses(front: dict[str, object]) -> None:
    """The app refuses (websocket.close before accept): a plain 403, and no pong for the early ping."""
    with socket.create_connection(front["addr"], timeout=10) as sock:  # type: ignore[arg-type]
        head, rest = early_ping_exchange(sock, _upgrade("/ws-refuse"))
    assert head.startswith(b"HTTP/1.1 403"), head[:80]
    assert rest == b"Forbidden\n", f"WebSocket bytes behind a refused handshake: {rest!r}"


def test_unix_http_socket_scope_has_no_addresses_and_trusts_its_peer(procs: ProcGroup,
                                                                    sock_dir: Path) -> None:
    """On a Unix http-socket the codec asks the kernel for no peer or server address (the
    listener's kind says there is none): client and server are None, and the peer is trusted
    with X-Forwarded-For / -Proto, as nginx's proxy_pass to a Unix socket needs."""
    sock = str(sock_dir / "asgi-http.sock")
    start_asgi_http(procs, "--http-socket", sock, "--processes", "1")
    with RawHTTP(sock) as c:
        s = scope_of(c)
        assert s["client"] is None and s["server"] is None and s["scheme"] == "http"
        s = scope_of(c, headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"})
        assert s["client"] == ["203.0.113.9", 0] and s["scheme"] == "https"


def test_failed_connection_setups_leave_the_worker_clean(procs: ProcGroup, tmp_path: Path,
                                                         sock_dir: Path) -> None:
    """A connection whose set-up fails (no TLS handshake on an https-socket: plain bytes, or a
    close right after connecting) is dropped without a trace: nothing stays in flight, no error
    is logged for it, and the worker serves the next client (``aio.Worker.open_connection``
    drives the set-up without a Task)."""
    cert, key = make_cert(tmp_path, "asgi")
    port = free_port()
    stats = sock_dir / "stats.sock"
    proc = start_asgi_http(procs, "--https-socket", f"127.0.0.1:{port},{cert},{key}", "--processes", "1",
                           "--stats", str(stats))
    for i in range(6):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not a TLS ClientHello
                s.settimeout(5)
                try:
                    s.recv(100)
                except OSError:
                    pass
    wait_for(lambda: stats_doc(stats)["workers"][0]["in_flight"] == 0, 5, what="nothing in flight")
    with TLSClient(port, cert) as c:
        assert scope_of(c)["scheme"] == "https"
    assert "setting up a connection" not in proc.log_text()
