"""One HTTP/1.1 connection's bytes in a worker: the socket and its parser, the request body, the
response framing (docs/http.md).

``Connection`` feeds ``emperor.protocol.http``'s sans-IO parser from the socket; ``HTTPInput`` is
``wsgi.input`` over the parser's body events (de-chunked, bounded by limit-post); ``HTTPExchange``
frames the app's response (Content-Length, chunked or close-delimited; Date; Connection). What
to do with a connection (serve, keep, park, close) is ``emperor.vassal.http_conn``'s
``HTTPServer``, seen here only through ``Heads``, so this module does not import it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Protocol

from emperor.protocol import http
from emperor.protocol.wsgi import EMPTY_INPUT, FIELD_KEYS, LineReader, body_allowed, site_environ
from emperor.vassal.exchange import SNDBUF_FIT, ClientGone, Exchange, body_too_slow, fit_sndbuf
from emperor.vassal.tls import TLSSite

if TYPE_CHECKING:
    from emperor.vassal.sockets import Listener
    from emperor.vassal.worker import Worker

try:  # the optional C extension (emperor/vassal/_bodyread.c)
    from emperor.vassal._bodyread import recv_body as _recv_body
except ImportError:  # pragma: no cover - built wherever a compiler is
    _recv_body = None

log = logging.getLogger("emperor.http")

RECV_SIZE = 65536
# A read of at least this much of a Content-Length body still on its way receives it straight
# into the bytes object it returns (``recv_body``), not as RECV_SIZE pieces through the parser.
DIRECT_MIN = 16384
# ... and at most this much per read: the object is allocated before the bytes arrive, so a
# client announcing a huge Content-Length and sending nothing must not make the worker reserve
# it; larger reads go piece by piece, growing only as the bytes come.
DIRECT_MAX = 8 << 20


class Heads(Protocol):
    """What a response asks of its server: the checked head (cached)."""

    def head(self, status: str, headers: list[tuple[str, str]]) -> tuple[bytes, int, bool]: ...


class Site:
    """What an HTTP listener contributes to every environ (computed once, not per request):
    ``env`` is the worker's ``base_environ`` merged with the listener's ``site_environ``, the
    constant part that ``environ_from_http`` copies per request."""

    __slots__ = ("env", "index", "scheme", "tls")

    def __init__(self, index: int, lst: Listener, base: dict[str, Any], tls: TLSSite | None = None) -> None:
        self.index = index
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        try:
            name = lst.sock.getsockname()
        except OSError:
            name = ""
        self.env = {**base, **site_environ(name, tls is not None)}


UNIX_PEER = ("unix:", "")  # a Unix-socket peer (nginx on the same host): always believed


def peer_of(name: object) -> tuple[str, str]:
    """(host, port) as strings from a socket address (accept()'s or getpeername()'s); a Unix
    socket's address (a path or "") gives ``UNIX_PEER``."""
    if isinstance(name, tuple):
        return str(name[0]), str(name[1])
    return UNIX_PEER


class BadBody(ConnectionError):
    """The request body broke the framing (a bad chunk) or the size limit: close the connection."""


