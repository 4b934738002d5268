"""The sync HTTP worker's whole-request C path (``_speedups.plain``, ``HTTPServer.plain_request``)
against its Python path, over real sockets: for each app behaviour (the usual response, the
app's own Content-Length or Connection, bodyless statuses, HEAD, HTTP/1.0, iterators, write(),
exceptions before and after start_response, exc_info, bad bodies, close()), the bytes on the
wire, the keep-alive decision, the request log line and the counters are the same with the C
path on and off; the usual response really takes it; harakiri's note is set before the app; a
long run leaks no objects."""

from __future__ import annotations

import gc
import os
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emperor import config
from emperor.listeners import Listener
from emperor.options import Scope
from emperor.protocol import _speedups, http
from emperor.vassal import http_conn
from emperor.vassal import scoreboard as sb
from emperor.vassal.http_conn import HTTPServer
from emperor.vassal.worker import Worker

App = Callable[[dict[str, Any], Any], Any]
TEXT = [("Content-Type", "text/plain")]


class Closing:
    """A result with close(): the server must call it once, whichever path answers."""

    closed = 0

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        Closing.closed += 1


def _ok(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    return [b"hello " + env["PATH_INFO"].encode()]


def _own_length(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"12345"]


def _short_length(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "9")])
    return [b"12345"]


