"""What every connection of a sync worker shares, whatever its protocol: the socket type,
the fast accept, the send/receive state of one exchange, a peer that went away, the drain.

Both the uwsgi path (``emperor.vassal.worker``) and the HTTP path (``emperor.vassal.http_conn``)
build on these; keeping them here, and not in the worker, is what lets the HTTP modules use
them without importing the worker (and the worker never imports the HTTP modules).
"""

from __future__ import annotations

import _socket
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Protocol

from emperor.protocol.wsgi import Response, body_allowed

log = logging.getLogger("emperor.worker")

DONTWAIT = socket.MSG_DONTWAIT
DRAIN_LIMIT = 64 << 20  # beyond this a refused upload is cut off (nginx may then show 502)
SMALL_BODY = 8192  # up to this, head + body are joined; above, sendmsg gathers them without a copy
# A write larger than this on a Unix-socket connection first raises its send buffer (fit_sndbuf).
SNDBUF_FIT = 160 << 10
SNDBUF_MAX = 4 << 20  # the most asked for (the kernel also caps it at net.core.wmem_max, doubled)
Conn = _socket.socket  # accepted connections: the C type, without socket.py's Python-level wrapper


class Owner(Protocol):
    """What an exchange reads of the worker that serves it (``emperor.vassal.worker.Worker``)."""

    @property
    def wid(self) -> int: ...
    @property
    def timeout(self) -> float: ...  # socket-timeout
    @property
    def body_timeout(self) -> float: ...  # body-read-timeout
    @property
    def timeval(self) -> bytes: ...  # socket-timeout as a struct timeval, for SO_RCVTIMEO/SO_SNDTIMEO

    def head(self, status: str, headers: list[tuple[str, str]]) -> bytes: ...


class ClientGone(Exception):
    """The peer closed or timed out: nothing more can be sent. Not a worker failure."""

    @property
    def slow(self) -> bool:
        return "-timeout)" in str(self)  # socket-timeout or body-read-timeout


class Exchange(Response):
    """One request's connection state; its bound methods are the WSGI callables."""

    __slots__ = ("conn", "deadline", "method", "sent", "timeouts_set", "worker")

    def __init__(self, worker: Owner, conn: Conn, method: str) -> None:
        self.status = None
        self.headers = []
        self.head_sent = False
        self.conn = conn
        self.method = method
        self.sent = 0
        self.timeouts_set = False
        self.worker = worker
        self.deadline = 0.0  # body-read-timeout: the monotonic time the body must have arrived by

    def write(self, data: bytes) -> None:  # type: ignore[override]
        """The WSGI ``write()`` callable, also used for every streamed chunk."""
        if not self.head_sent:
            if self.status is None:
                raise AssertionError("write() before start_response()")
            head = self.worker.head(self.status, self.headers)
            self.head_sent = True
            if not body_allowed(self.method, self.status):
                self.send(head)
                self.method = "HEAD"  # drop every later body chunk
                return
            self.send_with_head(head, data)
        elif data and self.method != "HEAD":
            self.send(data)

    def send_with_head(self, head: bytes, body: bytes) -> None:
        """Head and body in one syscall: joined when small, gathered by sendmsg when large
        (joining a 64 KiB or 1 MiB body would copy all of it once more)."""
        if len(body) <= SMALL_BODY:
            self.send(head + body if body else head)
            return
        if len(body) > SNDBUF_FIT:
            fit_sndbuf(self.conn, len(head) + len(body))
        try:
            n = self.conn.sendmsg((head, body), (), 0 if self.timeouts_set else DONTWAIT)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None
        self.sent += n
        if n < len(head):
            self.send(memoryview(head)[n:])
            self.send(body)
        elif n < len(head) + len(body):
            self.send(memoryview(body)[n - len(head):])

    def send(self, data: bytes | memoryview) -> None:
        conn = self.conn
        if len(data) > SNDBUF_FIT:
            fit_sndbuf(conn, len(data))
        try:
            if not self.timeouts_set:
                n = conn.send(data, DONTWAIT)
                self.sent += n
                if n == len(data):
                    return
                data = memoryview(data)[n:]
                self.set_timeouts()
            conn.sendall(data)
            self.sent += len(data)
        except BlockingIOError:
            if self.timeouts_set:
                raise ClientGone("send timed out") from None
            self.set_timeouts()
            self.send(data)
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None

    def set_timeouts(self) -> None:
        self.timeouts_set = True
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, self.worker.timeval)
        self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, self.worker.timeval)

    def recv_into(self, view: memoryview) -> int:
        try:
            if not self.timeouts_set:
                try:
                    return self.conn.recv_into(view, 0, DONTWAIT)
                except BlockingIOError:
                    self.set_timeouts()
            if self.deadline:
                self._bound_wait()
            return self.conn.recv_into(view)
        except BlockingIOError:
            if self.deadline and time.monotonic() >= self.deadline:
                self._late()
            raise ClientGone(f"no data for {self.worker.timeout:g} s (socket-timeout)") from None
        except OSError as exc:
            raise ClientGone(exc.strerror or str(exc)) from None

    def _bound_wait(self) -> None:
        """Keep one blocking read from running past the body's deadline (SO_RCVTIMEO = what is
        left, once that is less than socket-timeout); past it, give up on the peer."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            self._late()
        if left < self.worker.timeout:
            tv = struct.pack("ll", int(left), max(1, int((left % 1) * 1_000_000)))
            self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)

    def _late(self) -> None:
        raise body_too_slow(self.worker.body_timeout)


def accepter(listener: socket.socket) -> Callable[[], Conn]:
    """A fast accept() for ``listener``: ``_accept`` returns the fd and the C type wraps it.

    socket.socket.accept() builds a Python-level socket object and converts family and type
    to enums on every call; on the hot path that costs more than the syscall itself.
    """
    raw_accept = listener._accept  # type: ignore[attr-defined]
    family, kind, proto = int(listener.family), int(listener.type), listener.proto

    def accept() -> Conn:
        return Conn(family, kind, proto, raw_accept()[0])

    return accept


def body_too_slow(limit: float) -> ClientGone:
    """A body not complete within body-read-timeout (``limit`` s): both sync paths' error."""
    return ClientGone(f"request body not complete after {limit:g} s (body-read-timeout)")