class Connection:
    """One client connection: its socket, its parser and what it has served."""

    __slots__ = ("continue_due", "eof", "parser", "peer", "served", "site", "sock", "timed", "timeval",
                 "trusted")

    def __init__(self, sock: Any, site: Site, max_head: int, served: int = 0,
                 peer: tuple[str, str] | None = None, timeval: bytes = b"") -> None:
        self.sock = sock
        self.site = site
        self.served = served
        # SO_RCVTIMEO/SO_SNDTIMEO are set (socket-timeout bounds every blocking call), or will be
        # (``timeval``) before the first call that would block: a fresh connection whose requests
        # come and go without waiting never pays the two setsockopt() (set_timeouts)
        self.timed = not timeval
        self.timeval = timeval
        self.parser = http.RequestParser(max_head)
        self.continue_due = False
        self.eof = False  # the peer closed its side (nothing left to drop before our close)
        if peer is None:  # a parked connection: accept() told us its address, the master did not
            try:
                peer = peer_of(sock.getpeername())
            except OSError:
                peer = UNIX_PEER
        self.peer = peer
        self.trusted = False  # forwarded-allow-ips lists this peer (set by trust(), HTTPServer.adopt)

    def trust(self, trusted: bool) -> None:
        """Whether the peer's X-Forwarded-* count; plain bodiless heads get their environ from
        the codec's C fast path, whose constant part (the peer included) is merged here once
        per connection rather than per request."""
        self.trusted = trusted
        peer = self.peer
        # (wsgi.input: the request without a body that _speedups.plain serves whole; a request
        # with one gets its own, HTTPServer.exchange)
        self.parser.build_environ({**self.site.env, "REMOTE_ADDR": peer[0], "REMOTE_PORT": peer[1],
                                   "wsgi.input": EMPTY_INPUT}, FIELD_KEYS, trusted)

    def fill(self, deadline: float | None = None) -> None:
        """recv once (the socket's SO_RCVTIMEO bounds the wait) and feed the parser."""
        self.parser.feed(self.receive(deadline))

    def receive(self, deadline: float | None = None) -> bytes:
        """recv once (the socket's SO_RCVTIMEO bounds the wait); ClientGone at EOF or timeout."""
        if deadline is not None and time.monotonic() > deadline:
            raise ClientGone("request head not complete within socket-timeout")
        try:
            if self.timed:
                data: bytes = self.sock.recv(RECV_SIZE)
            else:
                try:
                    data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
                except BlockingIOError:  # it would wait: from now on socket-timeout bounds that
                    self.set_timeouts()
                    data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            raise ClientGone("no data within socket-timeout") from None
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None
        if not data:
            self.eof = True
            raise ClientGone("peer closed the connection")
        return data

    def set_timeouts(self) -> None:
        """Before a call that may block: socket-timeout bounds it (SO_RCVTIMEO/SO_SNDTIMEO)."""
        if not self.timed:
            self.timed = True
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.timeval)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.timeval)

    def send_all(self, data: bytes | memoryview) -> None:
        """Send all of ``data`` (socket-timeout bounding a wait); ClientGone if it cannot."""
        sock = self.sock
        if len(data) > SNDBUF_FIT:
            fit_sndbuf(sock, len(data))
        try:
            if not self.timed:
                try:
                    n = sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    n = 0
                if n == len(data):
                    return
                self.set_timeouts()
                sock.sendall(memoryview(data)[n:])
                return
            sock.sendall(data)
        except BlockingIOError:
            raise ClientGone("send timed out") from None
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None

    def pending(self) -> bool:
        """True if a next request has already (partly) arrived; raises ClientGone on EOF."""
        if self.parser.events:
            return True
        try:
            data = self.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None
        if not data:
            self.eof = True
            raise ClientGone("peer closed the idle connection")
        self.parser.feed(data)
        return True


def recv_body(sock: Any, pieces: list[bytes], n: int, deadline: float = 0.0, limit: float = 0.0) -> bytes:
    """``pieces`` joined, then the next ``n`` bytes of ``sock`` (blocking, its SO_RCVTIMEO
    bounding each wait), in one bytes object; ClientGone if the peer closes or times out first,
    or if ``deadline`` (monotonic; 0: none) has passed before a wait (body-read-timeout,
    ``limit`` seconds: for the message).

    With the C extension the bytes are received into the object returned, one copy in all;
    without it they go through a bytearray (one copy more)."""
    total = sum(map(len, pieces)) + n
    if _recv_body is not None:
        data, err = _recv_body(sock.fileno(), pieces, n, deadline)
    else:
        buf = bytearray(total)
        view = memoryview(buf)
        pos = 0
        for p in pieces:
            view[pos:pos + len(p)] = p
            pos += len(p)
        err = 0
        try:
            while pos < total:
                if deadline and time.monotonic() > deadline:
                    err = errno.ETIMEDOUT
                    break
                got = sock.recv_into(view[pos:])
                if not got:
                    break
                pos += got
        except BlockingIOError:
            err = errno.EAGAIN
        except OSError as exc:
            err = exc.errno or errno.EIO
        data = bytes(view[:pos])
    if len(data) == total:
        return data
    if err == 0:
        raise ClientGone("peer closed the connection in the request body")
    if err in (errno.EAGAIN, errno.EWOULDBLOCK):
        raise ClientGone("no data within socket-timeout")
    if err == errno.ETIMEDOUT and deadline:
        raise body_too_slow(limit)
    raise ClientGone(os.strerror(err))


