"""An ASGI worker: one event loop per process, many connections in flight at once.

The path of a request is codec -> adapter -> app -> writer:

- the **codec** turns bytes into a scope and body chunks: ``UwsgiCodec`` (an asyncio
  Protocol) reads the uwsgi packet with ``emperor.protocol.uwsgi`` and builds the scope with
  ``emperor.protocol.asgi``. An HTTP/1.1 codec plugs in the same way: it only has to create
  an ``HttpCycle`` and implement the small ``Writer`` interface;
- the **adapter**, ``HttpCycle``, gives the app its ``receive()`` and ``send()``: it streams
  the body (``more_body``), reports ``http.disconnect`` and checks every message the app
  sends (``protocol.asgi.HttpResponse``);
- the **writer** is the codec's transport: each body chunk is written at once, and
  ``send()`` waits while the kernel buffer is full (flow control both ways).

Process duties are the sync worker's: the scoreboard slot (requests, busy/idle, requests
in flight), harakiri (a heartbeat of the loop: a loop blocked for ``harakiri`` seconds is
killed by the master), max-requests and reload-on-rss (recycle between requests),
graceful stop within reload-mercy, and lifespan startup/shutdown around it all.
Above ``asgi-concurrency`` requests in flight the worker stops accepting: connections wait
in the kernel's listen queue, where the backlog probe and the other workers see them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
import socket
import ssl
import struct
import sys
import time
import traceback
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from emperor import logs
from emperor.config_view import ConfigView
from emperor.protocol import asgi, uwsgi
from emperor.proxies import AllowList
from emperor.vassal import loader
from emperor.vassal import scoreboard as sb
from emperor.vassal.sockets import Listener

log = logging.getLogger("emperor.worker")

ASGIApp = Callable[..., Awaitable[None]]
Message = dict[str, Any]
BODY_HIGH_WATER = 256 * 1024  # buffered request body above which reading from the peer pauses
WS_INBOX_HIGH = 32  # WebSocket messages queued for an app that is not reading; then reading pauses
ACCEPT_BATCH = 16  # connections accepted per wake-up, so that idle sibling workers get their share
DRAIN_LIMIT = 64 << 20  # unread request body discarded before close; beyond it the connection is cut
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
EXIT_APP_LOAD = 22  # channel.Exit.APP_LOAD: the master stops the vassal, the emperor throttles it


class ClientDisconnected(OSError):
    """``send()`` after the peer went away (the ASGI spec asks for an OSError subclass)."""


class Writer(Protocol):
    """What a codec offers the adapter for one response."""

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


# ---- the adapter ---------------------------------------------------------------------------
class HttpCycle:
    """One HTTP request/response between a codec and the app (codec-independent)."""

    __slots__ = ("body", "body_done", "final_sent", "gone", "log_line", "response", "scope", "sent",
                 "wake", "writer")

    def __init__(self, scope: dict[str, Any], writer: Writer, has_body: bool) -> None:
        self.scope = scope
        self.writer = writer
        self.response = asgi.HttpResponse(scope["method"])
        self.body = bytearray()
        self.body_done = not has_body
        self.final_sent = False
        self.gone = False
        self.sent = 0
        self.wake = asyncio.Event()

    # codec side
    def feed(self, data: bytes, done: bool) -> None:
        self.body += data
        self.body_done = done
        if len(self.body) > BODY_HIGH_WATER:
            self.writer.pause_reading()
        self.wake.set()

    def client_gone(self) -> None:
        self.gone = True
        self.wake.set()

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
            self.wake.clear()
            await self.wake.wait()

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("the client went away")
        data, done = self.response.on_message(message)
        if data:
            self.sent += len(data)
            self.writer.write(data)
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

    # codec side
    def feed(self, data: bytes, done: bool = False) -> None:
        from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
        from wsproto.utilities import ProtocolError as WsError

        if self.gone:
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
        elif kind == "websocket.close" and not self.accepted:
            self.status = 403  # refused before the handshake: a plain HTTP answer
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


# ---- the uwsgi codec -----------------------------------------------------------------------
class UwsgiCodec(asyncio.Protocol):
    """One uwsgi connection: the packet, the body stream, the response; then close."""

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.cycle: HttpCycle | WebSocketCycle | None = None
        self.body_left = 0
        self.discarding = False  # the response is done: read and drop the rest of the body, then close
        self.closing = False
        self.paused_writing: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.start = time.monotonic_ns()
        self.env: dict[str, str] | None = None
        self.status = 0  # of a request the codec itself answered (400, 413, ...), for the log

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.timer = self.w.loop.call_later(self.w.timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self.closing and not self.discarding:
            return  # answered already (a rejected request): nothing more is parsed
        if self.cycle is not None or self.discarding:
            self._body(data)
            return
        self.buf += data
        end = 0
        try:
            if len(self.buf) < 4:
                return
            size = uwsgi.check_header(bytes(self.buf[:4]), self.w.buffer_size)
            if len(self.buf) < 4 + size:
                return
            end = 4 + size
            self.env = env = uwsgi.parse_vars(bytes(self.buf), 4, end)
            length = uwsgi.content_length(env, self.w.limit_post)
            uwsgi.request_method(env, length)
        except uwsgi.ProtocolError as exc:
            if exc.body_pending and end:
                exc.body_pending = max(0, exc.body_pending - (len(self.buf) - end))  # minus what we have
            self._reject(exc)
            return
        self._cancel_timer()
        rest = bytes(self.buf[end:])
        modifier1 = self.buf[0]
        self.buf = bytearray()
        if asgi.is_websocket(env):
            key = env.get("HTTP_SEC_WEBSOCKET_KEY", "")
            if not key or env.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
                self._reject(uwsgi.ProtocolError("WebSocket upgrade without Sec-WebSocket-Key or "
                                                 "with a version other than 13"))
                return
            ws = WebSocketCycle(asgi.websocket_scope(env, modifier1, self.w.lifespan_state, self.believed),
                                self, key,
                                self.w.ws_max_size, self.w.ws_ping)
            self.cycle = ws
            if rest:
                ws.feed(rest)
            self.w.start_websocket(ws, self)
            return
        scope = asgi.http_scope(env, modifier1, self.w.lifespan_state, self.believed)
        self.body_left = length
        self.cycle = HttpCycle(scope, self, length > 0)
        if rest:
            self._body(rest)
        self.w.start_app(self.cycle, self)

    def believed(self, claim: str) -> bool:
        """The vars claim https (``claim``): the scope's trust callable (``asgi.http_scope``)."""
        return self.w.believed(self.transport, claim)

    def _body(self, data: bytes) -> None:
        if isinstance(self.cycle, WebSocketCycle):
            self.cycle.feed(data)  # nginx tunnels the frames after our 101
            return
        if self.body_left <= 0:
            return  # bytes after the body: nothing in the uwsgi protocol sends any; ignored
        chunk = data[: self.body_left]
        self.body_left -= len(chunk)
        if self.discarding:
            if self.body_left <= 0:
                self._close()
            return
        assert self.cycle is not None
        self.cycle.feed(chunk, self.body_left == 0)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self.cycle is not None:
            self.cycle.client_gone()
        if self.paused_writing is not None and not self.paused_writing.done():
            self.paused_writing.set_result(None)
        self.w.connection_done(self)

    def pause_writing(self) -> None:
        if self.paused_writing is None or self.paused_writing.done():
            self.paused_writing = self.w.loop.create_future()

    def resume_writing(self) -> None:
        if self.paused_writing is not None and not self.paused_writing.done():
            self.paused_writing.set_result(None)

    # the Writer interface
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

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def finish(self, ok: bool) -> None:
        """The response is over (ok) or broken (not ok: reset, so nginx sees a truncated reply)."""
        if self.closing or self.transport is None:
            return
        if not ok:
            self.abort()
            return
        if self.body_left > 0 and self.body_left <= DRAIN_LIMIT:
            # The peer may still be sending the body the app did not read: closing now would
            # reset the connection and nginx would turn a good answer into a 502.
            self.discarding = True
            if isinstance(self.cycle, HttpCycle):
                self.cycle.body.clear()
            self.resume_reading()
            self.timer = self.w.loop.call_later(min(self.w.timeout, 2.0), self._close)
            return
        self._close()

    def abort(self) -> None:
        """Close at once, dropping unsent data; on TCP with a reset, so the peer sees a broken reply
        (a Unix socket has no reset: the peer sees an ordinary end of stream)."""
        self.closing = True
        if self.transport is not None:
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except (OSError, AttributeError):
                    pass
            self.transport.abort()

    # internals
    def _close(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
            # a peer that never reads the last bytes must not hold the connection forever
            self.timer = self.w.loop.call_later(self.w.timeout, self.abort)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        self.timer = None
        if self.buf:
            self.w.note_peer(self, f"sent only {len(self.buf)} bytes of the request in "
                                   f"{self.w.timeout:g} s (socket-timeout)")
        self.abort()

    def _reject(self, exc: uwsgi.ProtocolError) -> None:
        self._cancel_timer()
        self.w.note_peer(self, f"bad request: {exc}", kind=exc.kind, level=logging.WARNING)
        if exc.status and self.transport is not None:
            text = {400: "Bad Request", 413: "Payload Too Large", 501: "Not Implemented"}
            self.status = exc.status
            self.transport.write(asgi.error_response(exc.status, text.get(exc.status, "Error"), exc.body))
            self.body_left = exc.body_pending  # drained before closing, so the reply is not reset
            self.buf = bytearray()
            self.finish(ok=True)
        else:
            self.abort()


# ---- the worker process --------------------------------------------------------------------
class Worker:
    """The ASGI worker process; same constructor as the sync ``emperor.vassal.worker.Worker``."""

    def __init__(self, wid: int, listeners: list[Listener], cfg: ConfigView, board: sb.Scoreboard,
                 app: Any, load_app: Callable[[], Any]) -> None:
        self.wid = wid
        self.index = wid - 1
        self.listeners = listeners
        self.cfg = cfg
        self.board = board
        self.app: Any = app
        self.load_app = load_app
        self.ints = board.ints
        self.slot = board.base(self.index)
        self.buffer_size = cfg.buffer_size
        self.limit_post = cfg.limit_post
        self.ws_max_size = cfg.websockets_max_size * 1024
        self.ws_ping = (cfg.websockets_ping_freq, cfg.websockets_pong_tolerance)
        self.websockets: set[WebSocketCycle] = set()
        self.timeout = cfg.socket_timeout
        self.proxies = AllowList(cfg.forwarded_allow_ips)
        self.cap = cfg.asgi_concurrency
        self.log_requests = not cfg.disable_logging
        delta = cfg.max_requests_delta if cfg.max_requests_delta is not None else cfg.max_requests // 10
        self.max_requests = cfg.max_requests + (random.randint(0, delta) if cfg.max_requests and delta else 0)
        self.rss_limit = cfg.reload_on_rss * 1024 * 1024
        self.in_flight = 0
        self.accepting = False
        self.stop_reason = ""
        self.stopping: asyncio.Event | None = None
        self.idle: asyncio.Event | None = None
        self.lifespan_state: dict[str, Any] = {}
        self.tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.logged: set[str] = set()
        self.pid = 0
        self.log_second, self.log_prefix = 0, ""  # the request lines' time and vassal prefix
        self.loop: asyncio.AbstractEventLoop

    # ---- process ---------------------------------------------------------------------------
    def install_signals(self) -> None:
        """The worker's own handlers, installed by the master in the child while its signals are
        still blocked (as for the sync worker): a stop sent to a new worker is never lost."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGQUIT):  # fast stop works even with a blocked loop
            signal.signal(sig, lambda s, f: os._exit(0))
        for sig in (signal.SIGTERM, signal.SIGHUP):  # until the loop takes them over
            signal.signal(sig, lambda s, f: setattr(self, "stop_reason", "graceful stop"))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        for sig in (signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):  # the master's: never stop a worker
            signal.signal(sig, signal.SIG_IGN)

    def run(self) -> None:
        """Entry point in the forked child; never returns."""
        code = 1
        try:
            self.pid = os.getpid()
            if self.app is None:
                try:
                    self.app = self.load_app()
                except loader.AppLoadError as exc:
                    log.error("worker %d: %s", self.wid, exc)
                    os._exit(EXIT_APP_LOAD)
                gc.collect()
                gc.freeze()
            if loader.kind(self.app) == "wsgi":  # need-app = false: the master's 500 stand-in
                self.app = _not_loaded(self.app)
            self.loop = _new_loop(self.cfg.asgi_loop)
            asyncio.set_event_loop(self.loop)
            code = self.loop.run_until_complete(self._main())
        except BaseException:
            traceback.print_exc()
        finally:
            self.ints[self.slot + sb.ACCEPTING] = 0
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    async def _main(self) -> int:
        loop = self.loop
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.begin_stop, "graceful stop")
        lifespan = Lifespan(self.app, self.cfg.lifespan, self.wid)
        if not await lifespan.startup():
            return EXIT_APP_LOAD
        self.lifespan_state = lifespan.state
        heartbeat = loop.create_task(self._heartbeat())
        if self.stop_reason:
            self.stopping.set()
        else:
            for lst in self.listeners:
                lst.sock.setblocking(False)
            self._accept_on()
            self.ints[self.slot + sb.ACCEPTING] = 1
        await self.stopping.wait()
        self.ints[self.slot + sb.ACCEPTING] = 0
        self._accept_off()
        for lst in self.listeners:
            lst.sock.close()  # this process's copies; the master keeps the sockets
        # In-flight requests finish, within reload-mercy: the master enforces it on reload and stop,
        # but nobody would on a recycle (max-requests), and an endless stream would keep this
        # worker, no longer accepting, alive for ever.
        mercy = self.cfg.reload_mercy
        try:
            await asyncio.wait_for(self.idle.wait(), mercy)
        except TimeoutError:
            log.warning("worker %d: %d request(s) still in flight after reload-mercy (%g s): closing them",
                        self.wid, self.in_flight, mercy)
        heartbeat.cancel()
        try:
            await asyncio.wait_for(lifespan.shutdown(), mercy)
        except TimeoutError:
            log.warning("worker %d: ASGI lifespan shutdown did not complete within reload-mercy (%g s)",
                        self.wid, mercy)
        if self.stop_reason not in ("graceful stop", ""):
            log.info("worker %d (pid %d) recycled: %s", self.wid, self.pid, self.stop_reason)
        return 0

    def begin_stop(self, reason: str) -> None:
        if not self.stop_reason or reason == "graceful stop":
            self.stop_reason = self.stop_reason or reason
        if self.stopping is not None:
            self.stopping.set()
            self._accept_off()  # now: the loop may call the listener's reader before _main resumes
        for ws in list(self.websockets):  # they would hold the worker until reload-mercy
            ws.close_with(1001, "server stopping")

    async def _heartbeat(self) -> None:
        """Stamp the slot while requests are in flight: a stale stamp means a blocked loop (harakiri)."""
        period = min(1.0, max(0.05, self.cfg.harakiri / 4)) if self.cfg.harakiri else 1.0
        ints, slot = self.ints, self.slot
        while True:
            ints[slot + sb.BUSY_SINCE] = time.monotonic_ns() if self.in_flight else 0
            await asyncio.sleep(period)

    # ---- accepting -------------------------------------------------------------------------
    def _accept_on(self) -> None:
        if self.accepting or self.stopping is None or self.stopping.is_set():
            return
        self.accepting = True
        for lst in self.listeners:
            self.loop.add_reader(lst.sock.fileno(), self._on_listener, lst)

    def _accept_off(self) -> None:
        if not self.accepting:
            return
        self.accepting = False
        for lst in self.listeners:
            try:
                self.loop.remove_reader(lst.sock.fileno())
            except (ValueError, OSError):
                pass

    def _on_listener(self, lst: Listener) -> None:
        sock = lst.sock
        for _ in range(ACCEPT_BATCH):
            if self.in_flight >= self.cap:
                self._accept_off()  # the rest waits in the kernel queue
                return
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it
            except OSError as exc:
                if exc.errno in (23, 24):  # ENFILE/EMFILE: back off instead of spinning
                    log.error("worker %d: accept: %s", self.wid, exc.strerror)
                    self._accept_off()
                    self.loop.call_later(0.1, self._accept_on)
                    return
                raise
            conn.setblocking(False)
            self._count_in()
            self._task(self._connect(conn, lst))

    def codec_for(self, lst: Listener) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        """The codec of a listener's connections (and its TLS context). This worker speaks uwsgi
        only; ``aio_http.Worker`` adds HTTP and HTTPS listeners."""
        return (lambda: UwsgiCodec(self)), None

    async def _connect(self, conn: socket.socket, lst: Listener) -> None:
        factory, tls = self.codec_for(lst)
        try:
            if tls is None:
                await self.loop.connect_accepted_socket(factory, conn)
            else:
                await self.loop.connect_accepted_socket(factory, conn, ssl=tls,
                                                        ssl_handshake_timeout=self.timeout)
        except (OSError, ssl.SSLError, TimeoutError):
            conn.close()
            self._count_out()

    def _count_in(self) -> None:
        self.in_flight += 1
        self.ints[self.slot + sb.IN_FLIGHT] = self.in_flight
        if self.in_flight == 1:
            self.ints[self.slot + sb.BUSY_SINCE] = time.monotonic_ns()
            assert self.idle is not None
            self.idle.clear()

    def _count_out(self) -> None:
        self.in_flight -= 1
        self.ints[self.slot + sb.IN_FLIGHT] = self.in_flight
        if self.in_flight == 0:
            self.ints[self.slot + sb.BUSY_SINCE] = 0
            assert self.idle is not None
            self.idle.set()
        if not self.accepting and self.in_flight < self.cap:
            self._accept_on()

    # ---- requests --------------------------------------------------------------------------
    def start_app(self, cycle: HttpCycle, codec: Codec) -> None:
        if self.cfg.harakiri:
            s = cycle.scope
            self.board.set_text(self.index, f"{s['method']} {s['raw_path'].decode('latin-1')} "
                                            f"({self.in_flight} in flight)")
        self._task(self._run_app(cycle, codec))

    def _task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start_websocket(self, ws: WebSocketCycle, codec: Codec) -> None:
        if self.stop_reason:
            ws.close_with(1001, "server stopping")
        self.websockets.add(ws)
        self._task(self._run_websocket(ws, codec))

    async def _run_websocket(self, ws: WebSocketCycle, codec: Codec) -> None:
        path = ws.scope["path"]
        try:
            await self.app(ws.scope, ws.receive, ws.send)
        except ClientDisconnected:
            pass
        except Exception as exc:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            what = "broke the ASGI protocol" if isinstance(exc, asgi.ResponseError) else "raised"
            log.error("worker %d: WebSocket %s %s:\n%s", self.wid, path, what,
                      traceback.format_exc().rstrip())
            if ws.accepted:
                ws.close_with(1011, "internal error")
            elif not ws.gone:
                ws.status = 500
                ws._write(asgi.error_response(500, "Internal Server Error"))
                codec.finish(ok=True)
        else:
            if ws.accepted:
                ws.close_with(1000, "")
            elif not ws.gone:  # returned without accepting: refused (ASGI: 403)
                await ws.send({"type": "websocket.close"})
        finally:
            self.websockets.discard(ws)

    async def _run_app(self, cycle: HttpCycle, codec: Codec) -> None:
        response = cycle.response
        scope = cycle.scope
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except ClientDisconnected as exc:
            log.debug("worker %d: %s %s: %s", self.wid, scope["method"], scope["path"], exc)
            codec.finish(ok=False)
            return
        except Exception as exc:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            what = "broke the ASGI protocol" if isinstance(exc, asgi.ResponseError) else "raised"
            log.error("worker %d: %s %s %s:\n%s", self.wid, scope["method"], scope["path"], what,
                      traceback.format_exc().rstrip())
            self._fail(cycle, codec)
            return
        if not response.complete and not cycle.gone:
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            log.error("worker %d: %s %s: the app returned without %s", self.wid, scope["method"],
                      scope["path"], "completing the response (more_body)" if response.started
                      else "sending http.response.start")
            self._fail(cycle, codec)

    def _fail(self, cycle: HttpCycle, codec: Codec) -> None:
        """500 when nothing was written yet; otherwise reset the connection (a truncated reply)."""
        if cycle.gone:
            return
        if cycle.response.head_sent:
            codec.finish(ok=False)
            return
        cycle.response.status = 500
        cycle.response.complete = True
        data = asgi.error_response(500, "Internal Server Error")
        cycle.sent += len(data)
        codec.write(data)
        codec.finish(ok=True)

    def connection_done(self, codec: Codec) -> None:
        """Per-connection bookkeeping (one request per uwsgi connection)."""
        self._count_out()
        self.request_done(codec)

    def request_done(self, codec: Codec) -> None:
        """Per-request bookkeeping, as the sync worker does: counters, log line, recycling."""
        ints, slot = self.ints, self.slot
        ints[slot + sb.REQUESTS] += 1
        cycle = codec.cycle
        if cycle is not None:
            ints[slot + sb.TX] += cycle.sent
        took = (time.monotonic_ns() - codec.start) // 1000
        ints[slot + sb.RT_SUM_US] += took
        ints[slot + sb.HIST + bisect_left(sb.HIST_BOUNDS_US, took)] += 1
        if self.log_requests and codec.env is not None:
            self._log_request(codec, took)
        if self.max_requests and ints[slot + sb.REQUESTS] >= self.max_requests:
            self.begin_stop(f"max-requests ({ints[slot + sb.REQUESTS]} requests)")
        elif self.rss_limit and (rss := _rss()) > self.rss_limit:
            self.begin_stop(f"reload-on-rss ({rss >> 20} MB > {self.rss_limit >> 20} MB)")

    def _log_request(self, codec: Codec, took_us: int) -> None:
        env = codec.env or {}
        cycle = codec.cycle
        if isinstance(cycle, WebSocketCycle):
            status = cycle.status
        else:
            status = cycle.response.status if cycle is not None else codec.status
        now = int(time.time())
        if now != self.log_second:  # one strftime per second, as the sync worker
            self.log_second, self.log_prefix = now, f"{logs.stamp(now)} [{logs.tag()}] "
        line = (f"{self.log_prefix}{env.get('REMOTE_ADDR', '-')} \"{env.get('REQUEST_METHOD', '-')} "
                f"{env.get('REQUEST_URI') or env.get('PATH_INFO', '')} {env.get('SERVER_PROTOCOL', '-')}\" "
                f"{status or '-'} {cycle.sent if cycle else 0} {took_us / 1000:.2f}ms pid={self.pid} "
                f"worker={self.wid}\n")
        try:
            os.write(2, line.encode("latin-1", "replace"))
        except OSError:
            pass

    def believed(self, transport: asyncio.BaseTransport | None, claim: str) -> bool:
        """An https claim (``claim``: the var that made it) is believed from a Unix-socket peer
        (the socket's mode decides who connects) and from a TCP peer in forwarded-allow-ips;
        any other claim is ignored and logged once per peer address, as the sync worker does."""
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return False
        if sock.family == socket.AF_UNIX:
            return True
        try:
            peer = sock.getpeername()
        except OSError:
            return False
        if self.proxies.allows(peer):
            return True
        key = f"{peer[0]}|scheme"
        if key not in self.logged and len(self.logged) < 1024:
            self.logged.add(key)
            log.warning("worker %d: ignored %s from %s, which is not in forwarded-allow-ips: "
                        "the ASGI scope's scheme is http", self.wid, claim, peer[0])
        return False

    def note_peer(self, codec: Codec, text: str, kind: str = "slow", level: int = logging.INFO) -> None:
        """Trouble caused by a peer: logged once per peer and kind (bounded), never fatal."""
        peer = (codec.env or {}).get("REMOTE_ADDR") or _peer(codec.transport)
        key = f"{peer}|{kind}"
        if key in self.logged or len(self.logged) >= 1024:
            log.debug("worker %d: %s: %s", self.wid, peer, text)
            return
        self.logged.add(key)
        log.log(level, "worker %d: %s from %s", self.wid, text, peer)


# ---- lifespan ------------------------------------------------------------------------------
class Lifespan:
    """The ASGI lifespan protocol for one worker: startup before accepting, shutdown after.

    ``auto``: an app that raises or returns before reading its first lifespan event does not
    support lifespan, and is served without it. An app that fails after reading
    ``lifespan.startup`` (or sends ``lifespan.startup.failed``) cannot boot: the worker exits
    with status 22 and the vassal stops, so the emperor throttles it.
    """

    def __init__(self, app: Any, mode: str, wid: int) -> None:
        self.app = app
        self.mode = mode
        self.wid = wid
        self.state: dict[str, Any] = {}
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.reads = 0
        self.replies: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.active = False

    async def startup(self) -> bool:
        if self.mode == "off":
            return True
        scope = {"type": "lifespan", "asgi": dict(asgi.ASGI), "state": self.state}
        self.task = asyncio.get_running_loop().create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        kind, detail = await self.replies.get()
        if kind == "lifespan.startup.complete":
            self.active = True
            return True
        if kind == "ended" and self.reads == 0 and self.mode == "auto":
            log.info("worker %d: the app does not support ASGI lifespan (%s); serving without it",
                     self.wid, detail.strip().splitlines()[-1] if detail.strip() else "it returned")
            return True
        log.error("worker %d: ASGI lifespan startup failed: %s", self.wid,
                  detail or f"{kind} (lifespan = {self.mode})")
        return False

    async def shutdown(self) -> None:
        if not self.active:
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        kind, detail = await self.replies.get()
        if kind != "lifespan.shutdown.complete":
            log.error("worker %d: ASGI lifespan shutdown failed: %s", self.wid, detail or kind)

    async def _run(self, scope: dict[str, Any]) -> None:
        detail = ""
        try:
            await self.app(scope, self._receive, self._send)
        except Exception:
            detail = traceback.format_exc().rstrip()
        await self.replies.put(("ended", detail or "the app returned"))

    async def _receive(self) -> Message:
        self.reads += 1
        return await self.inbox.get()

    async def _send(self, message: Message) -> None:
        kind = message.get("type", "")
        if kind not in ("lifespan.startup.complete", "lifespan.startup.failed",
                        "lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            raise asgi.ResponseError(f"unexpected message type {kind!r} in a lifespan scope")
        await self.replies.put((kind, str(message.get("message", ""))))


# ---- helpers -------------------------------------------------------------------------------
def _new_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when allowed and installed (``asgi-loop``), else the stdlib loop."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()  # type: ignore[no-any-return]
    return asyncio.new_event_loop()


def _not_loaded(wsgi_stand_in: Any) -> ASGIApp:
    """need-app = false: the master put a WSGI 500 app in place of the one that failed to load."""
    captured: list[Any] = []
    body = b"".join(wsgi_stand_in({}, lambda status, headers, exc=None: captured.append(status)))
    text = body.decode("utf-8", "replace").strip()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": text.encode() + b"\n"})

    return app


def _peer(transport: asyncio.BaseTransport | None) -> str:
    name = transport.get_extra_info("peername") if transport is not None else None
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else "unix peer"


_proc: Any = None


def _rss() -> int:
    global _proc
    if _proc is None:
        import psutil

        _proc = psutil.Process()
    return int(_proc.memory_info().rss)
