"""The emperor <-> vassal channel: one message enum, one framing, imported by both sides.

The channel is an inherited ``socketpair(AF_UNIX, SOCK_SEQPACKET)``; the vassal finds its
end in the environment variable ``EMPEROR_FD``. SEQPACKET keeps message boundaries, so a
message is one ``send``: one type byte followed by an optional ASCII payload (at most
``MAX_PAYLOAD`` bytes). EOF on either side means the peer is gone. Every payload with a
shape has its pair of functions below (``sos_payload``/``parse_sos``, ...): the sender and
the receiver use the same codec, and a malformed payload is read as "nothing usable",
never raised.

Exit statuses of a vassal are here too: the emperor reads them to tell "cannot boot"
(do not respawn until the file changes) from "crashed" (respawn with backoff).
"""

from __future__ import annotations

import enum
import os
import socket

ENV_FD = "EMPEROR_FD"
ENV_NAME = "EMPEROR_VASSAL_NAME"
MAX_PAYLOAD = 512


class Msg(enum.IntEnum):
    # vassal -> emperor
    READY = 1  # workers are accepting (sent after every (re)load)
    LOYAL = 17  # the vassal has served a request since its last (re)load
    HEARTBEAT = 26  # the master's loop is alive (uWSGI's byte 26); payload ``heartbeat_payload``: its period
    SOS = 30  # broodlord: send zergs. payload ``sos_payload``: "BACKLOG THRESHOLD", or "busy" (vassal-sos)
    IDLE = 22  # payload: seconds idle; a die-on-idle zerg asks to be stopped
    BYE = 9  # the vassal is exiting on purpose; payload: reason
    CONFIG_ERROR = 40  # a reload found the ini invalid; the old config keeps running. payload: the error
    SCALED = 41  # the answer to SCALE: payload ``scale_reply`` ("ok N" or "refused REASON")
    ENDPOINTS = 42  # sent before each READY: ``app=NAME weight=N HOST:PORT ...`` (its TCP sockets; fleet)
    WORKERS = 43  # the worker counts changed (cheaper, scale): payload "current min max spawns cheaps"
    # emperor -> vassal
    STOP = 100  # graceful stop
    RELOAD = 101  # graceful reload: re-read the config, re-import the app, keep the sockets
    KILL = 102  # fast stop
    SCALE = 103  # payload ``scale_request``: the new worker count (runtime only: a reload re-reads the ini)
    LOGREOPEN = 104  # reopen the log (logrotate); carries the emperor's log file as an SCM_RIGHTS fd


class Exit(enum.IntEnum):
    """Vassal exit statuses the emperor interprets."""

    OK = 0
    CRASH = 1
    APP_LOAD = 22  # need-app: the application could not be imported (uWSGI uses 22 too)
    CONFIG = 78  # EX_CONFIG: the ini is invalid; retrying before it changes is pointless
    SOCKET = 75  # EX_TEMPFAIL: a socket could not be bound (address in use, ...)


def encode(msg: Msg, payload: str = "") -> bytes:
    data = payload.encode("ascii", "replace")[:MAX_PAYLOAD]
    return bytes((int(msg),)) + data


def decode(packet: bytes) -> tuple[Msg, str] | None:
    """Return (message, payload), or None for an empty or unknown packet (logged by the caller)."""
    if not packet:
        return None
    try:
        msg = Msg(packet[0])
    except ValueError:
        return None
    return msg, packet[1 : 1 + MAX_PAYLOAD].decode("ascii", "replace")


def sos_payload(backlog: int | None, threshold: int | None) -> str:
    """The SOS payload: ``BACKLOG THRESHOLD`` (vassal-sos-backlog: the emperor sizes its answer by
    both), or ``busy`` when the trigger is every worker busy (vassal-sos, no backlog figure)."""
    if backlog is None:
        return "busy"
    return f"{backlog} {threshold}" if threshold is not None else str(backlog)


def parse_sos(payload: str) -> tuple[int | None, int | None]:
    """(backlog, threshold) from an SOS payload; None for each figure that is absent or not a number."""
    words = payload.split()
    backlog = int(words[0]) if words and words[0].isdigit() else None
    threshold = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    return backlog, threshold


def heartbeat_payload(period: float) -> str:
    """The HEARTBEAT payload: the vassal's heartbeat period in seconds (its ``heartbeat`` option)."""
    return f"{period:g}"


def parse_heartbeat(payload: str) -> float:
    """The period a HEARTBEAT announces; 0.0 (no hang check) when it is not a number."""
    try:
        return max(0.0, float(payload))
    except ValueError:
        return 0.0


def scale_request(count: int) -> str:
    """The SCALE payload: the new worker count, decimal."""
    return str(count)


def parse_scale_request(payload: str) -> int | None:
    """The worker count a SCALE asks for; None when the payload is not a decimal count."""
    return int(payload) if payload.isdigit() else None


def scale_reply(accepted: bool, detail: str) -> str:
    """The SCALED payload: ``ok N`` (N the new worker count) or ``refused REASON``."""
    return f"{'ok' if accepted else 'refused'} {detail}"


def parse_scale_reply(payload: str) -> tuple[bool, str]:
    """(accepted, detail) from a SCALED payload; anything malformed is a refusal saying so."""
    word, _, detail = payload.partition(" ")
    if word == "ok" and detail.isdigit():
        return True, detail
    if word == "refused" and detail:
        return False, detail
    return False, f"malformed answer from the vassal: {payload[:80]!r}"


def workers_payload(current: int, low: int, high: int, spawns: int, cheaps: int) -> str:
    """The WORKERS payload: running workers, the minimum, the ceiling, cheaper's spawns and cheaps."""
    return f"{current} {low} {high} {spawns} {cheaps}"


def parse_workers(payload: str) -> tuple[int, int, int, int, int] | None:
    """The five counts of a WORKERS payload, or None when it is malformed."""
    fields = payload.split()
    if len(fields) != 5 or not all(f.isdigit() for f in fields):
        return None
    cur, low, high, spawns, cheaps = (int(f) for f in fields)
    return cur, low, high, spawns, cheaps


def pair() -> tuple[socket.socket, socket.socket]:
    """(emperor end, vassal end). The vassal end must be passed with ``pass_fds``."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return a, b


def from_env() -> socket.socket | None:
    """The vassal's end of the channel, if this process was started by an emperor."""
    raw = os.environ.pop(ENV_FD, None)
    if raw is None or not raw.isdigit():
        return None
    try:
        return socket.socket(fileno=int(raw))
    except OSError:
        return None


def send(sock: socket.socket, msg: Msg, payload: str = "") -> bool:
    """Send without blocking; a full or closed channel is reported as False, never raised."""
    try:
        sock.send(encode(msg, payload), socket.MSG_DONTWAIT)
        return True
    except OSError:
        return False


def send_fd(sock: socket.socket, msg: Msg, fd: int) -> bool:
    """Send a message carrying one file descriptor (SCM_RIGHTS); False if the channel is full or gone.

    ``LOGREOPEN`` passes the emperor's freshly reopened log this way: a vassal running as
    another user (tyrant mode) could not open the emperor's log file itself.
    """
    try:
        socket.send_fds(sock, [encode(msg)], [fd], socket.MSG_DONTWAIT)
        return True
    except OSError:
        return False


def recv(sock: socket.socket) -> tuple[bytes, int | None]:
    """One packet and the file descriptor it carried, if any (extra ones are closed)."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PAYLOAD + 1, 4)
    for extra in fds[1:]:
        os.close(extra)
    return data, fds[0] if fds else None
