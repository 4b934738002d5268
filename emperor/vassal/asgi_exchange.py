"""The ASGI adapter of one HTTP/1.1 request: ``HttpExchange``, an ``HttpCycle`` that frames.

The uwsgi codec hands nginx a complete response head; an HTTP/1.1 codec
(``aio_http.HttpCodec``) must frame it itself. ``HttpExchange`` adds that to the
codec-independent ``asgi_cycles.HttpCycle``: the app's Content-Length when it gives one
(checked against the body it sends), else chunked on HTTP/1.1 and close-delimited on
HTTP/1.0; no body for HEAD, 1xx, 204 and 304; a ``Date`` header; ``Connection: close`` when
this response ends the connection; and the ``100 Continue`` sent on the app's first read.
"""

from __future__ import annotations

from typing import Any

from emperor.protocol import asgi, http
from emperor.vassal.asgi_cycles import HttpCycle, Message, Writer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})  # ours to set, not the app's

HEAD_CACHE = 256  # distinct response heads kept per worker (``HttpExchange._start``)
_HEADS: dict[tuple[Any, ...], tuple[bytes, int, bool, bool]] = {}


class HttpExchange(HttpCycle):
    """The adapter for one HTTP/1.1 request: ``HttpCycle`` plus the response's framing
    (Content-Length, chunked or close-delimited) and the ``100 Continue`` on the first read."""

    __slots__ = ("chunked", "continue_due", "keep_alive", "left", "version")

    def __init__(self, scope: dict[str, Any], writer: Writer, has_body: bool, keep_alive: bool,
                 continue_due: bool) -> None:
        super().__init__(scope, writer, has_body)
        self.keep_alive = keep_alive
        self.continue_due = continue_due
        self.chunked = False
        self.left = -1  # body bytes still due under the app's Content-Length (-1: none given)
        self.version = scope["http_version"]

    async def receive(self) -> Message:
        if self.continue_due:
            self.continue_due = False
            if not self.response.started and not self.gone:
                self.writer.write(CONTINUE)
        return await super().receive()

    def frame(self, message: Message) -> tuple[bytes, bool]:
        response = self.response
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "http.response.start" and not response.started:
            if self.continue_due:  # answered without reading: the client must not send the body
                self.keep_alive = False
            self._start(message)
            return b"", False
        head = response.head
        data, done = response.on_message(message)
        if kind == "http.response.body" and self.left >= 0 and response.with_body:
            self.left -= len(data) - len(head)
            if self.left < 0 or (done and self.left):
                side = "over" if self.left < 0 else "under"
                raise asgi.ResponseError(f"the body is {abs(self.left)} bytes {side} the response's "
                                         "Content-Length")
        if kind == "http.response.body" and self.chunked:
            body = data[len(head):]
            framed = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            data = head + framed + (b"0\r\n\r\n" if done else b"")
        return data, done

    def error_response(self, status: int, text: str) -> bytes:
        """The server's own response on an HTTP socket: it ends the connection, so it says
        ``Connection: close`` (and carries a Date, as every response of ours)."""
        self.keep_alive = False
        body = text.encode() + b"\n"
        return asgi.serialize_head(status, [(b"content-type", b"text/plain"),
                                            (b"content-length", b"%d" % len(body)),
                                            (b"date", http.date_value()), (b"connection", b"close")]) + body

    def _start(self, message: Message) -> None:
        """``http.response.start``: the head, framed (``_framed``) and serialized, from
        ``_HEADS`` when the same status and headers came before in the same framing state
        (most apps send a handful of distinct heads; checking and joining the headers was
        the largest single piece of Python work per request). The Date goes last, per second."""
        status = message.get("status")
        headers: Any = message.get("headers", ())
        key: tuple[Any, ...] | None = None
        if type(status) is int:  # 200.0 == 200: only a real int may share 200's entry
            try:
                headers = tuple(headers)  # once: a generator is read here only
                key = (status, headers, self.keep_alive, self.version, self.scope["method"] == "HEAD")
                hit = _HEADS.get(key)
            except TypeError:  # not iterable (serialize_head says so) or unhashable: not cached
                key, hit = None, None
            if hit is not None:
                prefix, self.left, self.chunked, self.keep_alive = hit
                self.response.begin(status, prefix + b"date: " + http.date_value() + b"\r\n\r\n")
                return
        head = asgi.serialize_head(status, self._framed(status, headers))  # type: ignore[arg-type]
        prefix = head[:-2]  # without the blank line: the Date is appended per response
        if key is not None:
            if len(_HEADS) >= HEAD_CACHE:
                _HEADS.clear()  # bounded: an app with ever-new headers only loses the cache
            _HEADS[key] = (prefix, self.left, self.chunked, self.keep_alive)
        self.response.begin(status, prefix + b"date: " + http.date_value() + b"\r\n\r\n")  # type: ignore[arg-type]

    def _framed(self, status: Any, pairs: Any) -> list[tuple[bytes, bytes]]:
        """The app's headers, less the framing ones, plus ours (chunked, Connection; the Date
        is added by ``_start``)."""
        headers: list[tuple[bytes, bytes]] = []
        length = False
        for pair in pairs:
            try:
                name, value = pair
                lname = name.lower()
            except (TypeError, ValueError, AttributeError):
                headers.append(pair)  # serialize_head names the error
                continue
            if lname in _FRAMING:
                if lname == b"connection" and b"close" in value.lower():
                    self.keep_alive = False
                continue
            if lname == b"content-length":
                length = True
                if not value.isdigit() or self.left >= 0:
                    raise asgi.ResponseError(f"bad or repeated content-length {value[:40]!r}")
                self.left = int(value)
            headers.append(pair)
        bodiless = (self.scope["method"] == "HEAD" or not isinstance(status, int)
                    or status < 200 or status in (204, 304))
        if not length and not bodiless:
            if self.version == "1.1":
                self.chunked = True
                headers.append((b"transfer-encoding", b"chunked"))
            else:
                self.keep_alive = False  # close-delimited
        if not self.keep_alive:
            headers.append((b"connection", b"close"))
        elif self.version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        return headers
