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

Per request, llhttp calls back into Python twice (``on_headers_complete``,
``on_message_complete``): a header field goes to a ``FieldSink`` (C in ``_speedups.c``, the
same class in Python as the fallback), the target to a ``bytearray``, a body piece straight
to the event deque, and every rule above is checked once over the whole head.

A consumer that wants WSGI environs (the sync HTTP worker) can turn on a C fast path with
``build_environ``: a whole, plain, bodiless head (GET or HEAD as nginx and most clients send
it) that arrives while llhttp is between messages becomes a ``Head`` whose ``env`` is already
built, without llhttp or the Python rules; ``_speedups.parse_head`` takes only that shape,
checked strictly, and leaves every other request (and every error) to the path above, so the
two cannot disagree on anything but speed (tests/test_http_codec.py compares them). The ASGI
worker takes the same path without the environ (``fast_heads``).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections import deque
from typing import Any, Final

import httptools

try:  # the optional C extension (emperor/protocol/_speedups.c)
    from emperor.protocol._speedups import parse_head as _parse_head
except ImportError:  # pragma: no cover - built wherever a compiler is
    _parse_head = None

__all__ = ["END", "HTTPError", "Head", "RequestParser", "reason"]

END: Final = b""  # the end-of-message event (body pieces are never empty)

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DIGITS = re.compile(rb"[0-9]{1,18}\Z")
_SINGLETONS = frozenset({b"host", b"content-type", b"transfer-encoding"})
_SPECIAL = _SINGLETONS | {b"content-length", b"expect"}  # the names the rules look at
_SPECIAL_LENGTHS = frozenset(len(name) for name in _SPECIAL)
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Payload Too Large",
    414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 505: "HTTP Version Not Supported",
}


_METHODS: dict[bytes, str] = {}  # llhttp's method names decoded once (a fixed, short list)
_NUMBERS = re.compile(r"[0-9]+")
# The "too many header fields" error each parser's sink raises, by limit: built once per
# process, not once per connection (it is immutable; raising it again only resets its traceback).
_TOO_MANY: dict[int, HTTPError] = {}


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

    @property
    def kind(self) -> str:
        # derived when asked (only to log a kind once per peer): every parser builds its
        # "too many fields" error in advance, and a regex pass per connection was measurable
        return f"http:{self.status}:{_NUMBERS.sub('', str(self))[:48]}"


class Head:
    """A parsed request head. ``target`` is the request-target as sent (latin-1).

    No ``__slots__`` and no ``__init__``: the class attributes are the defaults, so the parser
    sets only what a request changes (a third cheaper than eleven slot stores per request).
    """

    method: str = ""
    target: str = ""
    path: bytes = b""  # the raw path of the target (still %-encoded)
    query: str = ""
    host: bytes | None = None  # from an absolute-form target, else the Host field
    version: str = "HTTP/1.1"
    headers: list[tuple[bytes, bytes]]  # always set by the parser (raw names, values without OWS)
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False
    env: dict[str, Any] | None = None  # the WSGI environ, when the C fast path built it
    lowered: bool = False  # the field names in ``headers`` are in lower case (the C fast path's)


