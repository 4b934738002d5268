"""The master's side of worker scaling: feeding the cheaper policy and acting on it, and
``emperor ctl scale`` / SIGTTIN / SIGTTOU (docs/autoscaling.md).

The policy itself is pure and lives in emperor/vassal/cheaper.py; here is what needs the live
master: the scoreboard and the backlog probe it reads (``tick``), the workers it forks or sends
SIGTERM to (``spawn``/``retire``), the runtime worker count a scale sets, and the WORKERS line the
emperor shows. The state stays on the master (``cheaped``, ``retiring``, ``cheaper_log``, read by
its loop, readiness and stats too); these functions take the master through ``Host``, so this
module does not import it. They run from the loop at most every 50 ms, never per request.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import Protocol

from emperor import channel, config
from emperor.channel import Msg
from emperor.vassal import backlog, cheaper, scoreboard
from emperor.vassal.cheaper import Ledger, Policy
from emperor.vassal.health import kill
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.stats import proc_memory

log = logging.getLogger("emperor.master")


class Host(Protocol):
    """What scaling reads and changes on the vassal's master."""

    name: str
    cfg: config.Config
    state: str  # "running", "reloading", "stopping" or "done" (emperor/vassal/master.py)
    target: int  # the worker count now: the ini's until a scale (runtime only)
    workers: dict[int, int]  # pid -> worker id
    respawn_at: dict[int, float]
    board: Scoreboard
    chan: socket.socket | None
    sos: backlog.SosWatch | None
    ready_sent: bool
    cheaper: Policy | None
    cheaped: set[int]  # worker ids cheaper switched off
    retiring: set[int]  # pids leaving because of a cheap or a scale-down
    cheaper_log: Ledger
    cheaper_next: float
    busy_us: dict[int, int]
    cheap_waiting: bool  # cheap / cheap mode after idle: no worker until a connection

    def wanted(self, wid: int) -> bool: ...

    def _spawn(self, wid: int) -> None: ...


def boot(m: Host) -> None:
    """Read the cheaper settings; with a policy, only ``cheaper-initial`` workers start."""
    settings, warnings = cheaper.Settings.from_config(m.cfg)
    for w in warnings:
        log.warning("%s: %s: cheaper: %s", m.name, m.cfg.where("cheaper"), w)
    if settings is None:
        return
    now = time.monotonic()
    m.cheaper = cheaper.Policy(settings, now)
    m.cheaped = set(range(settings.initial + 1, settings.maximum + 1))
    readable = m.sos is not None and m.sos.probe.backlog()[0] is not None
    if settings.algo in ("backlog", "busyness") and not readable:
        log.warning("%s: cheaper-algo = %s: the listen queue cannot be read here%s", m.name,
                    settings.algo, ": using spare" if settings.algo == "backlog" else
                    ": the backlog rules are off")
    log.info("%s: cheaper: %s, %d to %d worker(s), %d at start", m.name, settings.algo,
             settings.minimum, settings.maximum, settings.initial)


def wake(m: Host) -> None:
    """Out of cheap mode (``idle`` without ``die-on-idle``): cheaper starts afresh, from
    ``cheaper-initial`` workers, under the ceiling a scale may have moved."""
    pol = m.cheaper
    if pol is None:
        return
    ceiling = pol.maximum
    m.cheaper = cheaper.Policy(pol.s, time.monotonic())
    m.cheaper.maximum = ceiling
    m.cheaped = set(range(min(pol.s.initial, ceiling) + 1, m.target + 1))
    m.busy_us = {}


def can_grow(m: Host) -> bool:
    """Cheaper may still spawn (an SOS for zergs waits until it cannot)."""
    return m.cheaper is not None and len(m.workers) - len(m.retiring) < m.target


def tick(m: Host, now: float) -> None:
    """Feed the policy from the scoreboard and the backlog probe, and act on its answer."""
    pol = m.cheaper
    if pol is None or now < m.cheaper_next or m.cheap_waiting:
        return
    b, now_ns = m.board, time.monotonic_ns()
    live = {wid: pid for pid, wid in m.workers.items() if pid not in m.retiring}
    wanted = [w for w in range(1, m.target + 1) if m.wanted(w)]
    starting, busy, rss, counters, running = 0, 0, 0, {}, []
    for wid in wanted:
        pid = live.get(wid)
        if pid is None or not b.get(wid - 1, scoreboard.ACCEPTING):
            starting += 1
            if pid is None:
                continue
        since = b.get(wid - 1, scoreboard.BUSY_SINCE)
        busy += bool(since)
        running.append((wid, bool(since)))
        in_flight = max(0, now_ns - since) // 1000 if since else 0
        counters[pid] = b.get(wid - 1, scoreboard.RT_SUM_US) + in_flight
        if pol.s.rss_soft or pol.s.rss_hard:
            rss += proc_memory(pid)[0]
    busy_time, m.busy_us = cheaper.busy_delta(m.busy_us, counters)
    queue = None
    if m.sos is not None and (busy >= len(wanted) or pol.s.algo in ("backlog", "busyness")):
        queue = m.sos.probe.backlog()[0]
    snap = cheaper.Snapshot(now, len(wanted), busy, starting, busy_time, queue, rss)
    action = pol.decide(snap)
    hot = starting or busy >= len(wanted)
    m.cheaper_next = now + (0.05 if hot else 0.25)  # a full house is watched closely
    if action.spawn:
        _spawn(m, action, len(wanted))
    elif action.retire:
        _retire(m, action, len(wanted), running)


