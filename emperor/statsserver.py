"""A listener that answers every connection with one document, then closes it (uWSGI's stats server).

Both the vassal master (``stats``) and the emperor (``emperor-stats``) serve their JSON this
way; uwsgitop and uwsgi_exporter connect, read to EOF and parse. The owner is a
single-threaded supervision loop, so nothing here may block it:

- the listener and every client socket are non-blocking and live in a private epoll
  selector; the owner registers only ``fileno()`` (an epoll fd is readable when any of
  its sockets is ready) and calls :meth:`StatsServer.service` when it is;
- a document that does not fit in the socket buffer is written as the peer reads it,
  and a client that has not finished within ``timeout`` seconds is dropped by
  :meth:`StatsServer.expire`, which the owner calls from its periodic tick;
- at most ``max_clients`` connections are pending at once; extra ones are accepted and
  closed at once (a clear EOF for the client, an empty backlog for us), and one
  ``service`` call accepts at most ``ACCEPT_BURST`` connections, so a connect flood
  costs the owner a bounded slice of each loop iteration;
- the document is rendered at most once per ``RENDER_EVERY`` seconds and shared by every
  client of that burst, so a hundred readers cost one render, not a hundred.

With ``http`` (``stats-http``) the request line is read first (bounded in size and
time) and the reply carries an HTTP/1.0 head; the path ``/metrics`` is answered with the
owner's Prometheus text instead of the JSON (``render_metrics``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from emperor import addresses

log = logging.getLogger("emperor.stats")

ACCEPT_BURST = 64
MAX_REQUEST = 8192  # bytes of HTTP request head we read before answering anyway
RENDER_EVERY = 0.05


class StatsAddressError(addresses.AddressError):
    """The stats address cannot be used (bad syntax, in use, a file in the way)."""


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    out: memoryview | None = None  # what is left to send; None while the HTTP request is read
    request: bytes = b""


@dataclass
class StatsServer:
    """Serve ``render()`` (bytes) to every connection on ``address``; see the module docstring."""

    address: str
    render: Callable[[], bytes]
    http: bool = False
    render_metrics: Callable[[], tuple[str, bytes]] | None = None  # (content type, body)
    timeout: float = 5.0
    max_clients: int = 64
    clock: Callable[[], float] = time.monotonic
    clients: dict[int, _Client] = field(default_factory=dict)
    refused: int = 0  # connections closed unanswered because max_clients were pending
    # (socket, path, inode) kept from before a re-exec: a reload after a privilege drop never re-binds
    inherited: tuple[socket.socket, str | None, tuple[int, int] | None] | None = None

    def __post_init__(self) -> None:
        self.sock, self.path, self.ident = self.inherited or _bind(self.address)
        self.inherited = None
        self.sock.setblocking(False)
        self.sel = selectors.EpollSelector()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        self._cache: tuple[float, bytes] | None = None

    def fileno(self) -> int:
        """The fd to watch for reading in the owner's loop (the private epoll's)."""
        return self.sel.fileno()

    def describe(self) -> str:
        return f"{self.address}{' (http)' if self.http else ''}"

    # ---- the owner's loop calls these ---------------------------------------------------
    def service(self) -> None:
        """Handle whatever is ready now; never blocks."""
        for key, events in self.sel.select(0):
            if key.data is None:
                self._accept()
            else:
                self._on_client(key.data, events)

    def expire(self) -> None:
        """Drop clients past their deadline (a reader that never reads, a slow drip)."""
        now = self.clock()
        for c in [c for c in self.clients.values() if now >= c.deadline]:
            self._drop(c)

    def close(self) -> None:
        """Close every socket; remove our Unix socket file if it is still ours."""
        for c in list(self.clients.values()):
            self._drop(c)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sock)
        self.sel.close()
        self.sock.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self.ident:
                    os.unlink(self.path)

    def close_in_child(self) -> None:
        """After fork(): drop this process's copies of the fds without touching the socket file."""
        for c in self.clients.values():
            c.sock.close()
        self.clients.clear()
        self.sel.close()
        self.sock.close()

    # ---- internals -----------------------------------------------------------------------
    def _document(self) -> bytes:
        now = self.clock()
        if self._cache is not None and now - self._cache[0] < RENDER_EVERY:
            return self._cache[1]
        try:
            doc = self.render()
        except Exception:  # a bug in a renderer must not take the loop down
            log.exception("stats: cannot render the document")
            doc = b'{"error": "stats rendering failed; see the log"}\n'
        self._cache = (now, doc)
        return doc

    def _accept(self) -> None:
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("stats: accept: %s", exc.strerror)
                    return
                continue  # ECONNABORTED and the like: that client is gone
            conn.setblocking(False)
            if len(self.clients) >= self.max_clients:
                self.refused += 1
                if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
                    log.warning("stats %s: %d connection(s) refused so far: %d readers are pending "
                                "(a stuck or slow stats client?)", self.address, self.refused,
                                len(self.clients))
                conn.close()
                continue
            c = _Client(conn, self.clock() + self.timeout)
            self.clients[conn.fileno()] = c
            if self.http:
                self.sel.register(conn, selectors.EVENT_READ, c)
            else:
                c.out = memoryview(self._document())
                self._write(c, registered=False)

    def _on_client(self, c: _Client, events: int) -> None:
        if c.out is None:
            self._read_request(c)
        else:
            self._write(c, registered=True)

    def _read_request(self, c: _Client) -> None:
        try:
            data = c.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        c.request += data
        if data and b"\r\n\r\n" not in c.request and b"\n\n" not in c.request \
                and len(c.request) < MAX_REQUEST:
            return
        line = c.request.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
        path = line[1].decode("latin-1") if len(line) >= 2 else "/"
        if path.split("?", 1)[0] == "/metrics":
            if self.render_metrics is None:
                ctype, body, status = "text/plain", b"no metrics here\n", "404 Not Found"
            else:
                try:
                    ctype, body = self.render_metrics()
                    status = "200 OK"
                except Exception as exc:  # prometheus_client missing, or a renderer bug
                    log.error("stats: /metrics: %s", exc)
                    ctype, body, status = "text/plain", f"{exc}\n".encode(), "501 Not Implemented"
        else:
            ctype, body, status = "application/json", self._document(), "200 OK"
        head = (f"HTTP/1.0 {status}\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        c.out = memoryview(head + body)
        self.sel.modify(c.sock, selectors.EVENT_WRITE, c)
        self._write(c, registered=True)

    def _write(self, c: _Client, registered: bool) -> None:
        assert c.out is not None
        try:
            while c.out:
                n = c.sock.send(c.out)
                c.out = c.out[n:]
        except BlockingIOError:
            if not registered:
                self.sel.register(c.sock, selectors.EVENT_WRITE, c)
            return
        except OSError:
            pass  # the reader went away: nothing more to do for it
        self._drop(c)

    def _drop(self, c: _Client) -> None:
        self.clients.pop(c.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(c.sock)
        c.sock.close()


def _bind(address: str) -> tuple[socket.socket, str | None, tuple[int, int] | None]:
    """Listen on ``host:port``, ``:port``, ``[v6]:port``, ``@abstract`` or a Unix path (mode 0600)."""
    family, sockaddr, kind = addresses.parse(address)
    path = address if kind == "unix" else None
    ident = None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if not addresses.is_loopback(str(sockaddr[0])):
                log.warning("stats %s listens on a non-loopback address: it shows pids, uids and the "
                            "working directory to anyone who can reach it", address)
        if path is not None:
            ident = addresses.bind_unix(path, lambda: sock.bind(sockaddr), private=True)  # 0600 at once
        else:
            sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StatsAddressError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock, path, ident