class RequestParser:
    """Feed bytes with ``feed``; take events with ``next_event`` (None: more bytes needed)."""

    __slots__ = ("_base", "_between", "_body_left", "_closed", "_fast", "_fields", "_head_bytes", "_in_head",
                 "_keys", "_line", "_line_done", "_parser", "_trusted", "_url", "dead", "events", "max_head",
                 "max_headers", "on_body", "on_header", "on_message_begin", "on_url", "plain_args",
                 "upgrade_rest", "upgraded")

    def __init__(self, max_head: int = 65535, max_headers: int = 100) -> None:
        self.max_head = max_head
        self.max_headers = max_headers
        self.events: deque[Head | bytes | HTTPError] = deque()
        # llhttp is between messages while this is not empty: on_message_begin (a C callable,
        # no Python frame) empties it, on_message_complete fills it again. Only then may the
        # fast path (build_environ) take the next bytes instead of llhttp.
        self._between = bytearray(b"x")
        self._fast = False  # build_environ or fast_heads was called
        self._closed = False  # the fast path read a head without keep-alive: nothing may follow
        self._body_left = 0  # bytes still due of the Content-Length body of a head the fast path read
        self._base: dict[str, Any] | None = None  # build_environ's
        self._keys: dict[bytes, str] | None = None
        self._trusted = False
        # parse_head's arguments after the bytes, for the consumer's own call of the C fast path
        # (set by build_environ): the sync worker's whole-request call, _speedups.plain
        self.plain_args: tuple[Any, ...] | None = None
        # llhttp and its callbacks are made when bytes first go to it (_llhttp): a connection
        # whose requests the fast path reads whole never needs them (about 1 µs a connection)
        self._parser: httptools.HttpRequestParser | None = None
        self._in_head = True  # between messages or inside a head (the byte budget applies)
        self._head_bytes = 0
        self._line_done = False
        self._line = b""  # the first bytes of a head fed at a chunk start (to judge a bad method)
        self.dead = False  # after an error: feed nothing more; the connection must close
        self.upgraded = False  # an Upgrade request ended the stream: close after answering it
        self.upgrade_rest = b""  # the bytes after an Upgrade request's head (a WebSocket's first frames)

    # ---- the consumer's side -------------------------------------------------------------
    @property
    def head_started(self) -> bool:
        """True while a head is partly received (a client that stops now is a slow one)."""
        return self._in_head and self._head_bytes > 0

    def build_environ(self, base: dict[str, Any], keys: dict[bytes, str], trusted: bool = False) -> None:
        """Let plain bodiless heads become a ``Head`` with its WSGI ``env`` built in C (module
        docstring): a copy of ``base`` (the constant environ of the connection, REMOTE_* included)
        with the request's keys; ``keys`` caches field name -> environ key (wsgi.py's);
        ``trusted``: the peer is a proxy whose X-Forwarded-For/-Proto count (as
        ``wsgi.forwarded``). No-op without the C extension."""
        if _parse_head is not None:
            self._fast = True
            self._base = base
            self._keys = keys
            self._trusted = trusted
            self.plain_args = (base, keys, self.max_head, self.max_headers, trusted)

    def fast_scopes(self, base: dict[str, Any], trusted: bool = False) -> None:
        """Let plain bodiless heads become a ``Head`` with its ASGI ``http`` scope built in C
        (in ``env``): a copy of ``base`` (the connection's type, scheme, root_path, client,
        server and state) with the request's keys, as ``asgi.scope_from_head`` builds it;
        ``trusted`` as there. No-op without the C extension (``fast_heads`` then)."""
        if _parse_head is not None:
            self._fast = True
            self._base = base
            self._keys = None
            self._trusted = trusted
            self.plain_args = None

    def fast_heads(self) -> None:
        """Let plain bodiless heads be read by the C fast path without an environ (the ASGI
        worker's): the ``Head`` is the one llhttp's path gives, except that the field names in
        ``headers`` are in lower case (``lowered``), as an ASGI scope wants them."""
        self._fast = _parse_head is not None

    @property
    def body_due(self) -> int:
        """Bytes of the current Content-Length body not received yet, when the parser counts
        it itself (a head the fast path read), else 0. The consumer may receive them without
        feeding them (one large read into the final buffer) and report them with
        ``body_received``."""
        return self._body_left

    def body_received(self, n: int) -> None:
        """``n`` bytes of the body due were received by the consumer itself (not fed): the
        count goes down, and END follows when the body is complete."""
        if not 0 < n <= self._body_left:
            raise ValueError(f"{n} body bytes received, {self._body_left} due")
        self._body_left -= n
        if not self._body_left:
            self.events.append(END)

    def between(self) -> bool:
        """No request is partly read or waiting: the next bytes start a new one, and may be
        taken whole by ``_speedups.plain`` with ``plain_args`` (then nothing is fed here)."""
        return bool(self._between) and not self._closed and not self._body_left and not self.dead \
            and not self.events

    def next_event(self) -> Head | bytes | HTTPError | None:
        events = self.events
        return events.popleft() if events else None

    def feed(self, data: bytes | memoryview) -> None:
        """Parse ``data``; events (and at most one final error) are appended to ``events``."""
        if self.dead:
            if self.upgraded and len(self.upgrade_rest) < self.max_head:
                # not HTTP any more: kept for the protocol switched to (bounded: a consumer that
                # does not switch closes the connection after the request and ignores it)
                self.upgrade_rest += data
            return
        if self._body_left:  # the body of a head the fast path read: counted here, not by llhttp
            data = self._raw_body(data)
            if not data:
                return
        if self._fast and self._between:
            base = self._base
            while True:
                if self._closed:  # as llhttp after such a message: line ends are skipped, anything else fails
                    if bytes(data).strip(b"\r\n"):
                        self._fail(HTTPError(400, _AFTER_CLOSE))
                    return
                got = _parse_head(data, base, self._keys, self.max_head, self.max_headers,  # type: ignore[misc]
                                  self._trusted)
                if got is None:
                    break
                head = Head()
                if base is not None:
                    size, head.env, head.keep_alive, head.method, head.target, head.content_length, \
                        head.version = got
                else:
                    (size, head.headers, head.keep_alive, head.method, head.target, head.content_length,
                     head.version, head.path, head.query, head.host) = got
                    head.lowered = True
                self.events.append(head)
                self._closed = not head.keep_alive
                data = data[size:] if size < len(data) else b""
                if head.content_length:
                    self._body_left = head.content_length
                    data = self._raw_body(data) if data else b""
                else:
                    self.events.append(END)
                if not data:
                    return
        if self._in_head:
            room = self.max_head - self._head_bytes
            if len(data) > room:
                # feed only what fits: if the head is still open after that, it is too large
                self._feed(memoryview(data)[:room])
                if self.dead:
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
            (self._parser or self._llhttp()).feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            # llhttp stops after an Upgrade request (CONNECT is refused in on_headers_complete).
            # The parser does not switch protocols: the request is served as a plain one, then
            # the connection closes, since nothing after it can be parsed, unless the consumer
            # switches (a WebSocket), which takes the bytes after the head from upgrade_rest.
            self.dead = True
            self.upgraded = True
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.upgrade_rest += data[offset:]
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, HTTPError):
                # the 431 is one shared instance (_TOO_MANY), and a raise extends the traceback
                # an instance already has: drop it, or every oversized head would grow the chain
                ctx.__traceback__ = ctx.__context__ = None
                self._fail(ctx)
            else:
                self._fail(HTTPError(400, str(exc)))
        except httptools.HttpParserInvalidMethodError:
            self._fail(self._method_error())
        except httptools.HttpParserError as exc:
            self._fail(_translate(str(exc)))

    def _llhttp(self) -> httptools.HttpRequestParser:
        """llhttp, set up on first use. Its per-field, per-target and per-body-piece callbacks
        are C callables (httptools looks them up once, in HttpRequestParser()): no Python frame
        per header field."""
        max_headers = self.max_headers
        too_many = _TOO_MANY.get(max_headers)
        if too_many is None:
            too_many = _TOO_MANY[max_headers] = HTTPError(431, f"more than {max_headers} header fields")
        sink = self._fields = FieldSink(max_headers, too_many)
        # the Python twin: its bound method is a cheaper callable than its __call__
        self.on_header = sink.add if isinstance(sink, _PyFieldSink) else sink
        self._url = bytearray()
        self.on_url = self._url.extend
        self.on_body = self.events.append
        self.on_message_begin = self._between.clear
        parser = self._parser = httptools.HttpRequestParser(self)
        return parser

    def _raw_body(self, data: bytes | memoryview) -> bytes | memoryview:
        """The next ``_body_left`` bytes are body pieces, then END; returns what follows them."""
        left = self._body_left
        if len(data) <= left:
            self.events.append(data if type(data) is bytes else bytes(data))
            left -= len(data)
            self._body_left = left
            if not left:
                self.events.append(END)
            return b""
        self.events += (bytes(data[:left]), END)
        self._body_left = 0
        return data[left:]

    def _fail(self, err: HTTPError) -> None:
        self.dead = True
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

    # ---- llhttp callbacks (on_header, on_url and on_body are the C callables set in _llhttp) ------
    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._line_done = False
        self._line = b""
        sink = self._fields
        head = Head()
        head.headers = sink.fields
        sink.fields = None  # trailer fields from here on: counted by the sink, never kept
        parser = self._parser
        assert parser is not None  # (llhttp calls this: _llhttp made it)
        version = parser.get_http_version()
        if version == "1.1":
            pass
        elif version == "1.0":
            head.version = "HTTP/1.0"
        elif version == "0.9":
            raise HTTPError(400, "HTTP/0.9 requests are not served")
        else:
            raise HTTPError(505, f"HTTP/{version} is not supported (HTTP/1.0 and HTTP/1.1 are)")
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS[raw_method] = raw_method.decode("ascii")
        if method == "CONNECT":
            raise HTTPError(501, "CONNECT is not implemented")
        head.method = method
        buf = self._url
        url = bytes(buf)
        buf.clear()
        head.target = url.decode("latin-1")
        if url[:1] == b"/" and b"#" not in url:  # the usual origin-form
            q = url.find(b"?")
            if q < 0:
                head.path = url
            else:
                head.path = url[:q]
                head.query = url[q + 1:].decode("latin-1")
        else:
            _split_target(head, url)
        head.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        seen = 0
        special = sink.special  # the Host, Expect, Content-Type/-Length, Transfer-Encoding fields
        for name, value in special:
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
        special.clear()
        self.events.append(head)

    def on_message_complete(self) -> None:
        self.events.append(END)
        self._between.append(1)
        self._in_head = True
        sink = self._fields
        sink.fields = []  # the next head's
        sink.count = 0


