"""Idle HTTP keep-alive connections that no worker holds: the master watches them (docs/http.md).

A worker that gets busy hands its idle connections to the master over a datagram socketpair
(SCM_RIGHTS, with the requests served so far and the listener index). The master polls them
in its selector; when a request arrives on one, it puts the connection back on the same
socketpair, where the first free worker takes it like an accept. So a request on a kept-alive
connection never waits behind a busy worker while another is free, and no idle connection
is closed under a proxy that may be reusing it.
"""

from __future__ import annotations

import array
import functools
import json
import logging
import mmap
import os
import resource
import selectors
import socket
import struct
import time
from typing import Any

log = logging.getLogger("emperor.http")

PARK_CAP = 4096  # connections the master holds for all workers; beyond, the oldest is closed
META = struct.Struct("=IH")  # requests served on the connection, listener index


def send_conn(chan: socket.socket, fd: int, served: int, index: int, flags: int = 0) -> None:
    """Send one connection's fd and its metadata as one datagram (OSError on failure)."""
    chan.sendmsg([META.pack(served, index)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], flags)


def recv_conn(chan: socket.socket, flags: int = 0) -> tuple[int, int, int] | None:
    """(fd, served, index) of the next datagram, or None for a malformed one (its fds closed).

    The fd is received close-on-exec: a re-exec (graceful reload) must not carry connections
    along, or they would stay open, unserved, with a proxy's request waiting on them.
    BlockingIOError when there is nothing to take.
    """
    msg, anc, _flags, _addr = chan.recvmsg(META.size, socket.CMSG_SPACE(4), flags | socket.MSG_CMSG_CLOEXEC)
    fds = fds_of(anc)
    if len(msg) != META.size or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        return None
    served, index = META.unpack(msg)
    return fds[0], served, index


def fds_of(anc: list[tuple[int, int, bytes]]) -> list[int]:
    out: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            out.extend(arr)
    return out


class Waiting:
    """Which workers wait for work: one byte per worker slot in an anonymous shared mmap made by
    the master before it forks, 1 while that worker blocks in poll() with nothing to serve.

    A busy sync worker hands its idle connections to the master only when some other worker
    waits (``http_loop``): while every worker is busy, parking would only send the connections
    round the master and back to a worker no sooner free, at the cost of two hand-overs each
    (under a loaded 2-core machine this was most of the Flask tail: parked requests queued
    100-1000 ms). A worker's own byte is 0 whenever it is busy, so "anyone waits" is one
    ``find`` over the whole map.
    """

    __slots__ = ("mem",)

    def __init__(self, slots: int) -> None:
        self.mem = mmap.mmap(-1, max(1, slots))

    def set(self, index: int, waits: bool) -> None:
        if 0 <= index < len(self.mem):
            self.mem[index] = 1 if waits else 0

    def anyone(self) -> bool:
        """True if some worker is waiting in poll() now (the caller's own byte is 0: it is busy)."""
        return self.mem.find(b"\x01") >= 0


