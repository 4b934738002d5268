"""The ASGI adapter of one HTTP/1.1 request: ``HttpExchange``, an ``HttpCycle`` that frames.

The uwsgi codec hands nginx a complete response head; an HTTP/1.1 codec
(``aio_http.HttpCodec``) must frame it itself. ``HttpExchange`` adds that to the
codec-independent ``asgi_cycles.HttpCycle``: the app's Content-Length when it gives one
(checked against the body it sends), else chunked on HTTP/1.1 and close-delimited on
HTTP/1.0; no body for HEAD, 1xx, 204 and 304; a ``Date`` header; ``Connection: close`` when
this response ends the connection; and the ``100 Continue`` sent on the app's first read.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from emperor.protocol import asgi
from emperor.vassal.asgi_cycles import ClientDisconnected, HttpCycle, Message, Writer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})  # ours to set, not the app's

_date_at = 0
_date = b""


def date_header() -> bytes:
    """``Date`` for the current second (formatted once per second)."""
    global _date_at, _date
    now = int(time.time())
    if now != _date_at:
        _date_at, _date = now, email.utils.formatdate(now, usegmt=True).encode()
    return _date


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

    async def send(self, message: Message) -> None:
        if self.gone:
            raise ClientDisconnected("the client went away")
        response = self.response
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "http.response.start" and not response.started:
            if self.continue_due:  # answered without reading: the client must not send the body
                self.keep_alive = False
            message = dict(message, headers=self._framed(message))
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
        if data:
            self.sent += len(data)
            self.writer.write(data)
            if self.writer.paused_writing is not None:
                await self.writer.drain()
        if done:
            self.writer.finish(ok=True)

    def error_response(self, status: int, text: str) -> bytes:
        """The server's own response on an HTTP socket: it ends the connection, so it says
        ``Connection: close`` (and carries a Date, as every response of ours)."""
        self.keep_alive = False
        body = text.encode() + b"\n"
        return asgi.serialize_head(status, [(b"content-type", b"text/plain"),
                                            (b"content-length", b"%d" % len(body)),
                                            (b"date", date_header()), (b"connection", b"close")]) + body

    def _framed(self, message: Message) -> list[tuple[bytes, bytes]]:
        """The app's headers, less the framing ones, plus ours (Date, chunked, Connection)."""
        status = message.get("status")
        headers: list[tuple[bytes, bytes]] = []
        length = False
        for pair in message.get("headers", ()):
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
        headers.append((b"date", date_header()))
        if not self.keep_alive:
            headers.append((b"connection", b"close"))
        elif self.version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        return headers
