"""HTTP/1.1 connections in a worker: requests, responses, keep-alive (docs/http.md).

The parsing is ``emperor.protocol.http`` (sans-IO) and the environ is built by the adapter
(``protocol/wsgi.environ_from_http``); this module owns the sockets: it reads requests off a
connection, runs the app, frames the response (Content-Length, chunked or close-delimited;
Date; Connection) and tells the loop (``emperor.vassal.http_loop``) whether the connection
stays open. Idle connections go to the master through ``parking``.
"""

from __future__ import annotations

import email.utils
import errno
import logging
import os
import socket
import struct
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from emperor.protocol import http
from emperor.protocol.wsgi import (
    FileWrapper,
    HeaderError,
    body_allowed,
    environ_from_http,
    serialize_head,
    site_environ,
)
from emperor.proxies import AllowList
from emperor.vassal import parking
from emperor.vassal import scoreboard as sb
from emperor.vassal.exchange import ClientGone, Conn, Exchange
from emperor.vassal.tls import TLSSite, sites

if TYPE_CHECKING:
    from emperor.vassal.sockets import Listener
    from emperor.vassal.worker import Worker

log = logging.getLogger("emperor.http")

RECV_SIZE = 65536
DRAIN_MAX = 1 << 20  # an unread body up to this is read and dropped to keep the connection
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
                         "proxy-authenticate", "proxy-authorization"})


class Site:
    """What an HTTP listener contributes to every environ (computed once, not per request)."""

    __slots__ = ("env", "index", "scheme", "tls")

    def __init__(self, index: int, lst: Listener, tls: TLSSite | None = None) -> None:
        self.index = index
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        try:
            name = lst.sock.getsockname()
        except OSError:
            name = ""
        self.env = site_environ(name, tls is not None)


class BadBody(ConnectionError):
    """The request body broke the framing (a bad chunk) or the size limit: close the connection."""


class Connection:
    """One client connection: its socket, its parser and what it has served."""

    __slots__ = ("continue_due", "parser", "peer", "served", "site", "sock", "trusted")

    def __init__(self, sock: Any, site: Site, max_head: int, served: int = 0) -> None:
        self.sock = sock
        self.site = site
        self.served = served
        self.parser = http.RequestParser(max_head)
        self.continue_due = False
        try:
            name = sock.getpeername()
        except OSError:
            name = None
        self.peer = (str(name[0]), str(name[1])) if isinstance(name, tuple) else ("unix:", "")
        self.trusted = False  # forwarded-allow-ips lists this peer (set by HTTPServer.adopt)

    def fill(self, deadline: float | None = None) -> None:
        """recv once (the socket's SO_RCVTIMEO bounds the wait) and feed the parser."""
        if deadline is not None and time.monotonic() > deadline:
            raise ClientGone("request head not complete within socket-timeout")
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            raise ClientGone("no data within socket-timeout") from None
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None
        if not data:
            raise ClientGone("peer closed the connection")
        self.parser.feed(data)

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
            raise ClientGone("peer closed the idle connection")
        self.parser.feed(data)
        return True


class HTTPInput:
    """``wsgi.input`` for an HTTP body: reads parser events, de-chunked, then EOF."""

    __slots__ = ("_buf", "_conn", "_done", "_ex", "_limit", "received")

    def __init__(self, conn: Connection, ex: HTTPExchange, limit: int, empty: bool) -> None:
        self._buf = bytearray()
        self._conn = conn
        self._ex = ex
        self._done = empty
        self._limit = limit
        self.received = 0

    @property
    def done(self) -> bool:
        return self._done

    def _more(self) -> bool:
        if self._done:
            return False
        conn = self._conn
        if conn.continue_due:
            conn.continue_due = False
            self._ex.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        while (ev := conn.parser.next_event()) is None:
            conn.fill()
        if isinstance(ev, http.HTTPError):
            raise BadBody(f"bad request body: {ev}")
        if ev is http.END:
            self._done = True
            return False
        assert isinstance(ev, bytes)
        self.received += len(ev)
        if self._limit and self.received > self._limit:
            raise BadBody(f"request body larger than limit-post {self._limit}")
        self._buf += ev
        return True

    def read(self, size: int | None = -1) -> bytes:
        buf = self._buf
        if size is None or size < 0:
            while self._more():
                pass
        else:
            while len(buf) < size and self._more():
                pass
        n = len(buf) if size is None or size < 0 else min(size, len(buf))
        out = bytes(buf[:n])
        del buf[:n]
        return out

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

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Any:
        while line := self.readline():
            yield line

    def drain(self, most: int) -> bool:
        """Read and drop what is left of the body (at most ``most`` bytes); True if it ended."""
        self._buf.clear()
        start = self.received
        while self.received - start <= most:
            if not self._more():
                return True
            self._buf.clear()
        return False