class HTTPInput(LineReader):
    """``wsgi.input`` for an HTTP body: reads parser events, de-chunked, then EOF."""

    __slots__ = ("_buf", "_conn", "_deadline", "_done", "_ex", "_limit", "received")

    def __init__(self, conn: Connection, ex: HTTPExchange, limit: int, empty: bool,
                 deadline: float = 0.0) -> None:
        """``deadline``: the monotonic time the whole body must have arrived by (0: none;
        body-read-timeout), looked at before each read: socket-timeout bounds each wait, and a
        peer trickling a byte now and then must not hold the worker longer."""
        self._buf = bytearray()
        self._conn = conn
        self._ex = ex
        self._done = empty
        self._limit = limit
        self._deadline = deadline
        self.received = 0

    @property
    def done(self) -> bool:
        return self._done

    def _piece(self) -> bytes | None:
        """The next piece of the body as the parser gives it (no copy), or None at its end."""
        if self._done:
            return None
        conn = self._conn
        if conn.continue_due:
            conn.continue_due = False
            self._ex.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        events = conn.parser.events
        while not events:
            if self._deadline and time.monotonic() > self._deadline:
                raise body_too_slow(self._ex.worker.body_timeout)
            conn.fill()
        ev = events.popleft()
        if not isinstance(ev, bytes):  # an HTTPError (the parser puts no head inside a body)
            raise BadBody(f"bad request body: {ev}")
        if not ev:  # END
            self._done = True
            return None
        self.received += len(ev)
        if self._limit and self.received > self._limit:
            raise BadBody(f"request body larger than limit-post {self._limit}")
        return ev

    def _direct_size(self, wanted: int) -> int:
        """How much of the body a read wanting ``wanted`` more bytes (-1: all) receives straight
        into its result (``recv_body``): what it wants of the body still due, when that is
        DIRECT_MIN..DIRECT_MAX, no received piece waits in the parser, the listener is not TLS
        and limit-post is not crossed (the piece path refuses that one); else 0. (A client
        waiting for 100 Continue sent Expect, which only llhttp reads: nothing is due then.)"""
        conn = self._conn
        parser = conn.parser
        due = parser.body_due
        if due < DIRECT_MIN or parser.events or conn.site.tls is not None:
            return 0
        n = due if wanted < 0 else min(due, wanted)
        if n < DIRECT_MIN or n > DIRECT_MAX or (self._limit and self.received + n > self._limit):
            return 0
        return n

    def _more(self) -> bool:
        piece = self._piece()
        if piece is None:
            return False
        self._buf += piece
        return True

    def read(self, size: int | None = -1) -> bytes:
        # Pieces are joined once, not gathered in the buffer and copied out of it: a 1 MiB
        # upload read at once made four copies of itself (and as many fresh pages to fault in).
        buf = self._buf
        want = -1 if size is None or size < 0 else size
        if 0 <= want <= len(buf):
            out = bytes(memoryview(buf)[:want])
            del buf[:want]
            return out
        pieces: list[bytes] = []
        have = len(buf)
        if have:
            pieces.append(bytes(buf))
            buf.clear()
        while want < 0 or have < want:
            n = self._direct_size(want - have if want >= 0 else -1)
            if n:  # the rest of the body, or what this read wants of it, received in one piece
                self._conn.set_timeouts()
                data = recv_body(self._conn.sock, pieces, n, self._deadline, self._ex.worker.body_timeout)
                self._conn.parser.body_received(n)
                self.received += n
                pieces = [data]
                have = len(data)
                continue
            piece = self._piece()
            if piece is None:
                break
            pieces.append(piece)
            have += len(piece)
        if have > want >= 0:  # the last piece went past ``size``: keep its tail for the next read
            last = pieces[-1]
            cut = len(last) - (have - want)
            buf += memoryview(last)[cut:]
            pieces[-1] = last[:cut]
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl >= 0 and (limit < 0 or nl < limit):
                return self.read(nl + 1)
            if 0 <= limit <= len(buf):
                return self.read(limit)
            start = len(buf)
            if not self._more():
                return self.read(len(buf) if limit < 0 else min(limit, len(buf)))

    def drain(self, most: int) -> bool:
        """Read and drop what is left of the body (at most ``most`` bytes); True if it ended."""
        self._buf.clear()
        start = self.received
        while self.received - start <= most:
            if self._piece() is None:
                return True
        return False


