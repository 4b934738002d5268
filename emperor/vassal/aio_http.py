"""ASGI over HTTP/1.1 sockets (``http-socket``, ``protocol = http``, ``https-socket``): a codec.

``HttpCodec`` is the ASGI worker's second codec, next to ``aio_uwsgi.UwsgiCodec``: it feeds the
bytes of a connection to ``emperor.protocol.http.RequestParser`` (llhttp, with the limits of
docs/http.md), builds the scope with ``protocol.asgi.scope_from_head`` and hands each request
to the same adapter (``asgi_exchange.HttpExchange``, an ``asgi_cycles.HttpCycle`` that also
frames the response).

Framing of the response (``asgi_exchange``): the app's Content-Length when it gives one, else chunked on
HTTP/1.1 and close-delimited on HTTP/1.0; no body for HEAD, 1xx, 204 and 304; a Date header;
``Connection: close`` when this response ends the connection. Keep-alive: an idle connection
is closed after ``http-keepalive`` seconds, after ``http-keepalive-requests`` requests, and
at once when the worker stops. Pipelined requests wait in the parser and are served in
order; reading pauses while a next request is already buffered. Every error closes the
connection (a bad request gets its 4xx/5xx first).

``Worker`` is ``aio.Worker`` with this codec for HTTP listeners; the master picks it for an
ASGI vassal that has HTTP sockets (only then is httptools imported).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from emperor.protocol import asgi, http
from emperor.vassal import aio, parking
from emperor.vassal.asgi_cycles import (
    HttpCycle,
    TransportWriter,
    WebSocketCycle,
)
from emperor.vassal.asgi_exchange import HttpExchange
from emperor.vassal.sockets import Listener
from emperor.vassal.tls import sites

log = logging.getLogger("emperor.worker")
LINGER = 1.0  # after an error answer, what the client still sends is read and dropped this long at most

class HttpCodec(TransportWriter, asyncio.Protocol):
    """One HTTP/1.1 connection: requests in order, keep-alive, every error closes."""

    def __init__(self, worker: Worker, scheme: str, index: int, served: int = 0, unix: bool = False) -> None:
        self.w = worker
        self.scheme = scheme
        self.index = index  # the listener's, for parking
        self.unix = unix  # a Unix-socket listener: no peer or server address to ask the kernel for
        self.parser = http.RequestParser(worker.buffer_size)
        self.parser.fast_heads()  # plain bodiless heads skip llhttp's callbacks (protocol/http.py)
        self.transport: asyncio.Transport | None = None
        self.cycle: HttpCycle | WebSocketCycle | None = None
        self.env: dict[str, str] | None = None
        self.status = 0
        self.start = time.monotonic_ns()
        self.served = served
        self.body_done = True  # the current request's body has been read to its end
        self.discarding = False  # the response is done: drop the rest of the body, then close
        self.closing = False
        self.idle = True  # between requests (a stop closes such a connection at once)
        self.counted = True  # in the worker's in_flight (accepted, or serving a request)
        self.pooled = False  # an idle keep-alive connection (not in flight; bounded by the cap)
        self.reading_paused = False
        self.paused_writing: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # armed at or before ``due`` (see _set_timer)
        self.due = 0.0  # loop time at which ``on_due`` runs
        self.on_due: Callable[[], None] | None = None
        self.head_due = False  # the timer is the head's deadline (socket-timeout), not keep-alive's
        self.peer: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.trusted = True

    # ---- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.unix:  # a Unix peer has no address (and is trusted: the socket's mode says who)
            peer = transport.get_extra_info("peername")  # each a system call
            name = transport.get_extra_info("sockname")
            if isinstance(peer, tuple):
                self.peer = (str(peer[0]), int(peer[1]))
                self.trusted = self.w.proxies.allows(peer)
            self.server = (str(name[0]), int(name[1])) if isinstance(name, tuple) else None
        self.env = {"REMOTE_ADDR": self.peer[0] if self.peer else "-"}
        # a plain head's scope is built in C from these (scope_from_head's for any other)
        self.parser.fast_scopes({"type": "http", "scheme": self.scheme, "root_path": "", "client": self.peer,
                                 "server": self.server, "state": self.w.lifespan_state}, self.trusted)
        self.w.http_conns.add(self)
        self._set_timer(self.w.timeout, self._too_slow)
        self.head_due = True

    def data_received(self, data: bytes) -> None:
        if self.closing and not self.discarding:
            return
        if isinstance(self.cycle, WebSocketCycle):
            self.cycle.feed(data)
            return
        if self.idle and not self.head_due:  # a keep-alive wait ends: the head must come in time
            self._set_timer(self.w.timeout, self._too_slow)
            self.head_due = True
        self.parser.feed(data)
        self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timer()
        self.unwatch_peer()
        self.w.http_conns.discard(self)
        self.w.conn_closed()
        if self.cycle is not None and not self.idle:
            self.cycle.client_gone()
        if self.paused_writing is not None and not self.paused_writing.done():
            self.paused_writing.set_result(None)
        if self.pooled:
            self.pooled = False
            self.w.idle_http -= 1
        if self.counted:
            self.counted = False
            self.w.connection_closed()

    # ---- requests ------------------------------------------------------------------------
    def _process(self) -> None:
        """Consume the parser's events: the current request's body, then the next head."""
        parser = self.parser
        while not self.closing or self.discarding:
            if self.body_done and not self.idle:  # a response in progress: a pipelined request waits
                if parser.events:
                    self.pause_reading()
                return
            event = parser.next_event()
            if event is None:
                return
            if isinstance(event, http.HTTPError):
                self._bad(event)
                return
            if self.body_done:  # between requests: a head (the parser puts no END or body before one)
                if isinstance(event, http.Head):
                    self._request(event)
            elif isinstance(event, bytes) and event:  # a piece of the body
                if not self.discarding:
                    self.cycle.feed(event, False)  # type: ignore[union-attr]
            else:  # its END
                self.body_done = True
                if self.discarding:
                    self._close()
                    return
                self.cycle.feed(b"", True)  # type: ignore[union-attr]

    def _busy(self) -> None:
        """A request begins: the connection counts as in flight again (harakiri, stats, the cap)."""
        if self.pooled:
            self.pooled = False
            self.w.idle_http -= 1
        if not self.counted:
            self.counted = True
            self.w._count_in()

    def _rest(self) -> None:
        """Kept alive between requests: not in flight, so an idle worker looks idle."""
        self.pooled = True
        self.w.idle_http += 1
        if self.counted:
            self.counted = False
            self.w.connection_closed()

    def _request(self, head: http.Head) -> None:
        self._busy()
        self._cancel_timer()
        self.head_due = False
        self.idle = False
        self.start = time.monotonic_ns()
        self.status = 0
        self.served += 1
        w = self.w
        if w.log_requests:  # the request line's fields; without logging only the peer (note_peer)
            self.env = {"REMOTE_ADDR": self.peer[0] if self.peer else "-", "REQUEST_METHOD": head.method,
                        "REQUEST_URI": head.target, "SERVER_PROTOCOL": head.version}
        length = head.content_length or 0
        if w.limit_post and length > w.limit_post:
            self._bad(http.HTTPError(413, f"Content-Length {length} is over limit-post ({w.limit_post})"))
            return
        if self.parser.upgraded and head.method == "GET" and _is_websocket(head):
            self._websocket(head)
            return
        has_body = head.chunked or length > 0
        events = self.parser.events
        if not has_body and events and events[0] == http.END and type(events[0]) is bytes:
            # the END of a bodyless request: taken now, so that only a real pipelined request
            # makes _process pause reading (and finish schedule it)
            events.popleft()
        keep = (head.keep_alive and not self.parser.upgraded and w.keepalive > 0
                and self.served < w.keepalive_requests and not w.stop_reason)
        scope = head.env  # the C fast path's (fast_scopes), else:
        if scope is None:
            scope = asgi.scope_from_head(head, self.server, self.peer, self.scheme, self.trusted,
                                         w.lifespan_state)
        self.body_done = not has_body
        cycle = HttpExchange(scope, self, has_body, keep, head.expect_continue and has_body)
        self.cycle = cycle
        w.start_app(cycle, self)

    def _websocket(self, head: http.Head) -> None:
        """An upgrade to WebSocket: the same ``WebSocketCycle`` as behind ``uwsgi_pass``; the
        connection then carries frames only and closes with the WebSocket."""
        fields = {n.lower(): v for n, v in head.headers}
        key = fields.get(b"sec-websocket-key", b"").decode("latin-1")
        if not key or fields.get(b"sec-websocket-version") != b"13":
            self._bad(http.HTTPError(400, "WebSocket upgrade without Sec-WebSocket-Key or with a "
                                          "version other than 13"))
            return
        self.parser.events.clear()  # the upgrade request's END: nothing else is parsed
        scope = asgi.scope_from_head(head, self.server, self.peer, self.scheme, self.trusted,
                                     self.w.lifespan_state)
        del scope["method"]
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if scope["scheme"] == "https" else "ws"
        offered = fields.get(b"sec-websocket-protocol", b"").decode("latin-1")
        scope["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
        ws = WebSocketCycle(scope, self, key, self.w.ws_max_size, self.w.ws_ping)
        self.cycle = ws
        self.body_done = True
        rest, self.parser.upgrade_rest = self.parser.upgrade_rest, b""
        if rest:  # frames the client sent right behind its upgrade request
            ws.feed(rest)
        self.w.start_websocket(ws, self)

    # ---- the Writer interface: write, drain, pause/resume_writing (asgi_cycles.TransportWriter)
    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closing and not self.peer_done:
            self.reading_paused = True
            self.transport.pause_reading()
            self.watch_peer()  # a client that goes away meanwhile is still noticed

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and (not self.closing or self.discarding):
            self.reading_paused = False
            self.unwatch_peer()
            self.transport.resume_reading()

    def finish(self, ok: bool) -> None:
        """The response is over (ok: keep the connection if allowed) or broken (reset)."""
        if self.closing or self.transport is None or self.idle:
            return
        self.w.request_done(self)
        cycle = self.cycle
        if not ok:
            self.abort()
            return
        keep = (isinstance(cycle, HttpExchange) and cycle.keep_alive and not self.w.stop_reason
                and cycle.response.status < 500)  # after a server error (a 500 of ours too): close
        if isinstance(cycle, HttpExchange) and cycle.continue_due:
            self._close()  # no 100 was sent: no body is coming (the head said Connection: close)
            return
        if not self.body_done:
            # the app did not read the whole body: read and drop it (bounded by socket-timeout),
            # then close, so the client sees our answer and not a reset
            self.discarding = True
            self.closing = True
            if isinstance(cycle, HttpCycle):
                cycle.body.clear()
            self.resume_reading()
            self._set_timer(min(self.w.timeout, 2.0), self._close)
            self._process()
            return
        if not keep or (self.parser.dead and not self.parser.events) or self.w.idle_http >= self.w.cap:
            self._close()
            return
        self.idle = True
        self.cycle = None
        self._rest()
        self._set_timer(self.w.keepalive, self._close)
        self.resume_reading()
        if self.parser.events:
            self.w.loop.call_soon(self._process)  # the next pipelined request, after this callback

    def abort(self) -> None:
        """Close at once, dropping unsent data (TCP: with a reset, so a proxy sees a broken reply)."""
        self.closing = True
        self._cancel_timer()
        self.reset_transport()

    def stop(self) -> None:
        """The worker stops: an idle connection goes to the master (which hands it to the next
        worker when a request arrives, so a proxy reusing it never sees it closed), or closes;
        a busy one closes after its response."""
        if self.idle:
            if not self._park():
                self._close()
        elif isinstance(self.cycle, HttpExchange):
            self.cycle.keep_alive = False  # Connection: close if the head is not sent yet

    def _park(self) -> bool:
        """Hand this idle connection to the master (plain TCP/Unix only: TLS state cannot move);
        False if it cannot be parked (nothing half-read may be lost)."""
        park = self.w.park
        if (park is None or self.scheme == "https" or self.transport is None or self.closing
                or self.parser.head_started or self.parser.events):
            return False
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            parking.send_conn(park, sock.fileno(), self.served, self.index, socket.MSG_DONTWAIT)
        except OSError as exc:
            log.debug("worker %d: cannot park an idle connection (%s): closing it", self.w.wid, exc.strerror)
            return False
        self.closing = True
        self._cancel_timer()
        self.transport.close()  # only our copy of the fd: the master holds the connection now
        return True

    # ---- internals -----------------------------------------------------------------------
    def _bad(self, err: http.HTTPError) -> None:
        """A request the parser refused (or over limit-post): its status, then close."""
        self.w.note_peer(self, f"bad request: {err}", kind=err.kind, level=logging.WARNING)
        if not self.idle and isinstance(self.cycle, HttpCycle) and self.cycle.response.started:
            self.abort()  # mid-body (a bad chunk) after the app answered: nothing more to say
            return
        if isinstance(self.cycle, HttpCycle):
            self.cycle.client_gone()  # the app's receive() sees a disconnect
        if self.idle:
            self._busy()
            self.idle = False
            self.start = time.monotonic_ns()
            self.env = {"REMOTE_ADDR": self.peer[0] if self.peer else "-"}
        self.cycle = None
        self.status = err.status
        body = str(err).encode() + b"\n"
        head = asgi.serialize_head(err.status, [(b"content-type", b"text/plain"),
                                                (b"content-length", str(len(body)).encode()),
                                                (b"date", http.date_value()), (b"connection", b"close")])
        self.write(head + body)
        self.w.request_done(self)
        self.body_done = True
        self._linger()

    def _linger(self) -> None:
        """Close after an error answer without losing it: our FIN follows the answer, what the
        client still sends is read and dropped until its own FIN (the transport then closes) or
        for LINGER s at most, and only then is the socket closed. Closing at once with unread
        bytes makes the kernel answer the client's next segment with a reset, which can destroy
        the answer before the client has read it. The sync worker does the same (send_error)."""
        t = self.transport
        if t is None or t.is_closing() or not t.can_write_eof():  # TLS: no half-close
            self._close()
            return
        t.write_eof()
        self.closing = True
        self.discarding = True  # data_received reads and drops (the parser is dead)
        self._cancel_timer()
        self.resume_reading()
        self._set_timer(min(self.w.timeout, LINGER), self._close)

    def _close(self) -> None:
        self.closing = True
        self.discarding = False
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            pending = self.transport.get_write_buffer_size()
            self.transport.close()
            if pending:  # a peer that never reads the last bytes must not hold the connection for ever
                self._set_timer(self.w.timeout, self.abort)

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` in ``delay`` s. Each request moves the deadline twice (head, then
        keep-alive): rather than a new loop timer each time, the armed one is kept when it fires
        no later than the new deadline, and re-armed for the rest when it fires early."""
        loop = self.w.loop
        self.due = loop.time() + delay
        self.on_due = callback
        timer = self.timer
        if timer is not None:
            if timer.when() <= self.due:
                return
            timer.cancel()
        self.timer = loop.call_at(self.due, self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        callback = self.on_due
        if callback is None:
            return
        if self.w.loop.time() < self.due:
            self.timer = self.w.loop.call_at(self.due, self._timer_fired)
            return
        self.on_due = None
        callback()

    def _cancel_timer(self) -> None:
        self.on_due = None  # the armed timer, if any, finds nothing to do (or is re-used)
        if self.closing and self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _too_slow(self) -> None:
        if self.parser.head_started:
            self.w.note_peer(self, f"sent only part of a request head in {self.w.timeout:g} s "
                                   "(socket-timeout)")
            self.abort()
            return
        self._close()  # an idle keep-alive connection, or a client that sent nothing


def _is_websocket(head: http.Head) -> bool:
    return any(n.lower() == b"upgrade" and b"websocket" in v.lower() for n, v in head.headers)


class Worker(aio.Worker):
    """The ASGI worker with HTTP and HTTPS listeners too (the master picks it when there are any)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.keepalive = float(cfg.http_keepalive)
        self.keepalive_requests = cfg.http_keepalive_requests
        self.tls = sites(cfg)
        self.http_conns: set[HttpCodec] = set()
        self.idle_http = 0  # kept-alive connections between requests (at most asgi-concurrency)
        self.park: socket.socket | None = None  # set by the master when the vassal speaks HTTP
        self.factories: dict[int, Callable[[], asyncio.Protocol]] = {}  # id(listener) -> plain HTTP codec

    def codec_for(self, lst: Listener) -> tuple[Callable[[], asyncio.Protocol], ssl.SSLContext | None]:
        if lst.proto == "uwsgi":
            return super().codec_for(lst)
        site = self.tls.get(lst.name) if lst.proto == "https" else None
        if site is not None:  # the context of the moment (certificates are reloaded)
            return self._http_codec(lst, "https"), site.current()
        factory = self.factories.get(id(lst))
        if factory is None:  # made once per listener, not per connection
            factory = self.factories[id(lst)] = self._http_codec(lst, "http")
        return factory, None

    def _http_codec(self, lst: Listener, scheme: str, served: int = 0) -> Callable[[], asyncio.Protocol]:
        index = self.listeners.index(lst)
        unix = lst.kind != "tcp"
        return lambda: HttpCodec(self, scheme, index, served, unix)

    # ---- parked connections: the master hands back idle connections a request arrived on ----
    def _accept_on(self) -> None:
        was = self.accepting
        super()._accept_on()
        if self.accepting and not was and self.park is not None:
            self.loop.add_reader(self.park.fileno(), self._take_parked)

    def _accept_off(self) -> None:
        was = self.accepting
        super()._accept_off()
        if was and self.park is not None:
            try:
                self.loop.remove_reader(self.park.fileno())
            except (ValueError, OSError):
                pass

    def _take_parked(self) -> None:
        assert self.park is not None
        if self.in_flight >= self.cap:
            self._accept_off()
            return
        try:
            got = parking.recv_conn(self.park, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:
            log.error("worker %d: taking a parked connection: %s", self.wid, exc.strerror)
            return
        if got is None:
            return
        fd, served, index = got
        conn = socket.socket(fileno=fd)
        if not 0 <= index < len(self.listeners) or self.listeners[index].proto != "http":
            conn.close()
            return
        self._count_in()
        self.conn_opened()
        self.open_connection(conn, self._http_codec(self.listeners[index], "http", served), None)

    def connection_closed(self) -> None:
        self._count_out()

    def begin_stop(self, reason: str) -> None:
        super().begin_stop(reason)
        for conn in list(self.http_conns):
            conn.stop()
