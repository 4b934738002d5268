"""The ASGI adapters and the interfaces between codec, adapter and worker.

The path of a request in the ASGI worker is codec -> adapter -> app -> writer. This module
holds the middle of it, independent of the wire protocol:

- the **adapters**: ``HttpCycle`` gives the app its ``receive()`` and ``send()`` for one HTTP
  request: it streams the body (``more_body``), reports ``http.disconnect`` and checks every
  message the app sends (``protocol.asgi.HttpResponse``); ``WebSocketCycle`` does the same
  for one WebSocket (frames are wsproto's, events are ASGI's ``websocket.*``);
- the **interfaces**: ``Writer`` (what a codec offers an adapter: write, drain, finish,
  flow control), ``Codec`` (what the worker needs of a connection) and ``Host`` (what a
  codec needs of the worker). The codecs are ``aio_uwsgi.UwsgiCodec`` and
  ``aio_http.HttpCodec``; the worker is ``aio.Worker``.
"""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from emperor.protocol import asgi

ASGIApp = Callable[..., Awaitable[None]]
Message = dict[str, Any]
BODY_HIGH_WATER = 256 * 1024  # buffered request body above which reading from the peer pauses
WS_INBOX_HIGH = 32  # WebSocket messages queued for an app that is not reading; then reading pauses
WS_EARLY_HIGH = 64 * 1024  # bytes a peer may send before our 101 (held until accept); then reading pauses
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST (both codecs' abort)
PEER_WATCH = 0.25  # s between looks at a connection whose reading is paused: has the peer gone?
_PEER_GONE = select.POLLRDHUP | select.POLLHUP | select.POLLERR


class ClientDisconnected(OSError):
    """``send()`` after the peer went away (the ASGI spec asks for an OSError subclass)."""


class Writer(Protocol):
    """What a codec offers the adapter for one response. ``paused_writing`` is None until the
    transport first asked us to pause: until then ``drain()`` has nothing to wait for, and the
    adapter does not even make its coroutine (one per body chunk otherwise)."""

    paused_writing: asyncio.Future[None] | None

    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def finish(self, ok: bool) -> None: ...
    def resume_reading(self) -> None: ...
    def pause_reading(self) -> None: ...


class Codec(Protocol):
    """What the worker needs of a connection (``UwsgiCodec``, ``aio_http.HttpCodec``)."""

    env: dict[str, str] | None  # the request's vars (for the request log and peer notes)
    cycle: HttpCycle | WebSocketCycle | None
    status: int  # of a request the codec answered itself (400, 413, ...)
    start: int  # monotonic_ns when the request began
    transport: asyncio.Transport | None

    def write(self, data: bytes) -> None: ...
    def finish(self, ok: bool) -> None: ...


class TransportWriter:
    """The ``Writer`` half both codecs share (aio_uwsgi.py, aio_http.py): write to the transport,
    and wait for the client to read (asyncio's flow control) at most ``socket-timeout``.

    The codec sets ``transport``, ``paused_writing``, ``reading_paused``, ``closing``, ``cycle``
    and ``w``, provides ``abort`` and ``resume_reading``, and calls ``watch_peer`` when it pauses
    reading (and ``unwatch_peer`` when it resumes).

    While reading is paused (flow control: a body the app does not read yet, a pipelined request
    held back, WebSocket messages the app does not take) the loop does not read the socket, so
    it would not see the client go away and the app would never get its disconnect. A timer
    looks at the socket every PEER_WATCH s (one poll() for POLLRDHUP: the peer's FIN, even
    with unread data before it); once the peer has finished sending, reading resumes for good
    (what is left is bounded by the kernel's receive buffer) and the end of the stream is
    then read as usual: ``connection_lost``, and the app's ``http.disconnect``."""

    transport: asyncio.Transport | None
    paused_writing: asyncio.Future[None] | None
    reading_paused: bool
    closing: bool
    cycle: Any
    w: Any  # the codec's worker (a Host; aio_http's is richer), typed by each codec
    peer_watch: asyncio.TimerHandle | None = None
    peer_done = False  # the peer sent its FIN (seen while paused): reading is not paused again

    def abort(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError

    def watch_peer(self) -> None:
        if self.peer_watch is None:
            self.peer_watch = self.w.loop.call_later(PEER_WATCH, self._look_at_peer)

    def unwatch_peer(self) -> None:
        if self.peer_watch is not None:
            self.peer_watch.cancel()
            self.peer_watch = None

    def _look_at_peer(self) -> None:
        self.peer_watch = None
        if not self.reading_paused or self.closing or self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLRDHUP)
        try:
            gone = any(mask & _PEER_GONE for _fd, mask in poller.poll(0))
        except OSError:
            gone = True
        if gone:
            self.peer_done = True
            self.resume_reading()
        else:
            self.watch_peer()

    def reset_transport(self) -> None:
        """Close at once, dropping unsent data; on TCP with a reset (SO_LINGER 0), so a proxy sees
        a broken reply rather than a short one that looks complete."""
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                except (OSError, AttributeError):
                    pass
            self.transport.abort()

    def pause_writing(self) -> None:
        if self.paused_writing is None or self.paused_writing.done():
            self.paused_writing = self.w.loop.create_future()

    def resume_writing(self) -> None:
        if self.paused_writing is not None and not self.paused_writing.done():
            self.paused_writing.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        fut = self.paused_writing
        if fut is None or fut.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.w.timeout)
        except TimeoutError:
            self.abort()
            raise ClientDisconnected(f"the client read nothing for {self.w.timeout:g} s "
                                     "(socket-timeout)") from None
        if self.cycle is not None and self.cycle.gone:
            raise ClientDisconnected("the client went away")


