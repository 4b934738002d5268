"""WebSockets in ASGI vassals, through real nginx: uwsgi_pass tunnels the connection after our 101.

The client is wsproto's client side over a plain socket to nginx; the app is tests/apps/asgiapp.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Nginx, ProcGroup, http_get, wait_for
from test_asgi import start_asgi
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

WS_LOCATION = "uwsgi_read_timeout 60s;"


class Client:
    """A blocking WebSocket client: connect, send, receive whole messages, see the close."""

    def __init__(self, port: int, path: str, subprotocols: list[str] | None = None,
                 answer_pings: bool = True, sock: socket.socket | None = None) -> None:
        self.answer_pings = answer_pings
        self.pings = 0
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)  # sock: TLS
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Any] = []
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target=path,
                                               subprotocols=subprotocols or [])))
        self.handshake = self.next_event()

    def next_event(self) -> Any:
        while not self.pending:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                if isinstance(event, Ping) and event.payload == b"emperor":  # the server's own pings
                    self.pings += 1
                    if self.answer_pings:
                        self.sock.sendall(self.ws.send(event.response()))
                    continue
                self.pending.append(event)
            if not data and not self.pending:
                raise ConnectionError("closed without a close frame")
        return self.pending.pop(0)

    def pump(self) -> int:
        """Read what has arrived (answering pings) without waiting long; return the pings seen."""
        self.sock.settimeout(0.05)
        try:
            self.next_event()
        except TimeoutError:
            pass
        finally:
            self.sock.settimeout(10)
        return self.pings

    def send(self, event: Any) -> None:
        self.sock.sendall(self.ws.send(event))

    def message(self) -> str | bytes | CloseConnection:
        parts: list[Any] = []
        while True:
            event = self.next_event()
            if isinstance(event, CloseConnection):
                return event
            if isinstance(event, (TextMessage, BytesMessage)):
                parts.append(event.data)
                if event.message_finished:
                    return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ws")
    socks = Path(tempfile.mkdtemp(prefix="emp-", dir="/tmp"))
    socks.chmod(0o755)
    procs = ProcGroup(tmp / "logs")
    try:
        sock = str(socks / "ws.sock")
        events = tmp / "events"
        vassal = start_asgi(procs, "--socket", sock, "--processes", "1", "--websockets-max-size", "64",
                            env={"ASGI_EVENTS": str(events)})
        ng = Nginx(tmp / "nginx", group=procs)
        ng.add_uwsgi("/", sock, extra=WS_LOCATION)
        ng.start()
        yield {"port": ng.port, "url": ng.url("/").rstrip("/"), "vassal": vassal, "events": events,
               "sock": sock}
    finally:
        procs.stop_all()
        procs.assert_no_orphans()
        shutil.rmtree(socks, ignore_errors=True)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client-to-server frame (RFC 6455 5.2: masked), payload under 126 bytes."""
    mask = os.urandom(4)
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def early_ping_exchange(sock: socket.socket, upgrade: bytes) -> tuple[bytes, bytes]:
    """Send ``upgrade`` and a PING frame in ONE send(), read until the peer closes or the
    pong arrives; return (the HTTP head up to its blank line, every byte after it).

    The head must come first: a pong written before the 101 desynchronises every client."""
    sock.settimeout(10)
    sock.sendall(upgrade + masked_frame(0x9, b"early"))
    data = b""
    while True:
        chunk = sock.recv(65536)
        data += chunk
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not chunk or (sep and not head.startswith(b"HTTP/1.1 ")):
            return (head + sep, rest) if sep else (data, b"")  # closed, or not an HTTP head first
        if sep and head.startswith(b"HTTP/1.1 101") and len(rest) >= 7:  # 2-byte header + "early"
            return head + sep, rest