class HTTPExchange(Exchange):
    """One HTTP response: framing (Content-Length, chunked or close), Date, Connection."""

    __slots__ = ("bodyless", "chunked", "client", "keep", "left", "server", "version10")

    def __init__(self, worker: Worker, conn: Connection, method: str, keep: bool, version10: bool,
                 server: Heads) -> None:
        super().__init__(worker, conn.sock, method)  # type: ignore[arg-type]
        self.client = conn
        self.keep = keep
        self.version10 = version10
        self.chunked = False
        self.bodyless = False  # HEAD, 1xx, 204, 304 (set by make_head, for the callers after it)
        self.left = -1  # body bytes still owed under the app's Content-Length (-1: no length)
        self.server = server
        self.timeouts_set = conn.timed  # set once per connection (Connection.set_timeouts)

    def set_timeouts(self) -> None:
        self.client.set_timeouts()
        self.timeouts_set = True

    def make_head(self, length: int = -1) -> bytes:
        """The head with our framing; ``length`` >= 0 when the whole body is known."""
        assert self.status is not None
        base, cl, close = self.server.head(self.status, self.headers)
        extra = http.date_line()
        if close or self.client.continue_due:  # (a client still waiting for 100 Continue: the
            self.keep = False                 # body it may send anyway cannot be told from a request)
        if not body_allowed(self.method, self.status):
            self.bodyless = True
            if self.method == "HEAD" and cl < 0 and length >= 0:
                extra += b"Content-Length: %d\r\n" % length
        elif cl >= 0:
            self.left = cl
        elif length >= 0:
            extra += b"Content-Length: %d\r\n" % length
        elif not self.version10:
            self.chunked = True
            extra += b"Transfer-Encoding: chunked\r\n"
        else:
            self.keep = False  # HTTP/1.0 without a length: the end of the body is the close
        if not self.keep:
            extra += b"Connection: close\r\n"
        elif self.version10:
            extra += b"Connection: keep-alive\r\n"
        return base + extra + b"\r\n"

    def write(self, data: bytes) -> None:  # type: ignore[override]
        if not self.head_sent:
            if self.status is None:
                raise AssertionError("write() before start_response()")
            head = self.make_head()
            self.head_sent = True
            if self.bodyless:
                self.send(head)
                self.method = "HEAD"
                return
            self.send_with_head(head, self._frame(data) if data else b"")
        elif data and self.method != "HEAD":
            self.send(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        if self.chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if self.left >= 0:
            if len(data) > self.left:
                log.error("worker %d: the application sent more than its Content-Length; extra "
                          "bytes dropped and the connection closed", self.worker.wid)
                self.keep = False
                data = data[: self.left]
            self.left -= len(data)
        return data

    def finish(self) -> None:
        """After the body: the last chunk, or close when the app sent less than it announced."""
        if not self.head_sent:
            self.write(b"")
        if self.chunked and self.method != "HEAD":
            self.send(b"0\r\n\r\n")
        elif self.left > 0:
            self.keep = False