class ParkingLot:
    """In the master: idle keep-alive connections that no worker holds, watched for a request.

    Workers send connections here when they get busy; when a request arrives on one it goes
    back on the same socketpair, where the first free worker takes it. Parked connections are
    closed after ``http-keepalive`` seconds (counted from when they were parked).
    """

    def __init__(self, keepalive: float, sel: selectors.BaseSelector, inherited: str | None = None,
                 slots: int = 64) -> None:
        self.keepalive = keepalive
        self.sel = sel
        self.waiting = Waiting(slots)  # per worker slot: waits for work (shared with the forks)
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # parked connections are fds of the master: stay well inside its limit
        self.cap = PARK_CAP if soft == resource.RLIM_INFINITY else max(16, min(PARK_CAP, soft // 2))
        self.parked: dict[int, tuple[socket.socket, bytes, float]] = {}
        self.ready: list[tuple[socket.socket, bytes]] = []  # readable, waiting for room to hand back
        state = _load(inherited)
        if state is not None:  # a graceful reload: the same socketpair, the same parked connections
            self.master_end = socket.socket(fileno=state["master"])
            self.worker_end = socket.socket(fileno=state["worker"])
            for end in (self.master_end, self.worker_end):
                end.set_inheritable(False)
        else:
            self.master_end, self.worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.master_end.setblocking(False)
        sel.register(self.master_end, selectors.EVENT_READ, self.on_park)
        for fd, served, index in (state or {}).get("parked", []):
            sock = socket.socket(fileno=fd)
            sock.set_inheritable(False)
            self._watch(sock, META.pack(served, index))

    def export(self) -> str:
        """For a graceful reload (re-exec): make the socketpair and every parked connection
        inheritable and describe them, so the next image keeps them. Old workers still running
        then park into the new master, and nginx never sees a pooled connection closed."""
        parked = []
        for sock, meta, _until in self.parked.values():
            sock.set_inheritable(True)
            parked.append([sock.fileno(), *META.unpack(meta)])
        for sock, meta in self.ready:
            sock.set_inheritable(True)
            parked.append([sock.fileno(), *META.unpack(meta)])
        for end in (self.master_end, self.worker_end):
            end.set_inheritable(True)
        return json.dumps({"master": self.master_end.fileno(), "worker": self.worker_end.fileno(),
                           "parked": parked})

    def _watch(self, sock: socket.socket, meta: bytes) -> None:
        if len(self.parked) >= self.cap:
            self._drop(min(self.parked, key=lambda fd: self.parked[fd][2]))
        fd = sock.fileno()
        self.parked[fd] = (sock, meta, time.monotonic() + self.keepalive)
        self.sel.register(sock, selectors.EVENT_READ, functools.partial(self._on_ready, fd))

    def close_in_worker(self) -> None:
        """In a forked worker: close the master's copies (else their FIN would never be sent)."""
        self.master_end.close()
        for sock, _meta, _until in self.parked.values():
            sock.close()
        for sock, _meta in self.ready:
            sock.close()
        self.parked.clear()
        self.ready.clear()

    def on_park(self) -> None:
        """Selector callback on ``master_end``: take every connection the workers sent."""
        while True:
            try:
                got = recv_conn(self.master_end)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("parking: %s", exc.strerror)
                return
            if got is None:
                continue
            self._watch(socket.socket(fileno=got[0]), META.pack(got[1], got[2]))

    def _on_ready(self, fd: int) -> None:
        entry = self.parked.pop(fd, None)
        if entry is None:
            return
        sock, meta, _until = entry
        self.sel.unregister(sock)
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                sock.close()  # the client left
                return
        except BlockingIOError:
            self.parked[fd] = entry  # spurious: keep watching
            self.sel.register(sock, selectors.EVENT_READ, functools.partial(self._on_ready, fd))
            return
        except OSError:
            sock.close()
            return
        self.ready.append((sock, meta))
        self.flush()

    def flush(self) -> None:
        """Hand readable connections to the workers, as long as the socketpair has room."""
        while self.ready:
            sock, meta = self.ready[0]
            try:
                served, index = META.unpack(meta)
                send_conn(self.master_end, sock.fileno(), served, index)
            except BlockingIOError:
                return  # every worker is busy and the queue is full: tick() tries again
            except OSError as exc:
                log.error("parking: cannot hand a connection to a worker: %s", exc.strerror)
            self.ready.pop(0)
            sock.close()

    def tick(self) -> None:
        """Once a second from the master: retry hand-backs, close connections idle too long."""
        self.flush()
        if self.parked:
            now = time.monotonic()
            for fd in [fd for fd, (_s, _m, until) in self.parked.items() if until <= now]:
                self._drop(fd)

    def _drop(self, fd: int) -> None:
        sock, _meta, _until = self.parked.pop(fd)
        self.sel.unregister(sock)
        sock.close()

    def close(self) -> None:
        for fd in list(self.parked):
            self._drop(fd)
        for sock, _meta in self.ready:
            sock.close()
        self.ready.clear()
        self.sel.unregister(self.master_end)
        self.master_end.close()
        self.worker_end.close()


ENV = "EMPEROR_PARKING"


def _load(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        state = json.loads(raw)
        int(state["master"]), int(state["worker"])
        return state  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError):
        log.error("ignoring malformed %s", ENV)
        return None


def discard(raw: str | None) -> None:
    """A reload into a config without HTTP sockets: close what the previous image handed over."""
    state = _load(raw)
    if state is None:
        return
    for fd in [state["master"], state["worker"], *(p[0] for p in state.get("parked", []))]:
        try:
            os.close(int(fd))
        except OSError:
            pass
