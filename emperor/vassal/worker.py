"""A worker: accept -> read the uwsgi packet -> environ -> WSGI app -> response -> close.

The worker moves bytes: the packet is decoded by the codec (``protocol/uwsgi.py``) and
turned into the environ by the adapter (``protocol/wsgi.environ_from_uwsgi``); the worker
reads, sends, counts and logs. Workers with an HTTP socket are ``http_loop.HTTPWorker``
(the master picks the class), which serves uwsgi sockets with ``handle`` too; the
connection primitives both share are in ``exchange.py``.

This is the hot loop, so it is written for syscalls and allocations:
- one ``recv`` normally brings the header, the vars and a small body (MSG_DONTWAIT first:
  when the data is already there no timeout has to be set on the accepted socket);
- the vars *are* the environ (one dict), the constant ``wsgi.*`` keys come from one update();
- a list body is sent with the head in a single ``send``; the connection is then closed.

Signals: SIGTERM/SIGHUP = finish the current request, then exit (the handler closes this
process's copy of the listening sockets, so a blocked accept() fails at once and nothing
already accepted is dropped); SIGINT/SIGQUIT = exit now.

Request lines are written by ``reqlog.RequestWriter``, peer trouble is rate-limited by
``peerlog``. Why this module is still a little over the ~500 lines of the others: what is left
is the accept loops and one request's path (read, decode, run the app, send, count), which share
the worker's per-request state through local attribute reads; splitting them further would add
a call or an indirection per request on the hot path.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from emperor import logs
from emperor.config_view import ConfigView
from emperor.protocol import uwsgi
from emperor.protocol.uwsgi import check_header, content_length, parse_vars, request_method
from emperor.protocol.wsgi import (
    EMPTY_INPUT,
    EmptyInput,
    FileWrapper,
    HeaderError,
    Input,
    base_environ,
    body_allowed,
    environ_from_uwsgi,
    serialize_head,
)
from emperor.proxies import AllowList
from emperor.vassal import scoreboard as sb
from emperor.vassal.exchange import DONTWAIT, ClientGone, Conn, Exchange, accepter, close_result, drain
from emperor.vassal.loader import AppLoadError, WSGIApp
from emperor.vassal.peerlog import PeerLog, peer_key
from emperor.vassal.postbuf import FileInput, buffer_body
from emperor.vassal.reqlog import RequestLog, RequestWriter, request_sink
from emperor.vassal.sockets import Listener

try:  # the optional C extension (emperor/protocol/_speedups.c)
    from emperor.protocol._speedups import uwsgi_request as _uwsgi_request
except ImportError:  # pragma: no cover - built wherever a compiler is
    _uwsgi_request = None

log = logging.getLogger("emperor.worker")

AF_UNIX = socket.AF_UNIX
DRAIN_TIME = 2.0  # the longest a drain may take in all (less with a shorter socket-timeout)
HEAD_CACHE_SIZE = 512
_ERROR_BODY = {400: b"Bad Request\n", 413: b"Payload Too Large\n", 500: b"Internal Server Error\n",
               501: b"Not Implemented\n"}
_REASON = {400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error",
           501: "Not Implemented"}


def _jitter(delta: int) -> int:
    """max-requests-delta: a random extra count (random is imported only when it is used)."""
    import random

    return random.randint(0, delta)


class Worker:
    def __init__(self, wid: int, listeners: list[Listener], cfg: ConfigView, board: sb.Scoreboard,
                 app: WSGIApp | None, load_app: Callable[[], WSGIApp]) -> None:
        self.wid = wid
        self.index = wid - 1
        self.listeners = listeners
        self.cfg = cfg
        self.board = board
        self.app = app
        self.load_app = load_app
        self.alive = True
        # an accept loop that waits in epoll (http_loop) registers this socket's peer: closing
        # the listeners below wakes poll() (POLLNVAL) but not epoll, where they stay registered
        self.wakeup: socket.socket | None = None
        self.buffer_size = cfg.buffer_size
        self.recv_size = cfg.buffer_size + 4 + 8192  # header, the largest vars block, a small body
        self.limit_post = cfg.limit_post
        self.post_buffering, self.post_bufsize = cfg.post_buffering, cfg.post_buffering_bufsize
        self.timeout = cfg.socket_timeout
        self.body_timeout = cfg.body_read_timeout
        self.timeval = struct.pack("ll", int(self.timeout), int((self.timeout % 1) * 1_000_000))
        self.base_env = base_environ(cfg.threads > 1)
        self.proxies = AllowList(cfg.forwarded_allow_ips)
        self.reqlog = RequestLog(cfg)
        self.log_requests = self.reqlog.some  # every request, or some (log-4xx, log-slow ...)
        self.harakiri = cfg.harakiri > 0
        delta = cfg.max_requests_delta if cfg.max_requests_delta is not None else cfg.max_requests // 10
        self.max_requests = cfg.max_requests + (_jitter(delta) if cfg.max_requests and delta else 0)
        self.rss_limit = cfg.reload_on_rss * 1024 * 1024
        self.as_limit = cfg.reload_on_as * 1024 * 1024
        self.recycle_reason = ""
        self.slot = board.base(self.index)
        self.ints = board.ints
        self.tally = sb.tally(self.ints, self.slot)  # begin()/end() of each request's counting
        self.pid = 0
        self.peer_log = PeerLog(lambda text: log.warning("worker %d: %s", wid, text))
        self.heads: dict[tuple[object, ...], bytes] = {}
        self.lines = RequestWriter(self.reqlog, wid, self.ints, self.slot, self.head)
        self._log_request = self.lines.write  # bound once: a request line costs one call (reqlog.py)
        self.log_gen = board.get(self.index, sb.LOG_GEN)  # the master bumps it when it reopened the log
        self.park: socket.socket | None = None  # HTTP keep-alive hand-over to the master (http_conn)

    def _follow_log(self) -> None:
        """The master reopened the log (logrotate): write to the new file too (before this request)."""
        self.log_gen = self.ints[self.slot + sb.LOG_GEN]
        try:
            logs.follow(os.getppid())
        except OSError as exc:  # e.g. tyrant mode: the emperor's log is not ours to open
            self.recycle_reason = f"the log was reopened and this worker cannot open it ({exc.strerror})"

    # ---- process setup -------------------------------------------------------------------
    def run(self) -> None:
        """Entry point in the forked child; never returns."""
        code = 0
        try:
            self.pid = self.lines.pid = os.getpid()
            if self.app is None:
                try:
                    self.app = self.load_app()
                except AppLoadError as exc:
                    log.error("worker %d: %s", self.wid, exc)
                    os._exit(22)
                gc.collect()  # lazy-apps: the same freeze the master does before forking
                gc.freeze()
            if not self.alive:  # told to leave before serving (during a lazy-apps import)
                return
            if self.cfg.req_logger or self.cfg.logger:
                try:
                    self.lines.fd, self.lines.sink = request_sink(self.cfg, "emperor")
                except OSError as exc:
                    log.error("worker %d: req-logger: %s; request lines go to the log", self.wid, exc)
            self.ints[self.slot + sb.ACCEPTING] = 1
            self.serve()
            if self.recycle_reason:
                log.info("worker %d (pid %d) recycled: %s", self.wid, self.pid, self.recycle_reason)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            self.ints[self.slot + sb.ACCEPTING] = 0
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def install_signals(self) -> None:
        """The worker's own handlers. The master forks with its signals blocked and calls this
        first thing in the child, before unblocking them: no signal ever reaches the master's
        handlers (nor its wakeup socket) from a worker, and none sent to a new worker is lost."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._graceful)
        for sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, lambda s, f: os._exit(0))
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        for sig in (signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):  # the master's: never stop a worker
            signal.signal(sig, signal.SIG_IGN)

    def _graceful(self, signum: int, frame: object) -> None:
        self.alive = False
        for lst in self.listeners:
            lst.sock.close()  # a blocked accept() retries on a closed fd and fails: we leave the loop
        if self.wakeup is not None:
            try:
                self.wakeup.send(b"\0")
            except OSError:
                pass  # full: a wake-up is pending anyway

    # ---- accept loops --------------------------------------------------------------------
    def serve(self) -> None:
        """The accept loop, until told to leave or recycled: uwsgi sockets only here;
        ``http_loop.HTTPWorker`` overrides it for vassals with an HTTP socket."""
        if self.cfg.threads > 1:
            self._serve_threaded()
        else:
            self._serve()

    def _next_conn(self) -> Conn | None:
        if self._single is not None:
            try:
                return self._single()
            except BlockingIOError:  # SO_RCVTIMEO tick on an idle listener
                return None
        for fd, _ev in self._poller.poll(self.poll_ms):
            accept = self._by_fd.get(fd)
            if accept is None:
                continue
            try:
                return accept()
            except BlockingIOError:  # another worker took it
                continue
        return None

    def _prepare_accept(self) -> None:
        """One listener: a blocking accept(). Several: poll() them, then a non-blocking accept()."""
        self._single = accepter(self.listeners[0].sock) if len(self.listeners) == 1 else None
        self._poller = select.poll()
        self.poll_ms = max(100, int(self.timeout * 1000))  # an idle tick, as the single listener's timeout
        self._by_fd: dict[int, Callable[[], Conn]] = {}
        if self._single is None:
            for lst in self.listeners:
                self._poller.register(lst.sock.fileno(), select.POLLIN)
                self._by_fd[lst.sock.fileno()] = accepter(lst.sock)

    def _accept(self) -> Conn | None:
        try:
            return self._next_conn()
        except OSError as exc:
            if not self.alive:
                return None
            if exc.errno in (24, 23):  # EMFILE/ENFILE: back off instead of spinning
                log.error("worker %d: accept: %s", self.wid, exc.strerror)
                time.sleep(0.1)
                return None
            raise

    def _serve(self) -> None:
        self._prepare_accept()
        handle = self.handle
        accept = self._accept
        while self.alive:
            conn = accept()
            if conn is None:  # idle (the listener's timeout tick): time for pending summaries
                self.peer_log.tick()
                continue
            handle(conn)
            if self.recycle_reason:
                return

    def _serve_threaded(self) -> None:
        from concurrent.futures import ThreadPoolExecutor  # only threaded workers import it
        from threading import BoundedSemaphore

        self._prepare_accept()
        free = BoundedSemaphore(self.cfg.threads)

        def task(conn: Conn) -> None:
            try:
                self.handle(conn)
            finally:
                free.release()

        with ThreadPoolExecutor(self.cfg.threads, thread_name_prefix=f"worker{self.wid}") as pool:
            while self.alive and not self.recycle_reason:
                free.acquire()  # accept only when a thread is free: the rest stays in the kernel queue
                conn = self._accept()
                if conn is None:
                    free.release()
                    self.peer_log.tick()
                    continue
                pool.submit(task, conn)

    # ---- one request ---------------------------------------------------------------------
    def handle(self, conn: Conn) -> None:
        """Serve one connection. Never raises: a bad request closes this connection alone.

        The usual request (no body, nothing unusual in its vars) is read whole in C
        (``_speedups.uwsgi_request``): its environ comes back complete; anything else takes
        the Python path below, which decides every error."""
        ints, slot = self.ints, self.slot
        if ints[slot + sb.LOG_GEN] != self.log_gen:
            self._follow_log()
        tally = self.tally
        start = tally.begin()
        ex: Exchange | None = None
        env: dict[str, Any] | None = None
        unread = extra = 0
        inp: Input | EmptyInput | FileInput | None = None
        try:
            ex = Exchange(self, conn, "")
            try:
                buf = conn.recv(self.recv_size, DONTWAIT)
            except BlockingIOError:
                ex.set_timeouts()
                buf = self._recv_more(ex, b"", 4)
            if _uwsgi_request is not None and (got := _uwsgi_request(buf, uwsgi.MAX_VARS, self.buffer_size,
                                                                     self.base_env, EMPTY_INPUT)) is not None:
                env, ex.method = got
            else:
                env, inp, extra = self._read_request(ex, conn, buf, start)
            if self.harakiri:
                self.board.set_text(self.index, f"{ex.method} {env.get('REQUEST_URI', env['PATH_INFO'])}")
            self._run_app(ex, env)
            if inp is not None:
                unread = -1 if extra > 0 else inp.pending  # -1: bytes after the body, wait for none
        except ClientGone as exc:
            self._note(exc, env, conn)
        except uwsgi.ProtocolError as exc:
            self._reject(ex, exc, env)
        except Exception:
            log.exception("worker %d: unexpected error", self.wid)
        finally:
            done = tally.end(start, ex.sent if ex is not None else 0)
            if unread:
                drain(conn, unread, self._drain_deadline(ex))
            conn.close()
            if self.log_requests and env is not None and ex is not None:
                self._log_request(env, ex, start)
            if self.max_requests and done >= self.max_requests:
                self.recycle_reason = f"max-requests ({done} requests)"
            elif self.rss_limit and (rss := _rss()) > self.rss_limit:
                self.recycle_reason = f"reload-on-rss ({rss >> 20} MB > {self.rss_limit >> 20} MB)"
            elif self.as_limit and (vms := _vms()) > self.as_limit:
                self.recycle_reason = f"reload-on-as ({vms >> 20} MB > {self.as_limit >> 20} MB)"
            if start / 1e9 >= self.peer_log.next_flush:
                self.peer_log.tick()

    def _read_request(self, ex: Exchange, conn: Conn, buf: bytes,
                      start: int) -> tuple[dict[str, Any], Input | EmptyInput | FileInput, int]:
        """The Python path of ``handle``: the rest of the header and vars, every check and error,
        the body. Returns the environ, its ``wsgi.input`` and how many bytes came after the body."""
        if len(buf) < 4:
            buf = self._recv_more(ex, buf, 4)
        size = check_header(buf, self.buffer_size)
        end = 4 + size
        if len(buf) < end:
            buf = self._recv_more(ex, buf, end)
        env = parse_vars(buf, 4, end)
        if "emperor.dropped_vars" in env:
            self._dropped(env, conn)
        try:
            length = content_length(env, self.limit_post)
            ex.method = request_method(env, length)
        except uwsgi.ProtocolError as exc:
            if exc.body_pending:  # minus the bytes of it already here
                exc.body_pending = max(0, exc.body_pending - (len(buf) - end))
            raise
        environ_from_uwsgi(env, buf[0], self.base_env, conn, self._believed)
        if length:
            body = buf[end : end + length]
            inp: Input | EmptyInput | FileInput = Input(body, length - len(body), ex.recv_into)
            extra = len(buf) - end - length
        else:
            inp = EMPTY_INPUT
            extra = len(buf) - end
        env["wsgi.input"] = inp
        if length > len(buf) - end and self.body_timeout:  # part of the body is still to come
            ex.deadline = start / 1e9 + self.body_timeout
        if self.post_buffering and length:  # read it all before the app runs (vassal/postbuf.py)
            inp = buffer_body(inp, length, self.post_buffering, self.post_bufsize)
            env["wsgi.input"] = inp  # type: ignore[assignment]  # (the vars dict holds str)
        return env, inp, extra

    def _drain_deadline(self, ex: Exchange | None) -> float:
        """A drain lasts at most socket-timeout (2 s at most) in all, and never past the body's
        own deadline: a peer trickling the rest of a body nobody reads holds nothing for long."""
        deadline = time.monotonic() + min(self.timeout, DRAIN_TIME)
        if ex is not None and ex.deadline:
            deadline = min(deadline, ex.deadline)
        return deadline

    def _believed(self, conn: Conn, claim: str) -> bool:
        """The vars claim https (``claim``): believed from a Unix-socket peer (the socket's mode
        decides who connects), from a TCP peer only in forwarded-allow-ips (else logged).
        The trust callable of ``environ_from_uwsgi``: called only when there is a claim."""
        if conn.family == AF_UNIX:
            return True
        try:
            peer = conn.getpeername()
        except OSError:
            return False
        if self.proxies.allows(peer):
            return True
        if self._first(peer[0], "scheme"):
            log.warning("worker %d: ignored %s from %s, which is not in forwarded-allow-ips: "
                        "wsgi.url_scheme is http", self.wid, claim, peer[0])
        return False

    def head(self, status: str, headers: list[tuple[str, str]]) -> bytes:
        """The checked, encoded response head; apps repeat the same few heads, so they are cached."""
        try:
            key = (status, *headers)
            return self.heads[key]
        except KeyError:
            head = serialize_head(status, headers)
            if len(self.heads) >= HEAD_CACHE_SIZE:
                self.heads.clear()
            self.heads[key] = head
            return head
        except TypeError:  # unhashable headers (lists): check them every time
            return serialize_head(status, headers)

    def _recv_more(self, ex: Exchange, buf: bytes, need: int) -> bytes:
        """Receive until ``need`` bytes; the whole header + vars must come within socket-timeout."""
        parts = [buf]
        have = len(buf)
        deadline = time.monotonic() + self.timeout
        while have < need:
            if time.monotonic() > deadline:
                raise ClientGone(f"sent only {have} of {need} bytes in {self.timeout:g} s (socket-timeout)")
            chunk = bytearray(max(need - have, 4096))
            n = ex.recv_into(memoryview(chunk))
            if n == 0:
                if have == 0:
                    raise ClientGone("connected and closed without sending a request")
                raise uwsgi.ProtocolError(f"peer closed after {have} of {need} bytes", status=0)
            parts.append(bytes(chunk[:n]))
            have += n
        return b"".join(parts)

    def _run_app(self, ex: Exchange, env: dict[str, Any]) -> None:
        app = self.app
        assert app is not None
        try:
            result = app(env, ex.start_response)
        except (ClientGone, ConnectionError) as exc:
            raise ClientGone(str(exc)) from None
        except Exception:
            self._app_failed(ex, env)
            return
        try:
            if type(result) is list and len(result) == 1 and not ex.head_sent and ex.status is not None:
                head = self.head(ex.status, ex.headers)
                ex.head_sent = True
                if body_allowed(ex.method, ex.status):
                    ex.send_with_head(head, result[0])
                else:
                    ex.send(head)
            elif isinstance(result, FileWrapper) and hasattr(result.filelike, "fileno"):
                self._send_file(ex, result)
            else:
                write = ex.write
                for chunk in result:
                    if chunk:
                        write(chunk)
                if not ex.head_sent:
                    write(b"")
        except (ClientGone, HeaderError) as exc:
            if isinstance(exc, ClientGone):
                raise
            log.error("worker %d: %s %s: bad response head: %s", self.wid, ex.method,
                      env.get("PATH_INFO"), exc)
            self.ints[self.slot + sb.EXCEPTIONS] += 1
            if not ex.head_sent:
                ex.head_sent = True
                ex.status = "500 Internal Server Error"
                self._send_error(ex, 500)
        except Exception:
            self._app_failed(ex, env)
        finally:
            if (close := getattr(result, "close", None)) is not None:
                close_result(close, self.wid)

    def _send_file(self, ex: Exchange, wrapper: FileWrapper) -> None:
        """wsgi.file_wrapper: head, then sendfile() from the file's current offset."""
        ex.write(b"")
        if ex.method == "HEAD":
            return
        f = wrapper.filelike
        try:
            fd = f.fileno()
            offset = f.tell() if hasattr(f, "tell") else 0
            size = os.fstat(fd).st_size - offset
        except (OSError, ValueError, AttributeError):
            for chunk in wrapper:
                ex.write(chunk)
            return
        if not ex.timeouts_set:
            ex.set_timeouts()
        out = ex.conn.fileno()
        while size > 0:
            try:
                n = os.sendfile(out, fd, offset, min(size, 1 << 30))
            except OSError as exc:
                raise ClientGone(exc.strerror or str(exc)) from None
            if n == 0:
                break
            offset += n
            size -= n
            ex.sent += n

    def _app_failed(self, ex: Exchange, env: dict[str, Any]) -> None:
        self.ints[self.slot + sb.EXCEPTIONS] += 1
        log.error("worker %d: %s %s raised:\n%s", self.wid, ex.method, env.get("PATH_INFO"),
                  traceback.format_exc().rstrip())
        if not ex.head_sent:
            ex.status = "500 Internal Server Error"
            self._send_error(ex, 500)

    def _send_error(self, ex: Exchange, status: int, body: bytes | None = None) -> None:
        body = body or _ERROR_BODY.get(status, b"Error\n")
        head = (f"HTTP/1.1 {status} {_REASON.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        ex.head_sent = True
        ex.status = f"{status} {_REASON.get(status, 'Error')}"
        try:
            ex.send(head if ex.method == "HEAD" else head + body)
        except ClientGone:
            pass

    def _reject(self, ex: Exchange | None, exc: uwsgi.ProtocolError, env: dict[str, Any] | None) -> None:
        peer = peer_key(ex.conn if ex else None, env, self.proxies)
        if self._first(peer, exc.kind):
            log.warning("worker %d: bad request from %s: %s", self.wid, peer, exc)
        if ex is not None and exc.status:
            self._send_error(ex, exc.status, exc.body)
            if exc.body_pending:
                drain(ex.conn, exc.body_pending, self._drain_deadline(ex))

    def _dropped(self, env: dict[str, Any], conn: Conn) -> None:
        """UWSGI_* vars from the wire are never acted on; count them and say so (rate-limited)."""
        names = env["emperor.dropped_vars"]
        self.ints[self.slot + sb.DROPPED_VARS] += names.count(",") + 1
        peer = peer_key(conn, env, self.proxies)
        if self._first(peer, "UWSGI_"):
            log.warning("worker %d: ignored %s from %s: a peer cannot configure the vassal", self.wid,
                        names, peer)

    def _first(self, peer: str, kind: str) -> bool:
        """True when this kind of trouble from this peer address is to be logged now; repeats
        are counted and summarised once a period (emperor/vassal/peerlog.py)."""
        return self.peer_log.first(peer, kind)

    def _note(self, exc: ClientGone, env: dict[str, Any] | None, conn: Conn) -> None:
        """A peer that went away is its own business: debug, except slow peers (rate-limited)."""
        if exc.slow and self._first(peer_key(conn, env, self.proxies), "slow"):
            log.info("worker %d: %s", self.wid, exc)
        else:
            log.debug("worker %d: %s %s", self.wid, (env or {}).get("PATH_INFO", ""), exc)

def _rss() -> int:
    """Resident memory of this worker (/proc, no psutil), only consulted when reload-on-rss is set."""
    from emperor.vassal.stats import proc_memory

    return proc_memory()[0]


def _vms() -> int:
    """Address space of this worker (/proc), only consulted when reload-on-as is set."""
    from emperor.vassal.stats import proc_memory

    return proc_memory()[1]
