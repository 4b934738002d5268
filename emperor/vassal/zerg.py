"""Zergs: lend a vassal's listening sockets to helper instances, by SCM_RIGHTS.

Server side (in the vassal master, ``zerg-server = PATH``): a Unix listener in the
master's selector. On each accept it sends exactly one message, uWSGI's: the 10 bytes
``uwsgi-zerg``, a native ``int`` with the number of fds, and one ``SCM_RIGHTS`` cmsg with
every listening fd in config order; then it closes the connection. Differences from
uWSGI, for safety: the socket is chmod 0600 before listen(), and a peer whose uid
(``SO_PEERCRED``) is neither ours nor root gets nothing, since these fds let it serve
(and answer) our clients.

Zerg side (``zerg = PATH``, repeatable): connect, receive the fds, and wrap them as
``Listener``s without a path or inode, so that ``sockets.vacuum`` never removes a socket
file the zerg did not create. Nothing about the sockets is changed (no listen(), no
setsockopt): they are the parent's, shared with it.

The idle watch (``idle`` + ``die-on-idle``) is here too: it is what ends a zerg.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

from emperor import addresses
from emperor.vassal import sockets
from emperor.vassal.sockets import Listener

log = logging.getLogger("emperor.zerg")

MAGIC = b"uwsgi-zerg"
_COUNT = struct.Struct("=i")
MAX_FDS = 256
CONNECT_TIMEOUT = 5.0  # retries cover a parent re-binding it during a reload; a dead parent fails fast


class ZergError(Exception):
    """Attaching failed; the message names the server and the reason."""


# ---------------------------------------------------------------- server side (the parent)


class ZergServer:
    """The parent's end: hands every listening fd to whoever connects (same uid only)."""

    def __init__(self, path: str, listeners: list[Listener], backlog: int = 64,
                 inherited: Listener | None = None, owner: tuple[int, int] | None = None) -> None:
        self.listeners = listeners
        # a reload keeps the socket (after a privilege drop it could not be bound again); the owner
        # (the vassal's user, before listen()) is whom a root zerg drops to (privileges.py)
        self.listener = inherited or sockets.bind(path, backlog, 0o600, 1.0, False, owner)
        self.listener.sock.setblocking(False)
        log.info("zerg server enabled on %s (%d socket(s) to lend)", path, len(listeners))

    @property
    def sock(self) -> socket.socket:
        return self.listener.sock

    def fds(self) -> list[int]:
        return [lst.sock.fileno() for lst in self.listeners]

    def on_accept(self) -> None:
        """Selector callback: serve every pending zerg at once."""
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("zerg server: accept: %s", exc.strerror)
                return
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(1.0)
        try:
            cred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", cred)
        except OSError:
            return
        if uid not in (os.getuid(), 0):
            log.warning("zerg server: refusing pid %d (uid %d): only uid %d may attach",
                        pid, uid, os.getuid())
            return
        fds = self.fds()
        try:
            socket.send_fds(conn, [MAGIC + _COUNT.pack(len(fds))], fds)
        except OSError as exc:
            log.warning("zerg server: cannot hand the sockets to pid %d: %s", pid, exc.strerror)
            return
        log.info("zerg server: handed %d socket(s) to pid %d", len(fds), pid)

    def close(self) -> None:
        """Close and remove our socket file (only if it is still the inode we created)."""
        sockets.vacuum(self.listener)
        self.sock.close()


# ---------------------------------------------------------------- zerg side


def receive(path: str, timeout: float = CONNECT_TIMEOUT) -> list[socket.socket]:
    """Connect to one zerg server and return the sockets it hands out."""
    family, addr, _ = addresses.parse(path)
    if family != socket.AF_UNIX:
        raise ZergError(f"zerg {path}: a zerg server is a Unix socket path (or @abstract)")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:  # the parent may still be binding it (a reload): retry until the deadline
            try:
                client.settimeout(max(0.1, deadline - time.monotonic()))
                client.connect(addr)  # type: ignore[arg-type]
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() >= deadline:
                    raise ZergError(f"zerg {path}: cannot connect: {exc.strerror}") from None
                time.sleep(0.1)
            except OSError as exc:
                raise ZergError(f"zerg {path}: cannot connect: {exc.strerror or exc}") from None
        try:
            msg, fds, _flags, _addr = socket.recv_fds(client, 64, MAX_FDS)
        except OSError as exc:
            raise ZergError(f"zerg {path}: no answer: {exc.strerror or exc}") from None
    finally:
        client.close()
    socks = [socket.socket(fileno=fd) for fd in fds]  # owned from here: closed on any error below
    try:
        if not msg.startswith(MAGIC) or len(msg) < len(MAGIC) + _COUNT.size:
            raise ZergError(f"zerg {path}: not a zerg server (answer {msg[:16]!r})")
        (count,) = _COUNT.unpack_from(msg, len(MAGIC))
        if count != len(fds) or not fds:
            raise ZergError(f"zerg {path}: announced {count} socket(s), received {len(fds)}")
        for s in socks:
            if s.type != socket.SOCK_STREAM:
                raise ZergError(f"zerg {path}: received a socket that is not a stream socket")
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def describe(sock: socket.socket) -> tuple[str, str]:
    """(name, kind) of a received listening socket, as a Listener names it."""
    addr = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(addr, bytes):
            addr = addr.decode("utf-8", "replace")
        if addr.startswith("\0"):
            return "@" + addr[1:], "abstract"
        return str(addr), "unix"
    if sock.family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}", "tcp"
    return f"{addr[0]}:{addr[1]}", "tcp"


def attach(paths: list[str], timeout: float = CONNECT_TIMEOUT) -> list[Listener]:
    """Every socket of every zerg server, de-duplicated by address, as path-less Listeners."""
    out: list[Listener] = []
    seen: set[str] = set()
    try:
        for path in paths:
            for sock in receive(path, timeout):
                name, kind = describe(sock)
                if name in seen:
                    sock.close()
                    continue
                seen.add(name)
                sock.set_inheritable(False)
                out.append(Listener(name, sock, kind))  # no path/ident: never vacuumed by us
                log.info("zerg socket %s attached from %s (fd %d)", name, path, sock.fileno())
    except BaseException:
        for lst in out:
            lst.sock.close()
        raise
    return out


# ---------------------------------------------------------------- idle watch


class IdleWatch:
    """``idle`` seconds with no new request and no busy worker (checked once a second)."""

    def __init__(self, idle: float, now: float) -> None:
        self.idle = idle
        self.last_total = -1
        self.since = now  # the clock starts at the first check, as in uWSGI
        self.next_check = now

    def reset(self, now: float) -> None:
        """Count afresh (cheap mode ended: the workers and their counters are new)."""
        self.last_total = -1
        self.since = now
        self.next_check = now

    def check(self, total_requests: int, busy: bool, now: float) -> float | None:
        """Seconds idle once over the limit, else None. Looks at most once a second."""
        if now < self.next_check:
            return None
        self.next_check = now + 1.0
        if busy or total_requests != self.last_total:
            self.last_total = total_requests
            self.since = now
            return None
        quiet = now - self.since
        return quiet if quiet > self.idle else None
