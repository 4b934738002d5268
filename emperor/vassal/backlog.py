"""The accept-queue length of listening sockets: what ``ss -tl`` / ``ss -xl`` show as Recv-Q.

Broodlord needs it once a second. uWSGI reads it with ``TCP_INFO`` only, so on a stock
kernel a Unix socket always reports 0 and its broodlord only works on TCP. Here:

- TCP: ``getsockopt(TCP_INFO)``. On a listening socket Linux puts the current queue
  length in ``tcpi_unacked`` and the listen() backlog in ``tcpi_sacked``.
- Unix: one sock_diag netlink request (``NETLINK_SOCK_DIAG``, ``UNIX_DIAG_RQLEN``) for the
  socket's inode (``os.fstat`` of the listening fd). For a listening Unix socket the kernel
  reports the number of pending connections and the backlog, exactly what ``ss`` prints.

Both are unprivileged, cost one syscall (two for netlink) per socket, and never block.
Anything that cannot be read is reported as ``None``, never as 0: "unknown" must not look
like "empty" (``vassal-sos`` covers those sockets).
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from dataclasses import dataclass

from emperor import channel

log = logging.getLogger("emperor.backlog")

# <linux/tcp.h>: struct tcp_info starts with 8 u8 fields, then u32 rto, ato, snd_mss, rcv_mss,
# unacked, sacked, ...
_TCP_INFO_LEN = 104
_TCPI = struct.Struct("=8B6I")

# <linux/netlink.h>, <linux/sock_diag.h>, <linux/unix_diag.h>
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 0x2
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")
_NOCOOKIE = 0xFFFFFFFF
TCP_LISTEN = 10


@dataclass(frozen=True)
class Queue:
    """One listening socket's accept queue: connections waiting, and the listen() backlog."""

    length: int
    limit: int


def tcp_queue(sock: socket.socket) -> Queue | None:
    """``TCP_INFO`` of a listening TCP socket; None if the kernel does not report a backlog."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except OSError:
        return None
    if len(raw) < _TCPI.size:
        return None
    fields = _TCPI.unpack_from(raw)
    unacked, sacked = fields[12], fields[13]
    if sacked == 0:  # not a listener, or an old kernel: unknown, not empty
        return None
    return Queue(unacked, sacked)


class UnixDiag:
    """A netlink sock_diag socket, kept open by the master and asked once per Unix listener."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_SOCK_DIAG)
        self.sock.settimeout(0.2)  # the kernel answers synchronously; never stall the master loop
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def queue(self, inode: int) -> Queue | None:
        """The queue of the listening Unix socket with this inode, or None."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        req = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, inode, UDIAG_SHOW_RQLEN,
                                  _NOCOOKIE, _NOCOOKIE)
        msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, self.seq, 0)
        try:
            self.sock.send(msg + req)
            while True:
                data = self.sock.recv(8192)
                done, found = self._parse(data, inode)
                if done:
                    return found
        except OSError:
            return None

    def _parse(self, data: bytes, inode: int) -> tuple[bool, Queue | None]:
        """(True, the queue or None for an error answer), or (False, None): a stale answer, read again."""
        off = 0
        while off + _NLMSGHDR.size <= len(data):
            length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
            if length < _NLMSGHDR.size:
                return True, None
            body, end = off + _NLMSGHDR.size, off + length
            off = (end + 3) & ~3
            if seq != self.seq:
                continue
            if kind == NLMSG_ERROR:
                return True, None
            if kind != SOCK_DIAG_BY_FAMILY or end - body < _UNIX_DIAG_MSG.size:
                continue
            if _UNIX_DIAG_MSG.unpack_from(data, body)[4] != inode:
                continue
            attr = body + _UNIX_DIAG_MSG.size
            while attr + _RTATTR.size <= end:
                alen, atype = _RTATTR.unpack_from(data, attr)
                if alen < _RTATTR.size:
                    break
                if atype == UNIX_DIAG_RQLEN and alen >= _RTATTR.size + 8:
                    rq, wq = struct.unpack_from("=II", data, attr + _RTATTR.size)
                    return True, Queue(rq, wq)
                attr += (alen + 3) & ~3
            return True, None
        return False, None


class Probe:
    """Reads every listener's queue; ``backlog()`` is the largest (uWSGI's ``listen_queue``)."""

    def __init__(self, socks: list[tuple[str, socket.socket]]) -> None:
        self.socks = socks
        self.diag: UnixDiag | None = None
        self.inodes: dict[int, int] = {}
        if any(s.family == socket.AF_UNIX for _, s in socks):
            try:
                self.diag = UnixDiag()
            except OSError as exc:
                log.warning("sock_diag netlink is not available (%s): the backlog of Unix sockets "
                            "cannot be read; use vassal-sos instead", exc.strerror)

    def close(self) -> None:
        if self.diag is not None:
            self.diag.close()
            self.diag = None

    def read(self) -> dict[str, Queue | None]:
        """Each listener's queue by configured name; None where it cannot be read."""
        out: dict[str, Queue | None] = {}
        for name, sock in self.socks:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                out[name] = tcp_queue(sock)
            elif sock.family == socket.AF_UNIX and self.diag is not None:
                out[name] = self.diag.queue(self._inode(sock))
            else:
                out[name] = None
        return out

    def _inode(self, sock: socket.socket) -> int:
        fd = sock.fileno()
        ino = self.inodes.get(fd)
        if ino is None:
            ino = self.inodes[fd] = os.fstat(fd).st_ino
        return ino

    def backlog(self) -> tuple[int | None, Queue | None]:
        """(largest queue length or None if none can be read, the fullest queue)."""
        best: Queue | None = None
        for q in self.read().values():
            if q is not None and (best is None or q.length > best.length):
                best = q
        return (best.length if best else None), best


