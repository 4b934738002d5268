"""The master's side of the emperor channel: what the emperor asks, and what the master reports.

Under an emperor (``chan`` set) the master reads STOP, RELOAD (with the checked ini bytes as an
fd), KILL, SCALE and LOGREOPEN (with the emperor's log as an fd), and sends ENDPOINTS + READY
once every wanted worker accepts, LOYAL after the first request served, HEARTBEAT from its own
loop, and the answer to a SCALE. Without an emperor only the "ready" log line remains. The
messages and payload codecs are in emperor/channel.py; these functions take the master through
``Host``, so this module does not import it.
"""

from __future__ import annotations

import logging
import os
import selectors
from typing import Protocol

from emperor import channel, inifd
from emperor.channel import Msg
from emperor.vassal import autoscale, scoreboard, sockets

log = logging.getLogger("emperor.master")


class Host(autoscale.Host, Protocol):
    """What the channel reads and drives on the vassal's master, beyond scaling's."""

    sel: selectors.BaseSelector
    listeners: list[sockets.Listener]
    cheap_waiting: bool  # cheap: no worker until the first connection (counts as ready)
    loyal_sent: bool
    next_heartbeat: float

    def stop(self, graceful: bool) -> None: ...

    def reload(self) -> None: ...

    def scale(self, payload: str) -> tuple[bool, str]: ...

    def reopen_log(self, why: str, fd: int | None = None) -> None: ...


def on_channel(m: Host) -> None:
    """A message from the emperor (the channel is readable)."""
    assert m.chan is not None
    fd: int | None = None
    try:
        packet, fd = channel.recv(m.chan)
    except BlockingIOError:
        return
    except OSError:
        packet = b""
    if fd is not None and packet[:1] == bytes((Msg.RELOAD,)):
        try:
            inifd.replace(fd)  # the ini bytes the emperor checked (emperor/inifd.py)
        except OSError as exc:
            log.error("%s: cannot read the ini the emperor sent: %s", m.name, exc.strerror)
        fd = None
    if not packet:
        log.error("%s: lost the emperor (channel closed): stopping now", m.name)
        m.sel.unregister(m.chan)
        m.chan.close()
        m.chan = None
        m.stop(graceful=False)
        return
    decoded = channel.decode(packet)
    if decoded is None or (fd is not None and decoded[0] != Msg.LOGREOPEN):
        if fd is not None:
            os.close(fd)
        log.warning("%s: ignoring unknown message from the emperor: %r", m.name, packet[:16])
        return
    msg, payload = decoded
    if msg == Msg.STOP:
        m.stop(graceful=True)
    elif msg == Msg.RELOAD:
        m.reload()
    elif msg == Msg.KILL:
        m.stop(graceful=False)
    elif msg == Msg.SCALE:
        accepted, detail = m.scale(payload)
        channel.send(m.chan, Msg.SCALED, channel.scale_reply(accepted, detail))
    elif msg == Msg.LOGREOPEN:
        m.reopen_log("the emperor reopened its log", fd)


def report(m: Host) -> None:
    """READY once every worker accepts; LOYAL once a request has been served."""
    if m.chan is None:
        if not m.ready_sent and _all_accepting(m):
            m.ready_sent = True
            log.info("%s: ready: %d worker(s) accepting", m.name, len(m.workers))
        return
    if not m.ready_sent and _all_accepting(m):
        channel.send(m.chan, Msg.ENDPOINTS, endpoints(m))  # for emperor-etcd (docs/fleet.md)
        m.ready_sent = channel.send(m.chan, Msg.READY, str(len(m.workers)))
        log.info("%s: ready: %d worker(s) accepting", m.name, len(m.workers))
        autoscale.tell_workers(m)
    if m.ready_sent and not m.loyal_sent and m.board.total_requests() > 0:
        m.loyal_sent = channel.send(m.chan, Msg.LOYAL)


def heartbeat(m: Host, now: float) -> None:
    """``heartbeat = N``: sent from the loop itself, so a master that stops looping (SIGSTOP, a
    stuck call) goes silent and the emperor replaces it."""
    if m.cfg.heartbeat and m.chan is not None and now >= m.next_heartbeat:
        channel.send(m.chan, Msg.HEARTBEAT, channel.heartbeat_payload(m.cfg.heartbeat))
        m.next_heartbeat = now + m.cfg.heartbeat


def endpoints(m: Host) -> str:
    """What the emperor registers in etcd: the app name, the weight and the bound TCP addresses
    (``getsockname``, so ``:0`` reports its real port; a wildcard is replaced by the emperor)."""
    words = [f"app={m.cfg.fleet_app or ''}", f"weight={m.cfg.weight}"]
    for lst in m.listeners:
        if lst.kind != "tcp":
            continue
        host, port = lst.sock.getsockname()[:2]
        suffix = "" if lst.proto == "uwsgi" else f"/{lst.proto}"  # HTTP: upstream <app>-http
        words.append(f"[{host}]:{port}{suffix}" if ":" in host else f"{host}:{port}{suffix}")
    return " ".join(words)


def _all_accepting(m: Host) -> bool:
    if m.cheap_waiting:
        return True
    b, live = m.board, set(m.workers.values())
    wanted = [w for w in range(1, m.target + 1) if m.wanted(w)]  # not the retiring ones
    return bool(m.workers) and all(wid in live and b.get(wid - 1, scoreboard.ACCEPTING) for wid in wanted)
