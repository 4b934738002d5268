"""``http_wire.recv_body``: a Content-Length body received straight into the bytes object
wsgi.input returns (the C helper in emperor/vassal/_bodyread.c, and its Python fallback), over
real socketpairs: the pieces already received come first, a peer that closes or a socket-timeout
ends it with ClientGone, and a signal during the wait runs its handler without losing bytes."""

from __future__ import annotations

import signal
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from emperor.vassal import http_wire
from emperor.vassal.exchange import ClientGone


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "c":
        assert http_wire._recv_body is not None, "the C extension emperor.vassal._bodyread is not built"
    else:
        monkeypatch.setattr(http_wire, "_recv_body", None)
    return str(request.param)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _sender(sock: socket.socket, data: bytes, close: bool) -> threading.Thread:
    def run() -> None:
        for i in range(0, len(data), 7777):
            sock.sendall(data[i:i + 7777])
        if close:
            sock.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_pieces_then_the_rest_in_one_object(impl: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    rest = bytes(range(256)) * 2000  # 512000 bytes, more than a socket buffer holds
    t = _sender(client, rest + b"NEXT REQUEST", close=False)
    out = http_wire.recv_body(server, [b"abc", b"", b"defg"], len(rest))
    t.join(10)
    assert type(out) is bytes and out == b"abcdefg" + rest
    assert server.recv(100) == b"NEXT REQUEST"  # not a byte past the body was taken


def test_nothing_due_returns_the_pieces(impl: str, pair: tuple[socket.socket, socket.socket]) -> None:
    assert http_wire.recv_body(pair[0], [b"only"], 0) == b"only"
    assert http_wire.recv_body(pair[0], [], 0) == b""


def test_a_peer_that_closes_early_is_gone(impl: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    t = _sender(client, b"x" * 30000, close=True)
    with pytest.raises(ClientGone, match="closed"):
        http_wire.recv_body(server, [], 50000)
    t.join(10)


def test_socket_timeout_ends_the_wait(impl: str, pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
    client.sendall(b"y" * 1000)
    with pytest.raises(ClientGone, match="socket-timeout"):
        http_wire.recv_body(server, [], 5000)


Pair = tuple[socket.socket, socket.socket]


def test_a_signal_during_the_wait_runs_its_handler(impl: str, pair: Pair) -> None:
    """The worker's park timer (SIGALRM) may fire while the body is awaited: recv() fails with
    EINTR (SO_RCVTIMEO is set, so SA_RESTART does not apply), the handler runs, the read goes on."""
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))
    fired = threading.Event()
    sent = threading.Event()

    def on_alarm(signum: int, frame: object) -> None:
        fired.set()
        if not sent.is_set():
            sent.set()
            _sender(client, b"z" * 100000, close=False)

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        out = http_wire.recv_body(server, [b"head"], 100000)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fired.is_set() and out == b"head" + b"z" * 100000


def test_an_exception_from_the_handler_propagates(impl: str, pair: Pair) -> None:
    server, _client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 5, 0))

    def on_alarm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            http_wire.recv_body(server, [], 1000)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
