"""The master's broodlord parts (docs/broodlord.md): the zerg server, the SOS watch and the idle watch.

A vassal with ``zerg-server`` hands its listening sockets to zergs; with ``vassal-sos-backlog``
or ``vassal-sos`` it asks the emperor for zergs while all its workers are busy (only once cheaper,
if any, cannot grow any more); a zerg or vassal with ``idle`` + ``die-on-idle`` leaves when nothing
happens, and with ``idle`` alone goes to cheap mode (the master's ``go_cheap``).
The pieces are in emperor/vassal/zerg.py and emperor/vassal/backlog.py; these functions wire them
to the master (through ``Host``, so this module does not import it), once a second at most.
"""

from __future__ import annotations

import logging
import selectors
import time
from typing import Protocol

from emperor import addresses, channel, privileges
from emperor.channel import Exit, Msg
from emperor.vassal import autoscale, backlog, scoreboard, sockets, zerg

log = logging.getLogger("emperor.master")


class Host(autoscale.Host, Protocol):
    """What the broodlord parts read and set on the vassal's master, beyond scaling's."""

    ident: privileges.Identity
    listeners: list[sockets.Listener]
    sel: selectors.BaseSelector
    zerg_server: zerg.ZergServer | None
    idle: zerg.IdleWatch | None

    def stop(self, graceful: bool) -> None: ...

    def go_cheap(self, quiet: float) -> None: ...


def boot(m: Host, inherited: sockets.Listener | None = None) -> int | None:
    """The zerg server, the SOS watch (a vassal) and the idle watch (a zerg); an exit status on failure."""
    cfg, now = m.cfg, time.monotonic()
    if cfg.zerg_server:
        try:
            m.zerg_server = zerg.ZergServer(cfg.zerg_server, m.listeners, inherited=inherited,
                                            owner=m.ident.owner)
        except (addresses.AddressError, OSError) as exc:
            log.error("zerg-server: %s", exc)
            return Exit.SOCKET
        m.sel.register(m.zerg_server.sock, selectors.EVENT_READ, m.zerg_server.on_accept)
    sos = bool(cfg.vassal_sos_backlog or cfg.vassal_sos)
    if sos and m.chan is None:
        log.warning("%s: vassal-sos-backlog/vassal-sos ignored: not governed by an emperor", m.name)
        sos = False
    # always: the watch also logs a full listen queue (rate-limited), SOS or not
    probe = backlog.Probe([(lst.name, lst.sock) for lst in m.listeners])
    m.sos = backlog.SosWatch(probe, cfg.vassal_sos_backlog if sos else 0, cfg.vassal_sos if sos else 0, now)
    if not sos:
        m.sos.PROBE_EVERY = 1.0  # only the log line: once a second is enough
    if cfg.heartbeat and m.chan is None:
        log.warning("%s: heartbeat ignored: not governed by an emperor", m.name)
    if cfg.idle:  # with die-on-idle the vassal exits; without, it goes to cheap mode (uWSGI's meaning)
        m.idle = zerg.IdleWatch(cfg.idle, now)
    return None


def tick(m: Host, now: float) -> None:
    """Once a second: SOS while overloaded (a vassal); leave when idle (a zerg)."""
    if m.sos is not None:
        busy = [m.board.get(wid - 1, scoreboard.BUSY_SINCE) for wid in m.workers.values()]
        all_busy = len(busy) == m.target and all(busy)
        payload = m.sos.check(now, all_busy)  # also logs a full listen queue
        if payload is not None and m.chan is not None and not autoscale.can_grow(m):
            channel.send(m.chan, Msg.SOS, payload)  # zergs only once cheaper reached processes
    if m.idle is not None and not m.cheap_waiting:
        any_busy = any(m.board.get(wid - 1, scoreboard.BUSY_SINCE) for wid in m.workers.values())
        quiet = m.idle.check(m.board.total_requests(), any_busy, now)
        if quiet is not None and not m.cfg.die_on_idle:
            m.go_cheap(quiet)  # the workers leave, the master keeps the sockets
        elif quiet is not None:
            log.info("%s: idle for %.0f s (no request, no busy worker): leaving", m.name, quiet)
            if m.chan is not None:
                channel.send(m.chan, Msg.IDLE, f"{quiet:.0f}")
            m.stop(graceful=True)  # a request accepted meanwhile still finishes


def close(m: Host, in_worker: bool = False) -> None:
    """Close the zerg server (removing its file, except from a worker) and the netlink probe."""
    if m.zerg_server is not None:
        if in_worker:
            m.zerg_server.sock.close()
        else:
            m.zerg_server.close()
        m.zerg_server = None
    if m.sos is not None:
        m.sos.probe.close()
        if not in_worker:
            m.sos = None