class _PyFieldSink:
    """The Python twin of ``_speedups.FieldSink`` (used when the extension is not built).

    ``sink.add(name, value)`` counts the field, raises ``error`` once ``count`` exceeds
    ``limit``, strips the value's trailing SP/HT (OWS, which llhttp keeps) and appends the pair
    to ``fields`` (and to ``special`` when the rules look at that name), or only counts it
    while ``fields`` is None (trailer fields).
    """

    __slots__ = ("count", "error", "fields", "limit", "special")

    def __init__(self, limit: int, error: BaseException) -> None:
        self.fields: list[tuple[bytes, bytes]] | None = []
        self.special: list[tuple[bytes, bytes]] = []
        self.error = error
        self.count = 0
        self.limit = limit

    def add(self, name: bytes, value: bytes) -> None:
        self.count += 1
        if self.count > self.limit:
            raise self.error
        fields = self.fields
        if fields is not None:
            if value[-1:] in (b" ", b"\t"):
                value = value.rstrip(b" \t")
            pair = (name, value)
            fields.append(pair)
            if len(name) in _SPECIAL_LENGTHS and name.lower() in _SPECIAL:
                self.special.append(pair)

    __call__ = add


try:  # the optional C extension (emperor/protocol/_speedups.c)
    from emperor.protocol._speedups import FieldSink