def _asks_close(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Connection", "close")])
    return [b"bye"]


def _no_content(env: dict[str, Any], sr: Any) -> Any:
    sr("204 No Content", [])
    return [b""]


def _not_modified(env: dict[str, Any], sr: Any) -> Any:
    sr("304 Not Modified", [("ETag", '"x"')])
    return [b""]


def _generator(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    yield b"a"
    yield b"bc"


def _two_pieces(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    return [b"a", b"bc"]


def _writes(env: dict[str, Any], sr: Any) -> Any:
    write = sr("200 OK", TEXT)
    write(b"written ")
    return [b"returned"]


def _writes_only(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "7")])(b"written")
    return []


def _raises_first(env: dict[str, Any], sr: Any) -> Any:
    raise RuntimeError("before start_response")


def _raises_after(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    raise ValueError("after start_response")


def _twice(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    sr("200 OK", TEXT)
    return [b"never"]


def _exc_info(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    try:
        raise KeyError("x")
    except KeyError:
        import sys

        sr("503 Service Unavailable", [("Retry-After", "1")], sys.exc_info())
    return [b"replaced"]


def _keyword_args(env: dict[str, Any], sr: Any) -> Any:
    sr(status="200 OK", headers=TEXT)
    return [b"kw"]


def _str_body(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    return ["not bytes"]


def _tuple_headers(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", (("Content-Type", "text/plain"),))
    return [b"tuple"]


def _bad_header(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("X-Split", "a\r\nInjected: 1")])
    return [b"x"]


def _no_start(env: dict[str, Any], sr: Any) -> Any:
    return [b"no head"]


def _closing(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    return Closing([b"closing"])


def _iter_declared(env: dict[str, Any], sr: Any) -> Any:  # a framework's response (werkzeug's)
    sr("200 OK", [("Content-Type", "application/json"), ("Content-Length", "9")])
    return Closing([b'{"a": 12}'])


def _iter_more_than_declared(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    yield b"abc"
    yield b"extra"
    yield b""
    yield b"more"


def _iter_raises_later(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    yield b"abc"
    raise RuntimeError("after the declared body")


def _iter_raises_first(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    return Raising()


class CloseRaises(Closing):
    def close(self) -> None:
        Closing.closed += 1
        raise OSError("close() of the result failed")


def _iter_close_raises(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    return CloseRaises([b"abc"])


def _iter_in_pieces(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "5")])
    return Closing([b"12", b"", b"345"])


def _iter_empty(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "0")])
    return Closing([])


def _iter_empty_undeclared(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", TEXT)
    return iter([])


def _iter_str(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    return iter(["abc"])


def _iter_empty_first(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    return iter([b"", b"abc"])


def _tuple_declared(env: dict[str, Any], sr: Any) -> Any:
    sr("200 OK", [("Content-Length", "3")])
    return (b"abc",)


def _file_wrapper(env: dict[str, Any], sr: Any) -> Any:
    f = open(__file__, "rb")  # noqa: SIM115 - the server closes it (FileWrapper.close)
    size = os.fstat(f.fileno()).st_size
    sr("200 OK", [("Content-Length", str(size))])
    return env["wsgi.file_wrapper"](f)


def _flask(env: dict[str, Any], sr: Any) -> Any:
    return _flask_app()(env, sr)


def _flask_app() -> Any:
    global _FLASK
    if _FLASK is None:
        from flask import Flask, jsonify

        _FLASK = Flask("plain")
        _FLASK.get("/p")(lambda: jsonify(message="Hello, World!", ok=True))
    return _FLASK


_FLASK: Any = None


class Raising:
    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raise LookupError("the first next()")

    def close(self) -> None:
        Closing.closed += 1


def _large(env: dict[str, Any], sr: Any) -> Any:  # above SMALL_BODY; within the socket's buffer
    sr("200 OK", [("Content-Type", "application/octet-stream")])
    return [bytes(range(256)) * 200]


APPS: dict[str, App] = {f.__name__.lstrip("_"): f for f in (
    _ok, _own_length, _short_length, _asks_close, _no_content, _not_modified, _generator, _two_pieces,
    _writes, _writes_only, _raises_first, _raises_after, _twice, _exc_info, _keyword_args, _str_body,
    _tuple_headers, _bad_header, _no_start, _closing, _large, _iter_declared, _iter_more_than_declared,
    _iter_raises_later, _iter_raises_first, _iter_close_raises, _iter_in_pieces, _iter_empty,
    _iter_empty_undeclared, _iter_str, _iter_empty_first, _tuple_declared, _file_wrapper, _flask)}

REQUESTS = {
    "get11": b"GET /p?q=1 HTTP/1.1\r\nHost: t\r\n\r\n",
    "head": b"HEAD /p HTTP/1.1\r\nHost: t\r\n\r\n",
    "get10": b"GET /p HTTP/1.0\r\nHost: t\r\n\r\n",
    "get10ka": b"GET /p HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
    "close": b"GET /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
}
_DATE = re.compile(rb"Date: [^\r]*\r\n")


class Rig:
    """One worker's HTTPServer on a Unix listener, and a client connection to it."""

    def __init__(self, tmp: str, app: App, *opts: tuple[str, str]) -> None:
        path = os.path.join(tmp, "s.sock")
        cfg = config.from_args([("http-socket", path), *opts], Scope.VASSAL)
        self.lsock = socket.socket(socket.AF_UNIX)
        self.lsock.bind(path)
        self.lsock.listen()
        lst = Listener("s.sock", self.lsock, "unix", proto="http")
        self.worker = Worker(1, [lst], cfg, sb.Scoreboard(2), app, lambda: app)
        self.server = HTTPServer(self.worker, [lst], None)
        self.server.peek = False
        self.site = self.server.sites[self.lsock.fileno()]
        self.client = socket.socket(socket.AF_UNIX)
        self.client.connect(path)
        fd, addr = self.lsock._accept()  # type: ignore[attr-defined]
        conn = self.server.accept(socket.socket(fileno=fd), self.site, addr)
        assert conn is not None
        self.conn = conn
        self.taken: list[str] = []  # what _speedups.plain returned, per request
        self.io_calls = 0  # serve_plain's calls
        real = self.server.plain
        if real is not None:
            def counting(*args: Any) -> Any:
                got = real(*args)
                self.taken.append("none" if got is None else "whole" if type(got) is tuple else "reply")
                return got
            self.server.plain = counting
        real_io = self.server.io
        if real_io is not None:  # serve_plain (serve_ready's): plain with its recv() and send()
            def counting_io(*args: Any) -> Any:
                self.io_calls += 1
                got = real_io(*args)
                if type(got) is int:
                    self.taken.append("whole")
                elif type(got) is bytes:
                    self.taken.append("none" if got else "eof")
                elif type(got) is tuple:
                    self.taken.append("whole" if type(got[0]) is tuple else "reply")
                return got
            self.server.io = counting_io

    def exchange(self, request: bytes, ready: bool = False) -> tuple[bytes, bool]:
        """Send ``request``, serve it, return (the bytes answered, the connection kept).
        ``ready``: as the sync loop serves a held connection its poll() saw readable."""
        self.client.sendall(request)
        keep = self.server.serve_ready(self.conn) if ready else self.server.serve(self.conn, first=False)
        out = bytearray()
        self.client.setblocking(False)
        try:
            while True:
                piece = self.client.recv(1 << 20)
                if not piece:
                    break
                out += piece
        except BlockingIOError:
            pass
        finally:
            self.client.setblocking(True)
        return _DATE.sub(b"Date: -\r\n", bytes(out)), keep

    def close(self) -> None:
        self.client.close()
        self.lsock.close()
        if self.conn.sock.fileno() >= 0:
            self.conn.sock.close()


QUIET = (("disable-logging", "true"),)


def _run(tmp: str, app: App, request: bytes, c_path: bool, times: int = 2,
         opts: tuple[tuple[str, str], ...] = QUIET, ready: bool = False) -> tuple[list[Any], list[str], Rig]:
    """``times`` requests on one connection (the first fills the head cache) while it is kept;
    ``ready``: served by ``serve_ready`` (the sync loop's call for a held connection)."""
    rig = Rig(tmp, app, *opts)
    if not c_path:
        rig.server.plain = None
    got: list[Any] = []
    try:
        for _ in range(times):
            out, keep = rig.exchange(request, ready)
            got.append((out, keep))
            if not keep:
                break
        counters = rig.worker.ints
        slot = rig.worker.slot
        got.append((counters[slot + sb.REQUESTS], counters[slot + sb.TX], counters[slot + sb.EXCEPTIONS],
                    counters[slot + sb.BUSY_SINCE]))
    finally:
        rig.close()
    return got, rig.taken, rig


@pytest.mark.parametrize("request_name", list(REQUESTS))
@pytest.mark.parametrize("app_name", list(APPS))
def test_c_path_answers_as_the_python_path(tmp_path: Any, app_name: str, request_name: str) -> None:
    app, request = APPS[app_name], REQUESTS[request_name]
    (tmp_path / "c").mkdir()
    (tmp_path / "py").mkdir()
    (tmp_path / "ready").mkdir()
    before = Closing.closed
    with_c, taken, _ = _run(str(tmp_path / "c"), app, request, True)
    closed_c = Closing.closed - before
    without_c, _, _ = _run(str(tmp_path / "py"), app, request, False)
    assert with_c == without_c
    assert closed_c == Closing.closed - before - closed_c  # close() as often on both paths
    if app_name in ("closing", "iter_declared", "iter_raises_first", "iter_close_raises"):
        assert closed_c == len(with_c) - 1  # once per request
    before = Closing.closed
    ready, taken_ready, rig = _run(str(tmp_path / "ready"), app, request, True, ready=True)
    assert ready == with_c and taken_ready == taken
    assert rig.io_calls == len(taken)  # every request through serve_plain (recv, plain, send in C)
    assert Closing.closed - before == closed_c
    assert taken and taken[0] in ("whole", "reply")
    whole = ("ok", "own_length", "keyword_args", "large", "iter_declared", "tuple_declared", "flask",
             "iter_close_raises")
    if app_name in whole and request_name in ("get11", "get10ka"):
        # the usual response: the first fills the head cache, the second is built whole in C
        assert taken[:2] == ["reply", "whole"], taken


def test_more_than_declared_after_a_whole_first_piece(tmp_path: Any) -> None:
    """The C path sent head and declared body; what the iterator yields after it is dropped and
    logged and the connection closed, as the Python path does (the second request here: the
    first, an honest one, filled the head cache)."""
    def stateful() -> App:
        calls = []

        def app(env: dict[str, Any], sr: Any) -> Any:
            calls.append(1)
            sr("200 OK", [("Content-Length", "3")])
            yield b"abc"
            if len(calls) > 1:
                yield b"extra"
        return app

    got = {}
    for c_path in (True, False):
        d = tmp_path / str(c_path)
        d.mkdir()
        got[c_path], taken, _ = _run(str(d), stateful(), REQUESTS["get11"], c_path, times=3)
        if c_path:
            assert taken == ["reply", "whole"]
    assert got[True] == got[False]
    assert [keep for _out, keep in got[True][:-1]] == [True, False]


def test_close_failure_is_logged_once_on_both_paths(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A result whose close() raises after a whole declared body: C calls close() (and the
    Python side logs the failure) as the Python path does; the connection is kept."""
    logged = {}
    for name, c_path, ready in (("c", True, False), ("ready", True, True), ("py", False, False)):
        (tmp_path / name).mkdir()
        caplog.clear()
        got, taken, _ = _run(str(tmp_path / name), _iter_close_raises, REQUESTS["get11"], c_path, times=3,
                             ready=ready)
        assert [keep for _out, keep in got[:-1]] == [True, True, True]
        if c_path:
            assert taken == ["reply", "whole", "whole"]
        logged[name] = [r.getMessage() for r in caplog.records if "close()" in r.getMessage()]
        assert len(logged[name]) == 3, logged
        assert all(r.exc_info and "close() of the result failed" in str(r.exc_info[1])
                   for r in caplog.records if "close()" in r.getMessage())
    assert logged["c"] == logged["ready"] == logged["py"]


@pytest.fixture
def tmp_dirs(tmp_path: Any) -> Iterator[Callable[[str], str]]:
    def make(name: str) -> str:
        d = tmp_path / name
        d.mkdir()
        return str(d)
    yield make


def test_request_log_line_is_the_same(tmp_dirs: Callable[[str], str],
                                      capfd: pytest.CaptureFixture[str]) -> None:
    """A response built whole in C is logged from its Reply (http_conn.Sent) as an exchange is."""
    lines = {}
    for c_path in (True, False):
        _run(tmp_dirs(str(c_path)), _ok, REQUESTS["get11"], c_path, times=3, opts=())
        err = capfd.readouterr().err
        lines[c_path] = [re.sub(r"^.*?\] | [\d.]+ms", "", ln) for ln in err.splitlines() if "GET /p" in ln]
    assert len(lines[True]) == 3
    assert lines[True] == lines[False]


def test_plain_reads_only_a_whole_bodiless_head(tmp_dirs: Callable[[str], str]) -> None:
    """A body, a pipelined second request or a partial head go to the parser (plain returns None)."""
    for request in (b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab",
                    REQUESTS["get11"] * 2):
        with_c, taken, _ = _run(tmp_dirs(str(len(request)) + "c"), _ok, request, True, times=1)
        without_c, _, _ = _run(tmp_dirs(str(len(request)) + "p"), _ok, request, False, times=1)
        ready, taken_ready, _ = _run(tmp_dirs(str(len(request)) + "r"), _ok, request, True, times=1,
                                     ready=True)
        assert taken == taken_ready == ["none"]
        assert with_c == without_c == ready
        assert with_c[0][0].count(b"HTTP/1.1 200 OK") == request.count(b"HTTP/1.1")


def test_half_a_head_through_serve_ready_leaves_the_slot_idle(tmp_dirs: Callable[[str], str]) -> None:
    """serve_plain marks the slot busy before it parses (as plain_request does): half a head goes
    to the parser with the slot idle again, and the rest completes the request."""
    rig = Rig(tmp_dirs("half"), _ok, ("disable-logging", "true"), ("socket-timeout", "1"))
    try:
        ints, slot = rig.worker.ints, rig.worker.slot
        rig.client.sendall(b"GET /p HTTP/1.1\r\nHost: t\r\n")
        seen: list[int] = []
        real = rig.server.serve

        def serve(conn: Any, first: bool) -> bool:
            seen.append(ints[slot + sb.BUSY_SINCE])  # what the parser's path starts with
            rig.client.sendall(b"\r\n")
            return real(conn, first)

        rig.server.serve = serve  # type: ignore[method-assign]
        assert rig.server.serve_ready(rig.conn)
        assert rig.taken == ["none"] and seen == [0]
        assert rig.client.recv(65536).startswith(b"HTTP/1.1 200 OK")
        assert ints[slot + sb.BUSY_SINCE] == 0 and ints[slot + sb.REQUESTS] == 1
    finally:
        rig.close()


def test_serve_ready_on_a_closed_or_quiet_connection(tmp_dirs: Callable[[str], str]) -> None:
    """Nothing to read after all: the connection stays held; the peer's close: it is closed."""
    rig = Rig(tmp_dirs("eof"), _ok, ("disable-logging", "true"))
    try:
        assert rig.server.serve_ready(rig.conn)  # a spurious wake-up: still idle
        assert rig.taken == []
        rig.client.close()
        assert not rig.server.serve_ready(rig.conn)
        assert rig.taken == ["eof"] and rig.conn.sock.fileno() == -1
        assert rig.worker.ints[rig.worker.slot + sb.REQUESTS] == 0
    finally:
        rig.lsock.close()


def test_serve_ready_answer_larger_than_the_socket_buffer(tmp_dirs: Callable[[str], str]) -> None:
    """serve_plain's one non-blocking send() takes what the socket buffer holds; the Python side
    sends the rest (finish_plain) and the request is counted with every byte."""
    import threading

    body = bytes(range(256)) * 16384  # 4 MiB

    def big(env: dict[str, Any], sr: Any) -> Any:
        sr("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]

    rig = Rig(tmp_dirs("big"), big, ("disable-logging", "true"))
    sndbuf = rig.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    got = bytearray()

    def read() -> None:
        while True:
            head_end = got.find(b"\r\n\r\n")
            if head_end >= 0 and len(got) >= head_end + 4 + len(body):
                return
            piece = rig.client.recv(1 << 20)
            if not piece:
                return
            got.extend(piece)

    try:
        for _ in range(2):  # the first fills the head cache; the second is built whole in C
            got.clear()
            reader = threading.Thread(target=read)
            rig.client.sendall(REQUESTS["get11"])
            reader.start()
            assert rig.server.serve_ready(rig.conn)
            reader.join(10)
            head, _, rest = bytes(got).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and rest == body
        assert rig.taken == ["reply", "whole"]
        ints, slot = rig.worker.ints, rig.worker.slot
        assert ints[slot + sb.REQUESTS] == 2 and ints[slot + sb.BUSY_SINCE] == 0
        assert ints[slot + sb.TX] == 2 * (len(head) + 4 + len(body))
        # the answer was larger than the send buffer: it was raised (exchange.fit_sndbuf)
        assert rig.conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > sndbuf
    finally:
        rig.close()


def test_fit_sndbuf_raises_unix_buffers_only() -> None:
    """A large answer raises a Unix-socket connection's send buffer (bounded by SNDBUF_MAX and
    the kernel's wmem_max); a TCP connection keeps the kernel's own tuning."""
    from emperor.vassal.exchange import fit_sndbuf

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    try:
        before = a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        fit_sndbuf(a, 1 << 20)
        assert a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > before
        tcp_before = server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        fit_sndbuf(server, 1 << 20)
        assert server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == tcp_before
        b.close()
        fit_sndbuf(a, 1 << 20)  # a peer gone: no error here (the send reports it)
        a.close()
        fit_sndbuf(a, 1 << 20)  # a closed socket: no error either
    finally:
        for s in (a, b, listener, client, server):
            s.close()


def test_harakiri_note_is_set_before_the_app(tmp_dirs: Callable[[str], str]) -> None:
    seen: list[str] = []
    rig: list[Rig] = []

    def app(env: dict[str, Any], sr: Any) -> Any:
        w = rig[0].worker
        seen.append(w.board.text(w.index))
        return _ok(env, sr)

    r = Rig(tmp_dirs("h"), app, ("harakiri", "30"), ("disable-logging", "true"))
    rig.append(r)
    try:
        for path in ("/first", "/second?x=1"):
            out, keep = r.exchange(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
            assert keep and out.startswith(b"HTTP/1.1 200 OK")
    finally:
        r.close()
    assert r.taken == ["reply", "whole"]
    assert seen == ["GET /first", "GET /second?x=1"]


def test_max_requests_and_keepalive_cap_apply(tmp_dirs: Callable[[str], str]) -> None:
    got, taken, rig = _run(tmp_dirs("cap"), _ok, REQUESTS["get11"], True, times=5,
                           opts=(("disable-logging", "true"), ("http-keepalive-requests", "3"),
                                 ("max-requests", "2")))
    assert [keep for _out, keep in got[:-1]] == [True, True, False]
    assert b"Connection: close" in got[2][0]
    assert taken == ["reply", "whole", "whole"]
    assert rig.worker.recycle_reason.startswith("max-requests")


def test_date_line_matches_the_python_one() -> None:
    for _ in range(5):  # (a second may turn between the two)
        if _speedups.date_line() == http.date_line():
            return
    raise AssertionError((_speedups.date_line(), http.date_line()))


def test_response_head_declines_what_python_must_decide() -> None:
    heads: dict[tuple[object, ...], tuple[bytes, int, bool]] = {}
    head = http_conn._make_head("200 OK", TEXT)
    heads[("200 OK", *TEXT)] = head
    rh = _speedups.response_head
    out = rh(heads, "200 OK", list(TEXT), 5, True, False)
    assert out is not None and out.startswith(head[0]) and out.endswith(b"Content-Length: 5\r\n\r\n")
    assert b"Connection: close\r\n" in rh(heads, "200 OK", list(TEXT), 5, False, False)
    assert b"Connection: keep-alive\r\n" in rh(heads, "200 OK", list(TEXT), 5, True, True)
    assert rh(heads, "201 Created", list(TEXT), 5, True, False) is None  # not cached
    assert rh(heads, "200 OK", [["Content-Type", "text/plain"]], 5, True, False) is None  # unhashable
    for status in ("204 No Content", "304 Not Modified", "101 Switching Protocols"):
        heads[(status,)] = http_conn._make_head(status, [])
        assert rh(heads, status, [], 0, True, False) is None
    heads[("200 OK", ("Content-Length", "3"))] = http_conn._make_head("200 OK", [("Content-Length", "3")])
    assert rh(heads, "200 OK", [("Content-Length", "3")], 3, True, False) is not None
    assert rh(heads, "200 OK", [("Content-Length", "3")], 4, True, False) is None
    heads[("200 OK", ("Connection", "close"))] = http_conn._make_head("200 OK", [("Connection", "close")])
    assert rh(heads, "200 OK", [("Connection", "close")], 3, True, False) is None


def test_no_objects_leak(tmp_dirs: Callable[[str], str]) -> None:
    """Thousands of requests through every kind of Reply leave no objects behind."""
    runs = iter(range(100))

    def cycle() -> None:
        for name in ("ok", "writes", "raises_after", "generator", "exc_info", "no_start"):
            rig = Rig(tmp_dirs(f"{name}{next(runs)}"), APPS[name], ("disable-logging", "true"))
            try:
                for _ in range(400):
                    _out, keep = rig.exchange(REQUESTS["get11"])
                    if not keep:
                        break
            finally:
                rig.close()

    import logging

    logging.getLogger("emperor.http").disabled = True
    try:
        cycle()
        gc.collect()
        before = len(gc.get_objects())
        cycle()
        gc.collect()
        assert len(gc.get_objects()) - before < 200
    finally:
        logging.getLogger("emperor.http").disabled = False


def test_a_head_still_coming_leaves_the_slot_idle(tmp_dirs: Callable[[str], str]) -> None:
    """The C path marks the slot busy before it parses; bytes that are not a whole plain request
    (here half a head, then nothing until socket-timeout) must not leave it marked: harakiri
    would take a worker that only waits for a slow client for a stuck one."""
    rig = Rig(tmp_dirs("half"), _ok, ("disable-logging", "true"), ("socket-timeout", "1"))
    try:
        rig.client.sendall(b"GET /p HTTP/1.1\r\nHost: t\r\n")
        assert not rig.server.serve(rig.conn, first=False)  # gave up after socket-timeout
        ints, slot = rig.worker.ints, rig.worker.slot
        assert ints[slot + sb.BUSY_SINCE] == 0 and ints[slot + sb.REQUESTS] == 0
        assert rig.taken == ["none"]
    finally:
        rig.close()


@pytest.mark.parametrize("impl", ["c", "python"])
def test_tally_counts_as_the_scoreboard_expects(impl: str) -> None:
    board = sb.Scoreboard(2)
    slot = board.base(1)
    make = sb.Tally if impl == "c" else sb.PyTally
    assert impl == "python" or make is not sb.PyTally, "the C extension emperor.vassal._tally is not built"
    t = make(board.ints, slot + sb.BUSY_SINCE, slot + sb.REQUESTS, slot + sb.TX, slot + sb.RT_SUM_US,
             slot + sb.HIST, sb.HIST_BOUNDS_US)
    start = t.begin()
    assert board.get(1, sb.BUSY_SINCE) == start > 0
    assert t.end(start, 120) == 1
    assert t.end(start - 2_000_000_000, 30) == 2  # took 2 s: the bucket of "at most 2.5 s"
    assert board.get(1, sb.BUSY_SINCE) == 0 and board.get(1, sb.TX) == 150
    hist = board.histogram(1)
    assert sum(hist) == 2 and hist[0] == 1 and hist[sb.HIST_BOUNDS_US.index(2_500_000)] == 1
    assert board.get(1, sb.RT_SUM_US) >= 2_000_000
    assert board.get(0, sb.REQUESTS) == 0  # the other slot is untouched
    board.set(1, sb.BUSY_SINCE, 77)  # the ASGI worker's: busy while requests are in flight
    assert t.count(start, 5) == 3 and board.get(1, sb.BUSY_SINCE) == 77 and board.get(1, sb.TX) == 155
