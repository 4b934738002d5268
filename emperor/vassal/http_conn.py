"""HTTP/1.1 connections in a worker: serving requests, keep-alive, parking (docs/http.md).

The parsing is ``emperor.protocol.http`` (sans-IO) and the environ is built by the adapter
(``protocol/wsgi.environ_from_http``); one connection's bytes (its socket and parser, the
request body as ``wsgi.input``, the response framing) are ``emperor.vassal.http_wire``. This
module is the policy around them: it reads requests off a connection, runs the app, checks the
app's headers, answers errors and tells the loop (``emperor.vassal.http_loop``) whether the
connection stays open. Idle connections go to the master through ``parking``.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emperor.protocol import http
from emperor.protocol.wsgi import (
    EMPTY_INPUT,
    FileWrapper,
    HeaderError,
    environ_from_http,
    serialize_head,
)
from emperor.proxies import AllowList
from emperor.vassal import parking
from emperor.vassal import scoreboard as sb
from emperor.vassal.exchange import ClientGone, Conn, close_result
from emperor.vassal.http_wire import RECV_SIZE, BadBody, Connection, HTTPExchange, HTTPInput, Site, peer_of
from emperor.vassal.tls import sites

if TYPE_CHECKING:
    from emperor.vassal.sockets import Listener
    from emperor.vassal.worker import Worker

try:  # the optional C extension (emperor/protocol/_speedups.c)
    from emperor.protocol._speedups import plain as _plain
    from emperor.protocol._speedups import response_head as _response_head
    from emperor.protocol._speedups import serve_plain as _serve_plain
except ImportError:  # pragma: no cover - built wherever a compiler is
    _plain = _response_head = _serve_plain = None

log = logging.getLogger("emperor.http")

LINGER = 1.0  # after an error answer, what the client still sends is read and dropped this long at most
DRAIN_MAX = 1 << 20  # an unread body up to this is read and dropped to keep the connection
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer",
                         "proxy-authenticate", "proxy-authorization"})


class HTTPServer:
    """The HTTP side of one worker: its sites, head cache, date, keep-alive policy."""

    def __init__(self, worker: Worker, listeners: list[Listener], park: socket.socket | None) -> None:
        cfg = worker.cfg
        self.worker = worker
        certs = sites(cfg)
        self.sites = {lst.sock.fileno(): Site(i, lst, worker.base_env, certs.get(lst.name))
                      for i, lst in enumerate(listeners) if lst.proto in ("http", "https")}
        self.by_index = {s.index: s for s in self.sites.values()}
        self.park_sock = park
        self.keepalive = float(cfg.http_keepalive)
        self.max_per_conn = cfg.http_keepalive_requests
        self.timeout = cfg.http_timeout or cfg.socket_timeout
        self.max_head = cfg.buffer_size
        self.proxies = AllowList(cfg.forwarded_allow_ips) if cfg.forwarded_allow_ips else None
        self.heads: dict[tuple[object, ...], tuple[bytes, int, bool]] = {}
        # this worker's scoreboard cells, indexed once (the slot is fixed for the process)
        slot = worker.slot
        self._requests_at = slot + sb.REQUESTS
        self.tally = sb.tally(worker.ints, slot)  # begin()/end() of each request's counting
        self.timeval = struct.pack("ll", int(self.timeout), int((self.timeout % 1) * 1_000_000))
        # After a response, look (recv MSG_DONTWAIT) for a next request already there? Threads
        # must (else they park the connection); the sync loop need not: its poll() sees it, and
        # the peek is a failing syscall and an exception per request. TLS always looks (bytes
        # the SSL object has already decrypted are invisible to poll()).
        self.peek = True
        # The accept loop's "forget this fd" (its epoll set), called before a connection is
        # closed or parked: the sync loop keeps held connections registered while it serves them.
        self.unwatch: Callable[[int], None] | None = None
        # A whole plain request in C (plain_request); with harakiri, the C side notes
        # "METHOD target" before the app.
        self.plain = _plain
        self.io = _serve_plain  # plain with its recv() and send(), for the sync loop's ready connections
        self.note: Callable[[str, str], None] | None = None
        if worker.harakiri:
            board, index = worker.board, worker.index
            self.note = lambda method, target: board.set_text(index, f"{method} {target}"[:200])

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
    def accept(self, sock: Any, site: Site, addr: object = None) -> Connection | None:
        """A freshly accepted connection (after the TLS handshake on an https listener);
        ``addr``: the peer's address as accept() returned it (None: ask getpeername())."""
        if site.tls is not None:
            sock = site.tls.accept(sock, self.timeout)
            if sock is None:
                return None
        try:
            return self.adopt(sock, site, 0, None if addr is None else peer_of(addr), site.tls is None)
        except OSError:  # reset before we even looked at it
            sock.close()
            return None

    def adopt(self, sock: Any, site: Site, served: int = 0, peer: tuple[str, str] | None = None,
              lazy: bool = False) -> Connection:
        """``lazy``: a fresh plain connection, whose socket-timeout is set before its first call
        that would block (Connection.set_timeouts); a parked one comes back with it set, and a
        TLS one needs it for the handshake's reads."""
        if lazy:
            conn = Connection(sock, site, self.max_head, served, peer, self.timeval)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.timeval)
            conn = Connection(sock, site, self.max_head, served, peer)
        host = conn.peer[0]  # "unix:" for a Unix-socket peer, always believed
        conn.trust(self.proxies is not None and self.proxies.allows(None if host == "unix:" else (host,)))
        return conn

    def serve(self, conn: Connection, first: bool) -> bool:
        """Serve requests on ``conn`` while the next one is already there.

        Returns True when the connection should be kept (idle, between requests), False when it
        has been closed. ``first``: a fresh connection, whose first request may still be coming.
        """
        worker = self.worker
        parser = conn.parser
        events = parser.events
        try:
            while True:
                if not self.one(conn, first):
                    break
                first = False
                if not events and parser.dead:
                    self.close(conn)
                    return False
                if not worker.alive or worker.recycle_reason:
                    return True  # stopping: the loop parks it with the master (never closed under a proxy)
                if not events and not ((self.peek or conn.site.tls is not None) and conn.pending()):
                    return True
        except ClientGone as exc:
            worker._note(exc, None, conn.sock)
        except Exception:
            log.exception("worker %d: unexpected error on an HTTP connection", worker.wid)
        self.close(conn)
        return False

    def serve_ready(self, conn: Connection) -> bool:
        """``serve(conn, first=False)`` for a held plain connection the loop's poll() saw
        readable, with the usual keep-alive request's path in C (``_speedups.serve_plain``: the
        recv(), ``plain``, the send() and the counting) and no ``serve``/``one``/``receive``
        frames: with Flask under load, every Python frame of ours costs about three times what
        it costs alone (its code and data are out of the caches by then). Anything else goes on
        through ``serve`` with the bytes fed to the parser, or through ``finish_plain``. A
        worker that logs requests (the log line is built in Python) or a TLS connection takes
        ``serve``. Same result as ``serve``."""
        parser = conn.parser
        worker = self.worker
        if (io := self.io) is None or self.plain is None or worker.log_requests or conn.site.tls is not None \
                or (args := parser.plain_args) is None or not parser.between():
            return self.serve(conn, first=False)
        served = conn.served + 1
        conn.continue_due = False
        try:
            got = io(conn.sock.fileno(), RECV_SIZE, self.tally, *args, worker.app, self.heads, conn,
                     self.keepalive > 0 and served < self.max_per_conn and worker.alive, self.late,
                     self.note, FileWrapper)
            if type(got) is int:  # answered whole: the request count, negated to close
                conn.served = served
                if worker.max_requests and abs(got) >= worker.max_requests:
                    worker.recycle_reason = f"max-requests ({abs(got)} requests)"
                keep = got > 0
            elif got is None:
                return True  # nothing to read after all: still idle
            elif type(got) is bytes:
                if got:  # not the usual request: the parser reads it
                    parser.feed(got)
                    return self.serve(conn, first=False)
                conn.eof = True  # closed or reset between requests (nothing to note)
                keep = False
            else:
                keep = self.finish_plain(conn, got[0], got[1], served, got[2])
        except ClientGone as exc:
            worker._note(exc, None, conn.sock)
            keep = False
        except Exception:
            log.exception("worker %d: unexpected error on an HTTP connection", worker.wid)
            keep = False
        if not keep:
            self.close(conn)
        return keep

    def close(self, conn: Connection) -> None:
        """Close, first dropping bytes already received (a pipelined request after a
        ``Connection: close``): unread data would turn the close into a reset, and a reset can
        destroy the last response before the client has read it."""
        sock = conn.sock
        if self.unwatch is not None:
            self.unwatch(sock.fileno())
        if not conn.eof:  # (after the peer's FIN there is nothing left to drop)
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
        parser = conn.parser
        events = parser.events  # (parser.next_event() inlined: one call less per request)
        if not events:
            deadline = time.monotonic() + self.timeout
            while not events:
                try:
                    data = conn.receive(deadline)
                except ClientGone as exc:
                    if parser.head_started or (first and "closed" not in str(exc)):  # slow: once per peer
                        self.worker._note(ClientGone(f"{conn.peer[0]}: {exc}"), None, conn.sock)
                    return False
                # the usual keep-alive request, whole in one recv: served in C (_speedups.plain)
                if self.plain is not None and (args := parser.plain_args) is not None and parser.between():
                    done = self.plain_request(conn, data, args)
                    if done is not None:
                        return done
                parser.feed(data)
        ev = events.popleft()
        if isinstance(ev, http.HTTPError):
            self.reject(conn, ev)
            return False
        assert isinstance(ev, http.Head)
        env = ev.env  # built by the codec's C fast path (a plain head), else:
        if env is None:
            env = environ_from_http(ev, conn.site.env, conn.peer, conn.trusted)
        return self.exchange(conn, env, ev.method, ev.target, ev.keep_alive and not parser.upgraded,
                             ev.version == "HTTP/1.0", ev)

    def plain_request(self, conn: Connection, data: bytes, args: tuple[Any, ...]) -> bool | None:
        """``data`` as one whole plain bodiless request, served by ``_speedups.plain``: it parses
        the head, builds the environ, calls the app and, for the usual response (a list of one
        bytes, or an iterable whose first piece is the whole declared body, under a head already
        checked and cached), returns the bytes to send; anything else comes back as a ``Reply``
        that ``respond`` (or ``_raised``) completes with the ``HTTPExchange`` from ``late``, as
        the Python path would have. None: ``data`` is not such a request (nothing consumed)."""
        worker = self.worker
        start = self.tally.begin()
        served = conn.served + 1
        conn.continue_due = False
        got = self.plain(data, *args, worker.app, self.heads, conn,  # type: ignore[misc]
                         self.keepalive > 0 and served < self.max_per_conn and worker.alive, self.late,
                         self.note, FileWrapper)
        if got is None:  # not counted, and not busy while the parser waits for the rest of a head
            self.tally.idle()
            return None
        return self.finish_plain(conn, got, start, served, 0)

    def finish_plain(self, conn: Connection, got: Any, start: int, served: int, already: int) -> bool:
        """The rest of a request ``_speedups.plain`` took (its result ``got``; ``start``: when the
        tally began; ``served``: the connection's count with it; ``already``: bytes of a whole
        answer ``serve_plain`` sent before the socket's buffer filled): send or finish the
        response, count it, log it. True: keep the connection."""
        worker = self.worker
        conn.served = served
        ex: HTTPExchange | None = None
        sent = 0
        try:
            if type(got) is tuple:
                out, keep, reply = got
                conn.send_all(memoryview(out)[already:] if already else out)
                sent = len(out)
                if reply.rest is not None:  # an iterable whose first piece was the declared body
                    keep = self._drain(reply) and keep
                return bool(keep)
            reply = got
            ex = got.exchange or self.late(got)
            try:
                if got.error is not None:
                    try:
                        self._raised(ex, got.environ, got.error)
                    finally:
                        if (close := getattr(got.result, "close", None)) is not None:
                            close_result(close, worker.wid)
                else:
                    self.respond(ex, got.environ, got.result, got.rest, got.first)
            except BadBody as exc:
                if not ex.head_sent:
                    self.reject(conn, http.HTTPError(400, str(exc)))
                    worker.ints[self._requests_at] -= 1  # reject() counted it; counted once below
                return False
            return ex.keep
        finally:
            if ex is not None:
                sent = ex.sent
            done = self.tally.end(start, sent)
            if worker.log_requests:
                worker._log_request(reply.environ, ex or Sent(reply, sent), start)  # type: ignore[arg-type]
            if worker.max_requests and done >= worker.max_requests:
                worker.recycle_reason = f"max-requests ({done} requests)"

    def late(self, reply: Any) -> HTTPExchange:
        """The exchange that takes over a response ``_speedups.plain`` could not finish alone
        (also its Reply's ``write()``), with what the app gave start_response so far."""
        ex = HTTPExchange(self.worker, reply.conn, reply.method, reply.keep, reply.version10, self)
        ex.status = reply.status
        ex.headers = reply.headers if reply.headers is not None else []
        if reply.sent:  # the head and the whole declared body went out: more is the app's error
            ex.head_sent = True
            ex.left = 0
        reply.exchange = ex  # a generator's start_response, called later, reaches the exchange
        return ex

    def _drain(self, reply: Any) -> bool:
        """After the declared body of an iterable result went out whole, what ``_speedups.plain``
        found after it: usually nothing (the iterator ended, close() was called there, and this
        is not called at all). Else: close() raised (``closed``), logged here; or the iterator
        raised (``error``), answered as the app's failure; or it gave a piece more (``first``),
        which with the rest is dropped (logged) as on the Python path, then close().
        False: close the connection (the app sent more, or failed)."""
        if reply.closed:
            log.error("worker %d: error in the response's close()", self.worker.wid, exc_info=reply.error)
            return True
        keep = True
        try:
            if reply.error is not None:
                raise reply.error
            for chunk in itertools.chain((reply.first,), reply.rest):
                if chunk:
                    ex = reply.exchange or self.late(reply)
                    ex.write(chunk)  # (dropped and logged: nothing is left of the declared length)
                    keep = keep and ex.keep
        except Exception as exc:
            self._raised(reply.exchange or self.late(reply), reply.environ, exc)
            keep = False
        finally:
            if (close := getattr(reply.result, "close", None)) is not None:
                close_result(close, self.worker.wid)
        return keep

    def _raised(self, ex: HTTPExchange, env: dict[str, Any], exc: BaseException) -> None:
        """The app raised ``exc`` (calling it, or iterating what it returned, on either path): a
        client gone goes on up as ClientGone, a broken body as BadBody; anything else is the
        app's failure, logged and answered with a 500 (or a close, after the head)."""
        if isinstance(exc, (ClientGone, BadBody)):
            raise exc
        if isinstance(exc, ConnectionError):
            raise ClientGone(str(exc)) from None
        self._failed(ex, env, exc)

    def reject(self, conn: Connection, err: http.HTTPError) -> None:
        worker = self.worker
        if worker._first(conn.peer[0], err.kind):
            log.warning("worker %d: bad HTTP request from %s: %s", worker.wid, conn.peer[0], err)
        worker.ints[worker.slot + sb.REQUESTS] += 1
        conn.set_timeouts()
        send_error(conn.sock, err.status, str(err))

    def exchange(self, conn: Connection, env: dict[str, Any], method: str, target: str, keep_alive: bool,
                 version10: bool, head: http.Head | None) -> bool:
        """Run the app for one request and answer it; True: the connection stays open.
        ``head``: the parsed head when the request may have a body (None: a plain bodiless one)."""
        worker = self.worker
        ints = worker.ints
        start = self.tally.begin()
        conn.served += 1
        keep = keep_alive and self.keepalive > 0 and conn.served < self.max_per_conn and worker.alive
        ex = HTTPExchange(worker, conn, method, keep, version10, self)
        try:
            inp: HTTPInput | None = None
            if head is None or (not head.chunked and not head.content_length):
                if head is not None:
                    events = conn.parser.events
                    if not events or events.popleft() is not http.END:  # llhttp ends it with the head
                        raise BadBody("a request without a body did not end with its head")
                env["wsgi.input"] = EMPTY_INPUT  # stateless: one for every bodiless request
                conn.continue_due = False
            else:
                if worker.limit_post and (head.content_length or 0) > worker.limit_post:
                    self._too_large(conn, head)
                    return False
                slow = worker.body_timeout  # body-read-timeout, counted from the request's start
                inp = env["wsgi.input"] = HTTPInput(conn, ex, worker.limit_post, False,
                                                    start / 1e9 + slow if slow else 0.0)
                conn.continue_due = head.expect_continue
            if worker.harakiri:
                worker.board.set_text(worker.index, f"{method} {target}"[:200])
            self.run_app(ex, env)
            # a body left unread: drop it to keep the connection, unless the client still waits
            # for our 100 Continue (it will not send it), or it is too large to be worth it
            if inp is not None and not inp.done and (conn.continue_due or not ex.keep
                                                     or not inp.drain(DRAIN_MAX)):
                ex.keep = False
            return ex.keep
        except BadBody as exc:
            if not ex.head_sent:
                self.reject(conn, http.HTTPError(413 if "limit-post" in str(exc) else 400, str(exc)))
                ints[self._requests_at] -= 1  # reject() counted it; counted once below
            return False
        finally:
            done = self.tally.end(start, ex.sent)
            if worker.log_requests:
                worker._log_request(env, ex, start)
            if worker.max_requests and done >= worker.max_requests:
                worker.recycle_reason = f"max-requests ({done} requests)"

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
        except Exception as exc:
            self._raised(ex, env, exc)
            return
        self.respond(ex, env, result)

    def respond(self, ex: HTTPExchange, env: dict[str, Any], result: Any, rest: Any = None,
                first: Any = None) -> None:
        """Send what the app returned (``result``: its iterable), then close it. ``rest``: its
        iterator when ``_speedups.plain`` took the first piece already (``first``; None: none)."""
        worker = self.worker
        try:
            if rest is not None:
                write = ex.write
                if first:
                    write(first)
                for chunk in rest:
                    if chunk:
                        write(chunk)
                ex.finish()
            elif type(result) is list and len(result) == 1 and not ex.head_sent and ex.status is not None:
                body = result[0]
                # the usual whole response: its head in C from the cached checked one (None:
                # not cached yet, HEAD, no body allowed, a framing of the app's: make_head)
                if (type(body) is bytes and _response_head is not None and ex.method != "HEAD"
                        and not ex.client.continue_due
                        and (head := _response_head(self.heads, ex.status, ex.headers, len(body), ex.keep,
                                                    ex.version10)) is not None):
                    ex.head_sent = True
                    ex.send_with_head(head, body)
                    return
                head = ex.make_head(len(body))
                ex.head_sent = True
                if not ex.bodyless:
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
        except Exception as exc:
            self._failed(ex, env, exc)
        finally:
            if (close := getattr(result, "close", None)) is not None:
                close_result(close, worker.wid)

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
        ex.set_timeouts()  # (sendfile() below blocks)
        head = ex.make_head(size)
        ex.head_sent = True
        ex.send(head)
        if ex.bodyless:
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

    def _failed(self, ex: HTTPExchange, env: dict[str, Any], exc: BaseException) -> None:
        worker = self.worker
        worker.ints[worker.slot + sb.EXCEPTIONS] += 1
        import traceback

        log.error("worker %d: %s %s raised:\n%s", worker.wid, ex.method, env.get("PATH_INFO"),
                  "".join(traceback.format_exception(exc)).rstrip())
        self._error_response(ex, 500)

    def _error_response(self, ex: HTTPExchange, status: int) -> None:
        ex.keep = False
        if ex.head_sent:
            return  # mid-body: only closing the connection can tell the client
        ex.head_sent = True
        ex.status = f"{status} {http.reason(status)}"
        body = f"{status} {http.reason(status)}\n".encode()
        head = (f"HTTP/1.1 {ex.status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n").encode() + http.date_line() + b"\r\n"
        try:
            ex.send(head if ex.method == "HEAD" else head + body)
        except ClientGone:
            pass

    # ---- parking -------------------------------------------------------------------------
    def park(self, conn: Connection) -> None:
        """Hand an idle connection to the master (which watches it for us); close our copy."""
        if self.unwatch is not None:
            self.unwatch(conn.sock.fileno())
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


class Sent:
    """What the request log reads of an exchange (status, headers, method, bytes sent), for a
    response ``_speedups.plain`` built and sent whole."""

    __slots__ = ("head_sent", "headers", "method", "sent", "status")

    def __init__(self, reply: Any, sent: int) -> None:
        self.status = reply.status
        self.headers = reply.headers
        self.method = reply.method
        self.head_sent = True
        self.sent = sent


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
        # Read and drop what the client still sends until its FIN, so that our close does not
        # reset the connection under an answer it has not read yet; but at most LINGER in all,
        # or a client trickling bytes would hold the worker for ever.
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:
        pass