def _spawn(m: Host, action: cheaper.Action, before: int) -> None:
    held = set(m.workers.values())  # a retiring worker keeps its slot until it exits
    chosen = sorted(m.cheaped, key=lambda w: (w in held, w))[:action.spawn]
    for wid in chosen:
        m.cheaped.discard(wid)
        if wid not in held:
            m._spawn(wid)
    after = before + len(chosen)
    m.cheaper_log.record(action, time.time(), before, after)
    log.info("%s: cheaper: spawned %d worker(s) (%d -> %d): %s", m.name, len(chosen), before, after,
             action.reason)
    tell_workers(m)


def _retire(m: Host, action: cheaper.Action, before: int, running: list[tuple[int, bool]]) -> None:
    """SIGTERM: the worker closes its listening sockets first (a connection the kernel queued
    goes to another worker), finishes the request it has, and exits 0."""
    pids = {wid: pid for pid, wid in m.workers.items() if pid not in m.retiring}
    chosen = cheaper.pick_retirees(action.retire, running)
    for wid in chosen:
        m.cheaped.add(wid)
        m.retiring.add(pids[wid])
        kill(pids[wid], signal.SIGTERM)
    after = before - len(chosen)
    m.cheaper_log.record(action, time.time(), before, after)
    log.info("%s: cheaper: retiring %d worker(s) (%d -> %d): %s", m.name, len(chosen), before, after,
             action.reason)
    tell_workers(m)


def running_workers(m: Host) -> int:
    """Workers alive that are not leaving (a cheap or a scale-down sent them SIGTERM)."""
    return sum(1 for pid, wid in m.workers.items() if pid not in m.retiring and m.wanted(wid))


def tell_workers(m: Host) -> None:
    """WORKERS to the emperor: running (not retiring), minimum, maximum, cheaper's spawns and
    cheaps (``emperor ctl list/status``)."""
    if m.chan is None:
        return
    pol, book = m.cheaper, m.cheaper_log
    low = pol.minimum if pol is not None else m.target
    channel.send(m.chan, Msg.WORKERS, channel.workers_payload(
        running_workers(m), low, m.target, sum(book.spawned.values()), sum(book.cheaped.values())))


def scale(m: Host, payload: str) -> tuple[bool, str]:
    """Change the worker count now, without a reload: spawn the missing workers, or retire the
    highest-numbered ones gracefully (SIGTERM: they finish their request and leave).

    Runtime only: the count is ``m.target``, which every reader (readiness, stats, SOS,
    SIGTTIN/SIGTTOU) uses; the config keeps the ini's value, so a reload restores it.
    Returns (accepted, the new count or the reason of the refusal) for the emperor.
    """
    asked = channel.parse_scale_request(payload)
    if m.state != "running":
        why = f"the vassal is {m.state}"
    elif asked is None:
        why = f"{payload[:40]!r} is not a worker count"
    elif not 1 <= asked <= m.board.slots:
        why = (f"{asked} workers: the scoreboard has {m.board.slots} slots (4 x the ini's "
               "processes, at least 64); raise processes in the ini and reload")
    else:
        why = ""
    if why:
        log.error("%s: scale refused: %s", m.name, why)
        return False, why
    assert asked is not None  # a refusal above otherwise
    count = asked
    old, m.target = m.target, count
    log.info("%s: scaled: %d -> %d worker(s) (runtime only: a reload restores the ini's value)",
             m.name, old, count)
    if m.cheaper is not None:
        _rescale(m, old, count)
    live = set(m.workers.values())
    for wid in range(1, count + 1):
        if wid not in live and wid not in m.respawn_at and m.wanted(wid):
            m.respawn_at[wid] = time.monotonic()  # the loop spawns it once its slot is free
    for pid, wid in list(m.workers.items()):
        if wid > count:
            kill(pid, signal.SIGTERM)
    m.ready_sent = m.ready_sent and count <= old  # READY again once the new ones accept
    tell_workers(m)
    return True, str(count)


def _rescale(m: Host, old: int, count: int) -> None:
    """``emperor ctl scale N`` under cheaper moves the ceiling (docs/autoscaling.md)."""
    assert m.cheaper is not None
    m.cheaper.maximum = count
    m.cheaped = {w for w in m.cheaped if w <= count} | set(range(old + 1, count + 1))
    active = [w for w in range(1, count + 1) if w not in m.cheaped]
    for wid in sorted(m.cheaped)[:max(0, m.cheaper.minimum - len(active))]:
        m.cheaped.discard(wid)  # never below cheaper (or the new ceiling, if lower)


def scale_by(m: Host, step: int, why: str) -> None:
    """SIGTTIN/SIGTTOU: one worker more or less, as gunicorn, within [1, scoreboard slots]."""
    count = m.target + step
    if not 1 <= count <= m.board.slots:
        log.warning("%s: %s ignored: already %d worker(s) (the range is 1 to %d)", m.name, why,
                    m.target, m.board.slots)
        return
    log.info("%s: %s received: %d -> %d worker(s)", m.name, why, m.target, count)
    scale(m, str(count))