class SosWatch:
    """When to ask the emperor for a zerg; the master calls ``check`` from its tick.

    ``vassal-sos-backlog = B``: SOS with the figure while the backlog is at least B, at most
    once a second (uWSGI's rule; the emperor's policy does the rate limiting). The queue is
    probed four times a second on a fixed grid, so the first SOS leaves within 0.25 s of the
    crossing instead of up to a second later, and the once-a-second cadence cannot drift
    (the next SOS is due one second after the *scheduled* probe). ``vassal-sos = S``:
    when the backlog cannot be read (or no threshold is set), SOS once every worker has been
    busy for S seconds, then at most once per S seconds. The log line is rate-limited: an
    overload that lasts a minute says so every ``LOG_EVERY`` seconds, not 60 times.
    """

    LOG_EVERY = 5.0
    PROBE_EVERY = 0.25
    SOS_EVERY = 1.0

    def __init__(self, probe: Probe, threshold: int, busy_secs: float, now: float) -> None:
        self.probe, self.threshold, self.busy_secs = probe, threshold, busy_secs
        self.next_check = now
        self.next_sos = now
        self.busy_since: float | None = None
        self.last_busy_sos = 0.0
        self.next_log = 0.0
        self.next_full_log = 0.0
        self.backlog: int | None = None  # the last figure (for stats and the log)
        self.queue: Queue | None = None

    def check(self, now: float, all_busy: bool) -> str | None:
        """The SOS payload to send now, or None. Probes at most every PROBE_EVERY seconds."""
        if now < self.next_check:
            return None
        # a fixed schedule: a tick that comes late must not push the next ones later
        tick = self.next_check
        self.next_check += self.PROBE_EVERY
        if self.next_check <= now:  # far behind (a long stall): restart the grid from now
            tick, self.next_check = now, now + self.PROBE_EVERY
        self.backlog, self.queue = self.probe.backlog()
        q = self.queue
        if q is not None and q.limit and q.length >= q.limit and now >= self.next_full_log:
            self.next_full_log = now + self.LOG_EVERY
            log.warning("listen queue is full (%d/%d): new connections are refused or dropped",
                        q.length, q.limit)
        if self.threshold and self.backlog is not None:
            if self.backlog >= self.threshold and tick >= self.next_sos:
                self.next_sos = tick + self.SOS_EVERY
                self._say(now, f"backlog {self.backlog}")
                return channel.sos_payload(self.backlog, self.threshold)  # the emperor sizes by both
            return None
        if not self.busy_secs:
            return None
        if not all_busy:
            self.busy_since = None
            return None
        if self.busy_since is None:
            self.busy_since = now
        if now - self.busy_since >= self.busy_secs and now - self.last_busy_sos >= self.busy_secs:
            self.last_busy_sos = now
            self._say(now, f"every worker busy for {now - self.busy_since:.0f} s")
            return channel.sos_payload(None, None)  # "busy"
        return None

    def _say(self, now: float, why: str) -> None:
        if now >= self.next_log:
            self.next_log = now + self.LOG_EVERY
            log.warning("asking the emperor for reinforcements (%s)", why)