def uwsgi_upgrade(path: str) -> bytes:
    """A WebSocket upgrade as nginx's uwsgi_pass sends it (the vars of the handshake)."""
    from harness.uwsgi_client import pack

    return pack({"REQUEST_METHOD": "GET", "REQUEST_URI": path, "PATH_INFO": path, "QUERY_STRING": "",
                 "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
                 "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "5000", "HTTP_HOST": "127.0.0.1",
                 "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
                 "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "HTTP_SEC_WEBSOCKET_VERSION": "13"})


def test_ping_behind_the_upgrade_is_answered_after_the_101_uwsgi(front: dict[str, Any]) -> None:
    """A PING in the same packet as the upgrade vars: its PONG comes after our 101, never before."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(front["sock"])
        head, rest = early_ping_exchange(sock, uwsgi_upgrade("/ws"))
    assert head.startswith(b"HTTP/1.1 101"), f"the first bytes are not the 101: {head[:80]!r}"
    assert rest.startswith(b"\x8a\x05early"), f"no pong right after the 101: {rest[:40]!r}"


def test_early_frames_dropped_when_the_app_refuses_uwsgi(front: dict[str, Any]) -> None:
    """The app refuses (websocket.close before accept): a plain 403, and no pong for the early ping."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(front["sock"])
        head, rest = early_ping_exchange(sock, uwsgi_upgrade("/ws-refuse"))
    assert head.startswith(b"HTTP/1.1 403"), head[:80]
    assert rest == b"Forbidden\n", f"WebSocket bytes behind a refused handshake: {rest!r}"


def test_echo_1000_messages_through_nginx(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws")
    assert isinstance(c.handshake, AcceptConnection)
    for i in range(1000):
        if i % 2:
            c.send(BytesMessage(data=bytes([i % 256]) * (i % 300)))
            assert c.message() == bytes([i % 256]) * (i % 300)
        else:
            c.send(TextMessage(data=f"message {i} é"))
            assert c.message() == f"message {i} é"
    c.send(CloseConnection(code=1000))
    assert isinstance(c.message(), CloseConnection)
    c.close()
    wait_for(lambda: "ws-disconnect-1000" in front["events"].read_text(), 10, what="the app's disconnect")


def test_scope_and_subprotocol(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws-scope?x=1", subprotocols=["chat.v2", "chat.v1"])
    assert isinstance(c.handshake, AcceptConnection) and c.handshake.subprotocol == "chat.v2"
    scope = json.loads(c.message())  # type: ignore[arg-type]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and "method" not in scope
    assert scope["path"] == "/ws-scope" and scope["query_string"] == "x=1"
    assert scope["subprotocols"] == ["chat.v2", "chat.v1"]
    c.close()


def test_ping_gets_pong_and_app_close_code(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws")
    c.send(Ping(payload=b"are you there"))
    event = c.next_event()
    assert isinstance(event, Pong) and event.payload == b"are you there"
    c.send(TextMessage(data="close-me"))
    closed = c.message()
    assert isinstance(closed, CloseConnection) and closed.code == 4000 and closed.reason == "asked to"
    c.close()


def test_refused_before_accept_is_403(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws-refuse")
    assert isinstance(c.handshake, RejectConnection) and c.handshake.status_code == 403
    while not isinstance(c.next_event(), RejectData) or c.ws.state.name not in ("CLOSED", "REJECTING"):
        pass
    c.close()


def test_message_over_the_limit_closes_1009_and_worker_serves_on(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws")
    c.send(TextMessage(data="small"))
    assert c.message() == "small"
    c.send(BytesMessage(data=b"z" * (65 * 1024)))  # websockets-max-size = 64 KiB
    closed = c.message()
    assert isinstance(closed, CloseConnection) and closed.code == 1009
    c.close()
    assert http_get(front["url"] + "/")[0] == 200


def test_app_error_after_accept_closes_1011(front: dict[str, Any]) -> None:
    c = Client(front["port"], "/ws-raise")
    assert isinstance(c.handshake, AcceptConnection)
    closed = c.message()
    assert isinstance(closed, CloseConnection) and closed.code == 1011
    c.close()
    assert http_get(front["url"] + "/")[0] == 200


def test_graceful_stop_closes_open_websockets_with_1001(procs: ProcGroup, sock_dir: Path,
                                                        nginx: Any, tmp_path: Path) -> None:
    events = tmp_path / "events"
    sock = str(sock_dir / "stop.sock")
    vassal = start_asgi(procs, "--socket", sock, "--processes", "1", env={"ASGI_EVENTS": str(events)})
    ng = nginx()
    ng.add_uwsgi("/", sock, extra=WS_LOCATION)
    ng.start()
    clients = [Client(ng.port, "/ws") for _ in range(3)]
    for c in clients:
        c.send(TextMessage(data="hi"))
        assert c.message() == "hi"
    os.kill(vassal.pid, signal.SIGTERM)
    for c in clients:
        closed = c.message()
        assert isinstance(closed, CloseConnection) and closed.code == 1001
        c.close()
    assert vassal.wait(10) == 0
    assert events.read_text().count("ws-disconnect-1001") == 3


def test_server_pings_and_pong_tolerance(procs: ProcGroup, sock_dir: Path, nginx: Any) -> None:
    """websockets-ping-freq = 1: a client that answers stays connected; one that does not is
    closed with 1011 after websockets-pong-tolerance."""
    sock = str(sock_dir / "ping.sock")
    start_asgi(procs, "--socket", sock, "--websockets-ping-freq", "1", "--websockets-pong-tolerance", "1")
    ng = nginx()
    ng.add_uwsgi("/", sock, extra=WS_LOCATION)
    ng.start()
    good = Client(ng.port, "/ws")
    wait_for(lambda: good.pump() >= 3, 10, what="three server pings answered")
    assert not good.pending  # no close
    good.send(TextMessage(data="still here"))
    assert good.message() == "still here"
    good.close()
    silent = Client(ng.port, "/ws", answer_pings=False)
    t0 = time.monotonic()
    closed = silent.message()  # only server pings arrive, unanswered, then the close
    assert isinstance(closed, CloseConnection) and closed.code == 1011, closed
    assert 1.5 < time.monotonic() - t0 < 5 and silent.pings >= 1
    silent.close()