class Host(Protocol):
    """What a codec asks of the worker that owns it (``aio.Worker`` and its subclasses).

    A Protocol rather than the class, so that the codecs do not import the worker that
    imports them (tests/test_architecture.py forbids the cycle)."""

    loop: asyncio.AbstractEventLoop

    @property
    def timeout(self) -> float: ...
    @property
    def buffer_size(self) -> int: ...
    @property
    def limit_post(self) -> int: ...
    @property
    def lifespan_state(self) -> dict[str, Any]: ...
    @property
    def ws_max_size(self) -> int: ...
    @property
    def ws_ping(self) -> tuple[int, int]: ...

    def believed(self, transport: asyncio.BaseTransport | None, claim: str) -> bool: ...
    def start_app(self, cycle: HttpCycle, codec: Codec) -> None: ...
    def start_websocket(self, ws: WebSocketCycle, codec: Codec) -> None: ...
    def connection_done(self, codec: Codec) -> None: ...
    def note_peer(self, codec: Codec, text: str, kind: str = "slow", level: int = logging.INFO) -> None: ...


# ---- the adapter ---------------------------------------------------------------------------
class HttpCycle:
    """One HTTP request/response between a codec and the app (codec-independent)."""

    __slots__ = ("body", "body_done", "final_sent", "gone", "log_line", "response", "scope", "sent",
                 "waiter", "writer")

    def __init__(self, scope: dict[str, Any], writer: Writer, has_body: bool) -> None:
        self.scope = scope
        self.writer = writer
        self.response = asgi.HttpResponse(scope["method"])
        self.body = bytearray()
        self.body_done = not has_body
        self.final_sent = False
        self.gone = False
        self.sent = 0
        self.waiter: asyncio.Future[None] | None = None  # receive() waiting (made only then)

    # codec side
    def feed(self, data: bytes, done: bool) -> None:
        self.body += data
        self.body_done = done
        if len(self.body) > BODY_HIGH_WATER:
            self.writer.pause_reading()
        self._wake()

    def client_gone(self) -> None:
        self.gone = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def error_response(self, status: int, text: str) -> bytes:
        """A whole response of the server's own (the 500 after a broken app); behind uwsgi_pass
        nginx frames it, and the connection closes after it anyway."""
        return asgi.error_response(status, text)

    # app side
    async def receive(self) -> Message:
        while True:
            if self.gone or self.response.complete:
                return dict(asgi.DISCONNECT)
            if self.body or (self.body_done and not self.final_sent):
                chunk = bytes(self.body)
                self.body.clear()
                self.writer.resume_reading()
                self.final_sent = self.body_done
                return asgi.request_event(chunk, not self.body_done)
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    def frame(self, message: Message) -> tuple[bytes, bool]:
        """The bytes one app message puts on the wire, and whether it ends the response. Behind
        uwsgi_pass nginx frames the body; an HTTP/1.1 codec's cycle frames it here
        (``asgi_exchange.HttpExchange``), so ``send`` is written once for both."""
        return self.response.on_message(message)

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("the client went away")
        data, done = self.frame(message)
        if data:
            self.sent += len(data)
            self.writer.write(data)
            if self.writer.paused_writing is not None:
                await self.writer.drain()
        if done:
            self.writer.finish(ok=True)