def fit_sndbuf(conn: Conn, size: int) -> None:
    """Let the kernel take a large answer (``size`` bytes, at most SNDBUF_MAX) at once on a
    Unix-socket connection: raise its send buffer (SO_SNDBUF) from the default, about 208 KiB.

    With the default, a 1 MiB answer goes out in five rounds: the worker fills the buffer,
    sleeps until the peer (nginx) has read it, and is woken to write the next part; the worker
    stays busy until the peer has read most of it, and both sides pay the wake-ups. Held in the
    kernel, the answer costs one copy, and the worker is free for the next request at once.
    Memory is only what is queued: the same bytes the worker held. TCP connections are left
    to the kernel's own send-buffer tuning, which a fixed SO_SNDBUF would turn off. The
    kernel caps the value at net.core.wmem_max (and doubles it for its bookkeeping)."""
    try:
        if conn.family == socket.AF_UNIX:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(size, SNDBUF_MAX))
    except (OSError, AttributeError):  # (a socket gone meanwhile: the send says so)
        pass


def drain(conn: Conn, unread: int, deadline: float) -> None:
    """Read and discard body bytes still on their way, until ``deadline`` (monotonic), so
    close() sends FIN, not RST.

    A peer that is still writing the body when we close gets a reset, and nginx then turns a
    perfectly good answer (a 413, or a 200 the app sent without reading the body) into a 502.
    ``unread`` < 0 means "whatever is already there": discard it without waiting.
    """
    try:
        if unread < 0:
            while conn.recv(65536, DONTWAIT):
                pass
            return
        left = min(unread, DRAIN_LIMIT)
        while left > 0:
            wait = deadline - time.monotonic()
            if wait <= 0:
                break
            conn.settimeout(wait)
            chunk = conn.recv(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
    except OSError:
        pass


def close_result(close: Callable[[], object], wid: int) -> None:
    """PEP 3333: the server calls the app iterable's ``close()``; its failure is the app's, logged,
    never the connection's (the uwsgi and the HTTP path share this)."""
    try:
        close()
    except Exception:
        log.exception("worker %d: error in the response's close()", wid)