except ImportError:  # pragma: no cover - built wherever a compiler is
    FieldSink = _PyFieldSink


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
    ("Content-Length can't be present with Transfer-Encoding", 400,  # llhttp's words when CL comes last
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


# llhttp's error for bytes after a message without keep-alive, as _translate words it (the fast
# path, which reads such a message without llhttp, gives the same; tests/test_http_codec.py)
_AFTER_CLOSE = "malformed request [Data after `Connection: close`]"


def _translate(message: str) -> HTTPError:
    """llhttp's reason text -> status and a message saying which rule was broken."""
    for needle, status, text in _ERRORS:
        if needle in message:
            return HTTPError(status, f"{text} [{message}]")
    return HTTPError(400, f"malformed request [{message}]")


# ---- the Date field ----------------------------------------------------------------------------
_date_second = -1
_date_value = b""
_date_line = b""


def _date_refresh(now: int) -> None:
    global _date_second, _date_value, _date_line
    _date_value = email.utils.formatdate(now, usegmt=True).encode()
    _date_line = b"Date: " + _date_value + b"\r\n"
    _date_second = now


def date_value() -> bytes:
    """The ``Date`` field's value for this second (IMF-fixdate), formatted once a second and
    shared by every response of the process: the sync HTTP worker and the ASGI worker alike."""
    now = int(time.time())
    if now != _date_second:
        _date_refresh(now)
    return _date_value


def date_line() -> bytes:
    """``Date: <value>\r\n``, for a head built as bytes (the sync worker's)."""
    now = int(time.time())
    if now != _date_second:
        _date_refresh(now)
    return _date_line
