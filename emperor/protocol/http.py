"""The HTTP/1.1 request codec: sans-IO, hard limits, typed errors. Imports nothing of the project.

llhttp (through httptools) does the tokenising: it is the parser of Node.js, fuzzed
continuously, and it already refuses most request-smuggling shapes (``Content-Length`` with
``Transfer-Encoding``, a duplicate ``Content-Length``, a non-decimal length, obs-fold, bad
header-name tokens, CR/LF/NUL/controls in the target or in a header value, bare LF). This
module adds what llhttp accepts but a server behind proxies must not (tests/test_http_codec.py
checks each rule, both llhttp's and ours):

- a head larger than ``max_head`` bytes: 414 when the request line alone is too long, else 431;
- more than ``max_headers`` header fields: 431;
- a version other than HTTP/1.0 and HTTP/1.1 (llhttp takes 0.9 and 2.0): 505, or 400 for 0.9;
- any transfer coding but a single ``chunked`` (``gzip, chunked``): 501; chunked on 1.0: 400;
- ``Content-Length`` with trailing whitespace or a sign (llhttp keeps ``"3 "``): 400;
- a second ``Host``, ``Content-Type`` or ``Transfer-Encoding`` field: 400;
- a method llhttp does not know: 501 if it is an RFC 9110 token, else 400; ``CONNECT``: 501.

A ``RequestParser`` is fed bytes as they come and produces events in order: a ``Head``, body
pieces (``bytes``, de-chunked), ``END`` when the message is complete, and an ``HTTPError`` (last:
the parser is then dead and the connection must be closed after the error reply). Pipelined
requests simply produce more events after ``END``; the consumer serves them in order, so the
stream can never be desynchronised. Trailer fields of a chunked body are counted and dropped.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final

import httptools

__all__ = ["END", "HTTPError", "Head", "RequestParser", "reason"]

END: Final = b""  # the end-of-message event (body pieces are never empty)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_SINGLETONS = frozenset({b"host", b"content-type", b"transfer-encoding"})
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 505: "HTTP Version Not Supported",
}


def reason(status: int) -> str:
    return _REASONS.get(status, "Error")


class HTTPError(Exception):
    """A request that cannot be served: answer ``status`` with the message, then close.

    ``kind`` names the diagnosis without its variable parts, so a server can log each kind
    once per peer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = f"http:{status}:{re.sub(r'[0-9]+', '', message)[:48]}"


class Head:
    """A parsed request head. ``target`` is the request-target as sent (latin-1)."""

    __slots__ = ("chunked", "content_length", "expect_continue", "headers", "host", "keep_alive",
                 "method", "path", "query", "target", "version")

    def __init__(self) -> None:
        self.method = ""
        self.target = ""
        self.path = b""  # the raw path of the target (still %-encoded)
        self.query = ""
        self.host: bytes | None = None  # from an absolute-form target, else the Host field
        self.version = "HTTP/1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = True
        self.expect_continue = False


