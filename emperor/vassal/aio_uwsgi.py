"""The uwsgi codec of the ASGI worker: one uwsgi connection as an asyncio Protocol.

``UwsgiCodec`` reads the uwsgi packet with ``emperor.protocol.uwsgi``, builds the scope with
``emperor.protocol.asgi`` and hands the request to an adapter of ``asgi_cycles``
(``HttpCycle``, or ``WebSocketCycle`` for an upgrade nginx passes on); it is that adapter's
``Writer``. One request per connection, as the uwsgi protocol has it: after the response the
rest of an unread body is drained (bounded by ``DRAIN_LIMIT``) and the connection closed.
Its sibling for HTTP/1.1 sockets is ``aio_http.HttpCodec``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from emperor.protocol import asgi, uwsgi
from emperor.vassal.asgi_cycles import (
    Host,
    HttpCycle,
    TransportWriter,
    WebSocketCycle,
)

DRAIN_LIMIT = 64 << 20  # unread request body discarded before close; beyond it the connection is cut


class UwsgiCodec(TransportWriter, asyncio.Protocol):
    """One uwsgi connection: the packet, the body stream, the response; then close."""

    def __init__(self, worker: Host) -> None:
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
        # the usual case: nginx's whole packet in one read, parsed from ``data`` without a copy
        buf = data if not self.buf else bytes(self.buf + data)
        end = 0
        try:
            if len(buf) < 4:
                self.buf += data
                return
            size = uwsgi.check_header(buf[:4], self.w.buffer_size)
            if len(buf) < 4 + size:
                self.buf += data
                return
            end = 4 + size
            self.env = env = uwsgi.parse_vars(buf, 4, end)
            length = uwsgi.content_length(env, self.w.limit_post)
            uwsgi.request_method(env, length)
        except uwsgi.ProtocolError as exc:
            self.buf = bytearray(buf)
            if exc.body_pending and end:
                exc.body_pending = max(0, exc.body_pending - (len(buf) - end))  # minus what we have
            self._reject(exc)
            return
        self._cancel_timer()
        rest = buf[end:]
        modifier1 = buf[0]
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
        self.unwatch_peer()
        if self.cycle is not None:
            self.cycle.client_gone()
        if self.paused_writing is not None and not self.paused_writing.done():
            self.paused_writing.set_result(None)
        self.w.connection_done(self)

    # the Writer interface: write, drain, pause/resume_writing (asgi_cycles.TransportWriter)
    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.peer_done:
            self.reading_paused = True
            self.transport.pause_reading()
            self.watch_peer()  # a client that goes away meanwhile is still noticed

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.unwatch_peer()
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
        self.reset_transport()

    # internals
    def _close(self) -> None:
        self.closing = True
        self._cancel_timer()
        if self.transport is not None:
            pending = self.transport.get_write_buffer_size()
            self.transport.close()
            if pending:  # a peer that never reads the last bytes must not hold the connection forever
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