class HTTPExchange(Exchange):
    """One HTTP response: framing (Content-Length, chunked or close), Date, Connection."""

    __slots__ = ("chunked", "client", "keep", "left", "server", "version10")

    def __init__(self, worker: Worker, conn: Connection, method: str, keep: bool, version10: bool,
                 server: HTTPServer) -> None:
        super().__init__(worker, conn.sock, method)  # type: ignore[arg-type]
        self.client = conn
        self.keep = keep
        self.version10 = version10
        self.chunked = False
        self.left = -1  # body bytes still owed under the app's Content-Length (-1: no length)
        self.server = server
        self.timeouts_set = True  # SO_RCVTIMEO/SO_SNDTIMEO are set once per connection (adopt)

    def make_head(self, length: int = -1) -> bytes:
        """The head with our framing; ``length`` >= 0 when the whole body is known."""
        assert self.status is not None
        base, cl, close = self.server.head(self.status, self.headers)
        extra = self.server.date()
        if close or self.client.continue_due:  # (a client still waiting for 100 Continue: the
            self.keep = False                 # body it may send anyway cannot be told from a request)
        if not body_allowed(self.method, self.status):
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
            if not body_allowed(self.method, self.status):
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


class HTTPServer:
    """The HTTP side of one worker: its sites, head cache, date, keep-alive policy."""

    def __init__(self, worker: Worker, listeners: list[Listener], park: socket.socket | None) -> None:
        cfg = worker.cfg
        self.worker = worker
        certs = sites(cfg)
        self.sites = {lst.sock.fileno(): Site(i, lst, certs.get(lst.name)) for i, lst in enumerate(listeners)
                      if lst.proto in ("http", "https")}
        self.by_index = {s.index: s for s in self.sites.values()}
        self.park_sock = park
        self.keepalive = float(cfg.http_keepalive)
        self.max_per_conn = cfg.http_keepalive_requests
        self.timeout = cfg.http_timeout or cfg.socket_timeout
        self.max_head = cfg.buffer_size
        self.proxies = AllowList(cfg.forwarded_allow_ips) if cfg.forwarded_allow_ips else None
        self.heads: dict[tuple[object, ...], tuple[bytes, int, bool]] = {}
        self._date_at = 0
        self._date = b""
        self.timeval = struct.pack("ll", int(self.timeout), int((self.timeout % 1) * 1_000_000))

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._date_at:
            self._date_at = now
            self._date = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date

    def head(self, status: str, headers: list[tuple[str, str]]) -> tuple[bytes, int, bool]:
        """(head without the blank line, the app's Content-Length or -1, app asked to close)."""
        try:
            key = (status, *headers)
            return self.heads[key]
        except KeyError:
            pass
        except TypeError:
            return _make_head(status, headers)
        out = _make_head(status, headers)
        if len(self.heads) >= 512:
            self.heads.clear()
        self.heads[key] = out
        return out

    # ---- connections ---------------------------------------------------------------------
    def accept(self, sock: Any, site: Site) -> Connection | None:
        """A freshly accepted connection (after the TLS handshake on an https listener)."""
        if site.tls is not None:
            sock = site.tls.accept(sock, self.timeout)
            if sock is None:
                return None
        try:
            return self.adopt(sock, site)
        except OSError:  # reset before we even looked at it
            sock.close()
            return None

    def adopt(self, sock: Any, site: Site, served: int = 0) -> Connection:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.timeval)
        conn = Connection(sock, site, self.max_head, served)
        if self.proxies is not None:
            host = conn.peer[0]  # "unix:" for a Unix-socket peer, always believed
            conn.trusted = self.proxies.allows(None if host == "unix:" else (host,))
        return conn

    def serve(self, conn: Connection, first: bool) -> bool:
        """Serve requests on ``conn`` while the next one is already there.

        Returns True when the connection should be kept (idle, between requests), False when it
        has been closed. ``first``: a fresh connection, whose first request may still be coming.
        """
        worker = self.worker
        try:
            while True:
                if not self.one(conn, first):
                    break
                first = False
                if conn.parser.dead and not conn.parser.events:
                    self.close(conn)
                    return False
                if not worker.alive or worker.recycle_reason:
                    return True  # stopping: the loop parks it with the master (never closed under a proxy)
                if not conn.pending():
                    return True
        except ClientGone as exc:
            worker._note(exc, None, conn.sock)
        except Exception:
            log.exception("worker %d: unexpected error on an HTTP connection", worker.wid)
        self.close(conn)
        return False

    def close(self, conn: Connection) -> None:
        """Close, first dropping bytes already received (a pipelined request after a
        ``Connection: close``): unread data would turn the close into a reset, and a reset can
        destroy the last response before the client has read it."""
        sock = conn.sock
        try:
            for _ in range(16):
                if not sock.recv(65536, socket.MSG_DONTWAIT):
                    break
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass

    def one(self, conn: Connection, first: bool) -> bool:
        """One request. False: the connection is finished (the caller closes it)."""
        worker = self.worker
        parser = conn.parser
        deadline = time.monotonic() + self.timeout
        while (ev := parser.next_event()) is None:
            try:
                conn.fill(deadline)
            except ClientGone as exc:
                if parser.head_started or (first and "closed" not in str(exc)):
                    worker._note(ClientGone(f"{conn.peer[0]}: {exc}"), None, conn.sock)  # slow: once per peer
                return False
        if isinstance(ev, http.HTTPError):
            self.reject(conn, ev)
            return False
        assert isinstance(ev, http.Head)
        return self.request(conn, ev)

    def reject(self, conn: Connection, err: http.HTTPError) -> None:
        worker = self.worker
        if worker._first(conn.peer[0], err.kind):
            log.warning("worker %d: bad HTTP request from %s: %s", worker.wid, conn.peer[0], err)
        worker.ints[worker.slot + sb.REQUESTS] += 1
        send_error(conn.sock, err.status, str(err))

    def request(self, conn: Connection, head: http.Head) -> bool:
        worker = self.worker
        ints, slot = worker.ints, worker.slot
        start = time.monotonic_ns()
        ints[slot + sb.BUSY_SINCE] = start
        conn.served += 1
        keep = head.keep_alive and self.keepalive > 0 and conn.served < self.max_per_conn and worker.alive \
            and not conn.parser.upgraded
        ex = HTTPExchange(worker, conn, head.method, keep, head.version == "HTTP/1.0", self)
        env: dict[str, Any] | None = None
        try:
            env = environ_from_http(head, conn.site.env, worker.base_env, conn.peer, conn.trusted)
            if worker.limit_post and (head.content_length or 0) > worker.limit_post:
                self._too_large(conn, head)
                return False
            empty = not head.chunked and not head.content_length
            if empty and conn.parser.next_event() is not http.END:  # llhttp ends it with the head
                raise BadBody("a request without a body did not end with its head")
            inp = HTTPInput(conn, ex, worker.limit_post, empty)
            env["wsgi.input"] = inp
            conn.continue_due = head.expect_continue and not empty
            if worker.harakiri:
                worker.board.set_text(worker.index, f"{head.method} {head.target}"[:200])
            self.run_app(ex, env)
            # a body left unread: drop it to keep the connection, unless the client still waits
            # for our 100 Continue (it will not send it), or it is too large to be worth it
            if not inp.done and (conn.continue_due or not ex.keep or not inp.drain(DRAIN_MAX)):
                ex.keep = False
            return ex.keep
        except BadBody as exc:
            if not ex.head_sent:
                self.reject(conn, http.HTTPError(413 if "limit-post" in str(exc) else 400, str(exc)))
                ints[slot + sb.REQUESTS] -= 1  # reject() counted it; counted once below
            return False
        finally:
            ints[slot + sb.REQUESTS] += 1
            ints[slot + sb.BUSY_SINCE] = 0
            ints[slot + sb.TX] += ex.sent
            if worker.log_requests and env is not None:
                worker._log_request(env, ex, start)
            if worker.max_requests and ints[slot + sb.REQUESTS] >= worker.max_requests:
                worker.recycle_reason = f"max-requests ({ints[slot + sb.REQUESTS]} requests)"
            took = (time.monotonic_ns() - start) // 1000
            ints[slot + sb.RT_SUM_US] += took
            ints[slot + sb.HIST + bisect_left(sb.HIST_BOUNDS_US, took)] += 1

    def _too_large(self, conn: Connection, head: http.Head) -> None:
        self.reject(conn, http.HTTPError(413, f"request body of {head.content_length} bytes is larger "
                                              f"than limit-post {self.worker.limit_post}"))
        self.worker.ints[self.worker.slot + sb.REQUESTS] -= 1

    def run_app(self, ex: HTTPExchange, env: dict[str, Any]) -> None:
        worker = self.worker
        app = worker.app
        assert app is not None
        try:
            result = app(env, ex.start_response)
        except (ClientGone, BadBody):
            raise
        except ConnectionError as exc:
            raise ClientGone(str(exc)) from None
        except Exception:
            self._failed(ex, env)
            return
        try:
            if type(result) is list and len(result) == 1 and not ex.head_sent and ex.status is not None:
                body = result[0]
                head = ex.make_head(len(body))
                ex.head_sent = True
                if body_allowed(ex.method, ex.status):
                    if ex.left >= 0:
                        body = ex._frame(body)
                    ex.send_with_head(head, body)
                    if ex.left > 0:
                        ex.keep = False
                else:
                    ex.send(head)
            elif isinstance(result, FileWrapper) and hasattr(result.filelike, "fileno"):
                self._send_file(ex, result)
            else:
                write = ex.write
                for chunk in result:
                    if chunk:
                        write(chunk)
                ex.finish()
        except (ClientGone, BadBody):
            raise
        except HeaderError as exc:
            log.error("worker %d: %s %s: bad response head: %s", worker.wid, ex.method,
                      env.get("PATH_INFO"), exc)
            worker.ints[worker.slot + sb.EXCEPTIONS] += 1
            self._error_response(ex, 500)
        except Exception:
            self._failed(ex, env)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("worker %d: error in the response's close()", worker.wid)

    def _send_file(self, ex: HTTPExchange, wrapper: FileWrapper) -> None:
        """wsgi.file_wrapper: a Content-Length from the file's size, then sendfile()."""
        f = wrapper.filelike
        try:
            if getattr(ex.conn, "tls", False):
                raise ValueError("no sendfile() through TLS")
            fd = f.fileno()
            offset = f.tell() if hasattr(f, "tell") else 0
            size = os.fstat(fd).st_size - offset
        except (OSError, ValueError, AttributeError):
            for chunk in wrapper:
                ex.write(chunk)
            ex.finish()
            return
        assert ex.status is not None
        head = ex.make_head(size)
        ex.head_sent = True
        ex.send(head)
        if not body_allowed(ex.method, ex.status):
            return
        if ex.left >= 0:
            size = min(size, ex.left)
            ex.left -= size
        out = ex.conn.fileno()
        while size > 0:
            try:
                n = os.sendfile(out, fd, offset, min(size, 1 << 30))
            except OSError as exc:
                raise ClientGone(exc.strerror or str(exc)) from None
            if n == 0:
                ex.keep = False
                break
            offset += n
            size -= n
            ex.sent += n
        if ex.left > 0:
            ex.keep = False

    def _failed(self, ex: HTTPExchange, env: dict[str, Any]) -> None:
        worker = self.worker
        worker.ints[worker.slot + sb.EXCEPTIONS] += 1
        import traceback

        log.error("worker %d: %s %s raised:\n%s", worker.wid, ex.method, env.get("PATH_INFO"),
                  traceback.format_exc().rstrip())
        self._error_response(ex, 500)

    def _error_response(self, ex: HTTPExchange, status: int) -> None:
        ex.keep = False
        if ex.head_sent:
            return  # mid-body: only closing the connection can tell the client
        ex.head_sent = True
        ex.status = f"{status} {http.reason(status)}"
        body = f"{status} {http.reason(status)}\n".encode()
        head = (f"HTTP/1.1 {ex.status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n").encode() + self.date() + b"\r\n"
        try:
            ex.send(head if ex.method == "HEAD" else head + body)
        except ClientGone:
            pass

    # ---- parking -------------------------------------------------------------------------
    def park(self, conn: Connection) -> None:
        """Hand an idle connection to the master (which watches it for us); close our copy."""
        sock = self.park_sock
        if sock is not None and conn.site.tls is None:  # TLS state cannot leave this process
            try:
                parking.send_conn(sock, conn.sock.fileno(), conn.served, conn.site.index,
                                  socket.MSG_DONTWAIT)
                conn.sock.close()  # only our copy: never drain (close()) what now belongs to the master
                return
            except OSError as exc:  # master gone (reload, stop) or its queue full: just close
                level = logging.DEBUG if exc.errno in (errno.ECONNREFUSED, errno.EPIPE) else logging.WARNING
                log.log(level, "worker %d: cannot park an idle connection (%s): closing it",
                        self.worker.wid, exc.strerror)
        self.close(conn)

    def take_parked(self) -> Connection | None:
        """A connection the master saw a request arrive on (None: another worker took it)."""
        assert self.park_sock is not None
        try:
            got = parking.recv_conn(self.park_sock, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            log.error("worker %d: taking a parked connection: %s", self.worker.wid, exc.strerror)
            return None
        if got is None:
            return None
        fd, served, index = got
        sock = Conn(fileno=fd)
        site = self.by_index.get(index)
        try:
            if site is not None:
                return self.adopt(sock, site, served)
        except OSError:  # the client reset it meanwhile
            pass
        sock.close()
        return None


def _make_head(status: str, headers: list[tuple[str, str]]) -> tuple[bytes, int, bool]:
    cl, close = -1, False
    for k, v in headers:
        lk = k.lower() if isinstance(k, str) else ""
        if lk == "content-length":
            if not (isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 18):
                raise HeaderError(f"Content-Length {v!r} is not a decimal number")
            cl = int(v)
        elif lk in _HOP_BY_HOP:
            if lk == "connection" and isinstance(v, str) and v.strip().lower() == "close":
                close = True
                continue
            raise HeaderError(f"hop-by-hop header {k!r} set by the application (PEP 3333)")
    head = serialize_head(status, headers)
    return head[:-2], cl, close


def send_error(sock: socket.socket, status: int, message: str) -> None:
    """An error answer that closes the connection (what we read can no longer be trusted)."""
    text = f"{status} {http.reason(status)}: {message}\n".encode("latin-1", "replace")
    head = (f"HTTP/1.1 {status} {http.reason(status)}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\nConnection: close\r\n\r\n").encode()
    try:
        sock.sendall(head + text)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.5)
        while sock.recv(65536):  # let the client read the answer before our close resets it
            pass
    except OSError:
        pass