class RequestParser:
    """Feed bytes with ``feed``; take events with ``next_event`` (None: more bytes needed)."""

    __slots__ = ("_count", "_dead", "_head", "_head_bytes", "_in_head", "_line", "_line_done",
                 "_parser", "_url", "events", "max_head", "max_headers", "upgrade_rest", "upgraded")

    def __init__(self, max_head: int = 65535, max_headers: int = 100) -> None:
        self.max_head = max_head
        self.max_headers = max_headers
        self.events: deque[Head | bytes | HTTPError] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._head: Head | None = None
        self._url = b""
        self._count = 0
        self._in_head = True  # between messages or inside a head (the byte budget applies)
        self._head_bytes = 0
        self._line_done = False
        self._line = b""  # the first bytes of a head fed at a chunk start (to judge a bad method)
        self._dead = False
        self.upgraded = False  # an Upgrade request ended the stream: close after answering it
        self.upgrade_rest = b""  # the bytes after an Upgrade request's head (a WebSocket's first frames)

    # ---- the consumer's side -------------------------------------------------------------
    @property
    def head_started(self) -> bool:
        """True while a head is partly received (a client that stops now is a slow one)."""
        return self._in_head and self._head_bytes > 0

    @property
    def dead(self) -> bool:
        """True after an error: feed nothing more; the connection must close."""
        return self._dead

    def next_event(self) -> Head | bytes | HTTPError | None:
        events = self.events
        return events.popleft() if events else None

    def feed(self, data: bytes | memoryview) -> None:
        """Parse ``data``; events (and at most one final error) are appended to ``events``."""
        if self._dead:
            if self.upgraded and len(self.upgrade_rest) < self.max_head:
                # not HTTP any more: kept for the protocol switched to (bounded: a consumer that
                # does not switch closes the connection after the request and ignores it)
                self.upgrade_rest += data
            return
        if self._in_head:
            room = self.max_head - self._head_bytes
            if len(data) > room:
                # feed only what fits: if the head is still open after that, it is too large
                self._feed(memoryview(data)[:room])
                if self._dead:
                    if self.upgraded:
                        self.upgrade_rest += memoryview(data)[room:]
                    return
                if self._in_head and self._head_bytes >= self.max_head:
                    self._too_large()
                    return
                self._feed(memoryview(data)[room:])
                return
        self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        # The head budget counts the bytes fed while a head is open; a pipelined head that
        # starts inside a chunk is counted from the next feed on (so at most one recv more).
        if self._in_head:
            self._head_bytes += len(data)
            if not self._line_done:
                raw = data if type(data) is bytes else bytes(data)
                if not self._line:
                    self._line = raw  # the usual case: the whole head in one chunk, kept without a copy
                elif len(self._line) < 64:
                    self._line += raw[:64]
                if b"\n" in raw:
                    self._line_done = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after an Upgrade request (CONNECT is refused in on_headers_complete).
            # The parser does not switch protocols: the request is served as a plain one, then
            # the connection closes, since nothing after it can be parsed, unless the consumer
            # switches (a WebSocket), which takes the bytes after the head from upgrade_rest.
            self._dead = True
            self.upgraded = True
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.upgrade_rest += data[offset:]
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            self._fail(ctx if isinstance(ctx, HTTPError) else HTTPError(400, str(exc)))
        except httptools.HttpParserInvalidMethodError:
            self._fail(self._method_error())
        except httptools.HttpParserError as exc:
            self._fail(_translate(str(exc)))

    def _fail(self, err: HTTPError) -> None:
        self._dead = True
        self.events.append(err)

    def _too_large(self) -> None:
        if self._line_done:
            self._fail(HTTPError(431, f"the request head is larger than {self.max_head} bytes "
                                      "(buffer-size): headers too large"))
        else:
            self._fail(HTTPError(414, f"the request line is larger than {self.max_head} bytes "
                                      "(buffer-size): URI too long"))

    def _method_error(self) -> HTTPError:
        """llhttp knows a fixed list of methods: tell a bad token (400) from an unknown one (501).

        Judged on the first bytes of the head when it began at a chunk start (the usual case);
        a method llhttp refused on its first byte is judged on what came so far.
        """
        method = self._line[:64].partition(b" ")[0]
        if method and _TOKEN.match(method):
            return HTTPError(501, f"method {method[:32].decode('latin-1')!r} is not implemented")
        return HTTPError(400, "the method is not an RFC 9110 token (methods are case-sensitive)")

    # ---- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._head = Head()
        self._url = b""
        self._count = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > self.max_headers:
            raise HTTPError(431, f"more than {self.max_headers} header fields")
        head = self._head
        if head is None or not self._in_head:
            return  # a trailer field of a chunked body: counted, never used
        if value[-1:] in (b" ", b"\t"):
            value = value.rstrip(b" \t")  # OWS is not part of the value (llhttp keeps the trailing one)
        head.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = self._head
        assert head is not None
        self._in_head = False
        self._head_bytes = 0
        self._line_done = False
        self._line = b""
        parser = self._parser
        version = parser.get_http_version()
        if version == "1.1":
            pass
        elif version == "1.0":
            head.version = "HTTP/1.0"
        elif version == "0.9":
            raise HTTPError(400, "HTTP/0.9 requests are not served")
        else:
            raise HTTPError(505, f"HTTP/{version} is not supported (HTTP/1.0 and HTTP/1.1 are)")
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise HTTPError(501, "CONNECT is not implemented")
        head.method = method
        url = self._url
        head.target = url.decode("latin-1")
        _split_target(head, url)
        head.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        seen = 0
        for name, value in head.headers:
            if len(name) not in (4, 6, 12, 14, 17):  # host, expect, content-type/-length, t-e
                continue
            lname = name.lower()
            if lname == b"content-length":
                if not _DIGITS.match(value):
                    raise HTTPError(400, f"Content-Length {value[:40]!r} is not a decimal number")
                head.content_length = int(value)
            elif lname in _SINGLETONS:
                bit = 1 << len(lname)
                if seen & bit:
                    raise HTTPError(400, f"duplicate {name.decode('latin-1')} header")
                seen |= bit
                if lname == b"host":
                    if head.host is None:
                        head.host = value
                elif lname == b"transfer-encoding":
                    if value.lower() != b"chunked":
                        raise HTTPError(501, f"transfer coding {value[:40].decode('latin-1')!r} is "
                                             "not implemented (only chunked is)")
                    if version == "1.0":
                        raise HTTPError(400, "chunked transfer coding in an HTTP/1.0 request")
                    head.chunked = True
            elif lname == b"expect":
                if value.lower() == b"100-continue":
                    head.expect_continue = version == "1.1"
                else:
                    raise HTTPError(417, f"Expect {value[:40].decode('latin-1')!r} is not supported")
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.events.append(END)
        self._head = None
        self._in_head = True