class WebSocketCycle:
    """One WebSocket between a codec and the app, after the handshake arrived (codec-independent).

    The codec passes the upgrade request's scope and, once the app accepted, every byte the
    peer sends (nginx tunnels them after our 101). Frames are wsproto's; the app sees ASGI
    ``websocket.*`` events. A message over ``websockets-max-size`` closes with 1009, a graceful
    stop of the worker with 1001.
    """

    def __init__(self, scope: dict[str, Any], writer: Writer, key: str, max_size: int,
                 ping: tuple[int, int] = (0, 0)) -> None:
        from wsproto.connection import Connection, ConnectionType  # only WebSocket users import it

        self.scope = scope
        self.writer = writer
        self.key = key
        self.max_size = max_size
        self.ping_every, self.pong_within = ping
        self.pong_due = False
        self.timer: asyncio.TimerHandle | None = None
        self.ws = Connection(ConnectionType.SERVER)
        self.inbox: deque[Message] = deque([{"type": "websocket.connect"}])
        self.wake = asyncio.Event()
        self.accepted = False
        self.closed = False  # we sent a close frame (or the connection is gone)
        self.gone = False
        self.status = 0  # for the request log: 101 once accepted, 403 when refused
        self.sent = 0
        self.parts: list[str | bytes] = []
        self.size = 0
        self.early = bytearray()  # frames that came before the app accepted: held until the 101

    # codec side
    def feed(self, data: bytes, done: bool = False) -> None:
        from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
        from wsproto.utilities import ProtocolError as WsError

        if self.gone:
            return
        if not self.accepted:  # nothing of the WebSocket may be written before our 101
            self.early += data
            if len(self.early) > WS_EARLY_HIGH:  # a peer that floods before the handshake
                self.writer.pause_reading()
            return
        try:
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    self.size += len(event.data)
                    if self.size > self.max_size:
                        self.close_with(1009, f"message over {self.max_size} bytes")
                        return
                    self.parts.append(event.data if isinstance(event.data, str) else bytes(event.data))
                    if event.message_finished:
                        self._deliver()
                elif isinstance(event, Ping):
                    self._write(self.ws.send(event.response()))
                elif isinstance(event, Pong):
                    self.pong_due = False
                elif isinstance(event, CloseConnection):
                    if not self.closed:
                        self.closed = True
                        self._write(self.ws.send(event.response()))
                    self._disconnect(event.code, event.reason or "")
                    self.writer.finish(ok=True)
        except WsError as exc:
            self.close_with(1002, f"protocol error: {exc}")

    def _deliver(self) -> None:
        if isinstance(self.parts[0], str):
            msg: Message = {"type": "websocket.receive", "text": "".join(self.parts)}  # type: ignore[arg-type]
        else:
            msg = {"type": "websocket.receive", "bytes": b"".join(self.parts)}  # type: ignore[arg-type]
        self.parts, self.size = [], 0
        self.inbox.append(msg)
        if len(self.inbox) >= WS_INBOX_HIGH:  # the app is not reading: stop reading the peer
            self.writer.pause_reading()
        self.wake.set()

    def _ping(self) -> None:
        """Every websockets-ping-freq: a ping; no pong within websockets-pong-tolerance closes."""
        from wsproto.events import Ping

        if self.gone or self.closed:
            return
        loop = asyncio.get_running_loop()
        if self.pong_due:
            self.close_with(1011, f"no pong within {self.pong_within} s")
            return
        self.pong_due = True
        self._write(self.ws.send(Ping(b"emperor")))
        self.timer = loop.call_later(self.pong_within, self._pong_check)

    def _pong_check(self) -> None:
        if self.pong_due:
            self._ping()  # closes
        elif not (self.gone or self.closed):
            self.timer = asyncio.get_running_loop().call_later(
                max(0, self.ping_every - self.pong_within), self._ping)

    def _disconnect(self, code: int, reason: str = "") -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.gone:
            self.gone = True
            self.inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})
            self.wake.set()

    def client_gone(self) -> None:
        self._disconnect(1006)

    def close_with(self, code: int, reason: str) -> None:
        """Close from the server side (message too big, bad frames, worker stopping)."""
        if self.accepted and not self.closed:
            from wsproto.events import CloseConnection

            self.closed = True
            self._write(self.ws.send(CloseConnection(code, reason)))
        self._disconnect(code, reason)
        self.writer.finish(ok=True)

    def _write(self, data: bytes) -> None:
        self.sent += len(data)
        self.writer.write(data)

    # app side
    async def receive(self) -> Message:
        while not self.inbox:
            self.wake.clear()
            await self.wake.wait()
        if len(self.inbox) <= WS_INBOX_HIGH // 2:
            self.writer.resume_reading()
        return self.inbox.popleft()

    async def send(self, message: Message) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        if self.gone or self.closed:
            if kind == "websocket.close":
                return
            raise ClientDisconnected("the WebSocket is closed")
        if kind == "websocket.accept" and not self.accepted:
            self.accepted = True
            self.status = 101
            self._write(self._accept_head(message))
            if self.ping_every:
                self.timer = asyncio.get_running_loop().call_later(self.ping_every, self._ping)
            if self.early:  # frames the peer sent before the 101: their answers go after it
                early, self.early = bytes(self.early), bytearray()
                self.writer.resume_reading()
                self.feed(early)
        elif kind == "websocket.close" and not self.accepted:
            self.status = 403  # refused before the handshake: a plain HTTP answer
            self.early = bytearray()  # frames of a WebSocket that never was
            self._write(asgi.error_response(403, "Forbidden"))
            self.closed = True
            self._disconnect(1000)
            self.writer.finish(ok=True)
            return
        elif kind == "websocket.send" and self.accepted:
            from wsproto.events import BytesMessage, TextMessage

            if message.get("bytes") is not None:
                self._write(self.ws.send(BytesMessage(data=bytes(message["bytes"]))))
            elif isinstance(message.get("text"), str):
                self._write(self.ws.send(TextMessage(data=message["text"])))
            else:
                raise asgi.ResponseError("websocket.send needs bytes or text")
        elif kind == "websocket.close":
            self.close_with(int(message.get("code", 1000)), str(message.get("reason") or ""))
            return
        else:
            raise asgi.ResponseError(f"unexpected message {kind!r} in a websocket scope "
                                     f"({'after' if self.accepted else 'before'} websocket.accept)")
        await self.writer.drain()

    def _accept_head(self, message: Message) -> bytes:
        from wsproto.utilities import generate_accept_token

        headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
                   (b"sec-websocket-accept", generate_accept_token(self.key.encode()))]
        if message.get("subprotocol"):
            headers.append((b"sec-websocket-protocol", str(message["subprotocol"]).encode()))
        headers += [tuple(h) for h in message.get("headers", ())]  # checked by serialize_head
        return asgi.serialize_head(101, headers)