def _split_target(head: Head, url: bytes) -> None:
    """Origin-form ``/p?q``, absolute-form ``http://host/p?q`` (RFC 9112 3.2.2: its host wins)
    or ``*`` (OPTIONS)."""
    if url[:1] != b"/" and url != b"*":
        scheme, sep, rest = url.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https"):
            raise HTTPError(400, f"bad request target {url[:80].decode('latin-1')!r}")
        slash = rest.find(b"/")
        authority, url = (rest, b"/") if slash < 0 else (rest[:slash], rest[slash:])
        if b"?" in authority:
            authority, _, q = authority.partition(b"?")
            url = b"/?" + q
        if b"@" in authority or not authority:
            raise HTTPError(400, "bad authority in an absolute-form target")
        head.host = authority
    path, _, query = url.partition(b"?")
    head.path = path.split(b"#", 1)[0]
    head.query = query.decode("latin-1")


_ERRORS = (
    ("Transfer-Encoding can't be present with Content-Length", 400,
     "Content-Length together with Transfer-Encoding (request smuggling)"),
    ("Duplicate Content-Length", 400, "duplicate Content-Length header"),
    ("Content-Length", 400, "Content-Length is not a decimal number"),
    ("Invalid `Transfer-Encoding` header value", 400, "duplicate or malformed Transfer-Encoding"),
    ("Transfer-Encoding", 501, "transfer coding not implemented (only chunked is)"),
    ("whitespace after header value", 400, "obs-fold (a header line continued on the next line)"),
    ("Unexpected space after start line", 400, "obs-fold or whitespace before the first header"),
    ("header token", 400, "bad header name (not an RFC 9110 token, or whitespace before the colon)"),
    ("header value char", 400, "control character in a header value"),
    ("url", 400, "bad character (NUL, CR, LF, control, space or non-ASCII) in the request target"),
    ("HTTP version", 505, "HTTP version not supported"),
    ("chunk", 400, "bad chunked encoding"),
)


def _translate(message: str) -> HTTPError:
    """llhttp's reason text -> status and a message saying which rule was broken."""
    for needle, status, text in _ERRORS:
        if needle in message:
            return HTTPError(status, f"{text} [{message}]")
    return HTTPError(400, f"malformed request [{message}]")
