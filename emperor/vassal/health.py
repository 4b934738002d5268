"""The master's watch over its workers: harakiri, max-worker-lifetime, touch-chain-reload, and
what a worker's exit means (respawn, retire, back off, or stop the vassal).

Each check reads the scoreboard the workers write (``BUSY_SINCE``, ``ACCEPTING``) and the
master's worker table, and acts by signal only: SIGKILL to a stuck worker's process group
(harakiri), a graceful SIGTERM to one due for recycling (lifetime, chain reload). When the
worker is reaped, ``worker_died`` reads the sets the checks filled (``harakiri_done``,
``lifetime_done``) and cheaper's ``retiring`` to tell a harakiri, a recycle or a cheap from a
crash. Functions taking the master through ``Host`` (so this module does not import it): the
state is the master's worker table, shared with the rest of its loop, and they run once per loop
turn or per exit, never per request.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Protocol

from emperor import config
from emperor.channel import Exit
from emperor.vassal import scoreboard
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.touch import ChainReload

log = logging.getLogger("emperor.master")


class Host(Protocol):
    """What the watch reads and changes on the vassal's master."""

    name: str
    cfg: config.Config
    state: str  # "running", "reloading", "stopping" or "done" (emperor/vassal/master.py)
    exit_code: int
    board: Scoreboard
    workers: dict[int, int]  # pid -> worker id
    spawned_at: dict[int, float]
    respawn_at: dict[int, float]  # worker id -> when to respawn
    quick_deaths: dict[int, int]
    harakiri_done: set[int]  # pids killed by harakiri
    lifetime_done: set[int]  # pids sent SIGTERM to be recycled
    retiring: set[int]  # pids leaving because of a cheap or a scale-down
    busy_us: dict[int, int]
    chain: ChainReload | None

    def wanted(self, wid: int) -> bool: ...

    def stop(self, graceful: bool) -> None: ...

    def _spawn(self, wid: int) -> None: ...


def check(m: Host, now: float) -> None:
    """Once per loop turn while running: harakiri, max-worker-lifetime, touch-chain-reload."""
    cfg = m.cfg
    if cfg.harakiri:
        check_harakiri(cfg, m.name, m.workers, m.board, m.harakiri_done, time.monotonic_ns())
    if cfg.max_worker_lifetime:
        check_lifetime(cfg, m.name, m.workers, m.spawned_at, m.lifetime_done, now)
    if m.chain is not None:
        chain_step(m.chain, m.name, m.workers, m.board, m.lifetime_done, now)


def worker_died(m: Host, wid: int, pid: int, status: int) -> None:
    """A worker was reaped: log why, and respawn it, let it go, back off, or stop the vassal."""
    lived = time.monotonic() - m.spawned_at.get(wid, 0.0)
    harakiri = pid in m.harakiri_done
    m.harakiri_done.discard(pid)
    m.lifetime_done.discard(pid)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = f"killed by signal {sig} ({signal.Signals(sig).name})"
        if sig == signal.SIGKILL and not harakiri and m.state == "running":
            what += " (possible OOM)"
        code = -sig
    else:
        code = os.WEXITSTATUS(status)
        what = f"exited with status {code}"
    cheaped = pid in m.retiring
    m.retiring.discard(pid)
    m.busy_us.pop(pid, None)
    if m.state != "running":
        log.info("%s: worker %d (pid %d) %s", m.name, wid, pid, what)
        return
    if not m.wanted(wid):
        log.info("%s: worker %d (pid %d) retired after %s: %s", m.name, wid, pid,
                 "a cheap" if cheaped else "a scale-down", what)
        return
    if cheaped:  # wanted again while it was leaving: its slot is free now
        log.info("%s: worker %d (pid %d) retired (%s); spawning it again: cheaper wants it back",
                 m.name, wid, pid, what)
        m._spawn(wid)
        return
    if code == 0:
        log.info("%s: worker %d (pid %d) exited after recycling; respawning", m.name, wid, pid)
        m.board.set(wid - 1, scoreboard.RESPAWNS, m.board.get(wid - 1, scoreboard.RESPAWNS) + 1)
        m.quick_deaths[wid] = 0
        m._spawn(wid)
        return
    if code == Exit.APP_LOAD and (m.cfg.lazy_apps or m.cfg.asgi) and m.cfg.need_app:
        log.error("%s: worker %d could not %s the app (need-app): stopping", m.name, wid,
                  "load" if m.cfg.lazy_apps else "start (ASGI lifespan startup)")
        m.exit_code = Exit.APP_LOAD
        m.stop(graceful=False)
        return
    log.error("%s: worker %d (pid %d) %s%s; respawning", m.name, wid, pid, what,
              " after harakiri" if harakiri else "")
    m.board.set(wid - 1, scoreboard.RESPAWNS, m.board.get(wid - 1, scoreboard.RESPAWNS) + 1)
    quick = m.quick_deaths.get(wid, 0) + 1 if lived < 1.0 else 0
    m.quick_deaths[wid] = quick
    if quick >= 3:
        delay = min(0.25 * 2 ** (quick - 3), 5.0)
        log.error("%s: worker %d respawning too fast: waiting %.2f s", m.name, wid, delay)
        m.respawn_at[wid] = time.monotonic() + delay
    else:
        m._spawn(wid)


def kill(pid: int, sig: int) -> None:
    """Signal a worker that may have exited meanwhile."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def killpg(pid: int, sig: int) -> None:
    """Signal the worker's process group (children of a stuck request die too), then the worker."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        kill(pid, sig)


def check_harakiri(cfg: config.Config, name: str, workers: dict[int, int], board: Scoreboard,
                   done: set[int], now_ns: int) -> None:
    """``harakiri = N``: SIGKILL to every worker busy on one request for more than N seconds."""
    limit = cfg.harakiri
    for pid, wid in workers.items():
        since = board.get(wid - 1, scoreboard.BUSY_SINCE)
        if since and now_ns - since > limit * 1_000_000_000 and pid not in done:
            done.add(pid)
            request = board.text(wid - 1)
            log.error("%s: HARAKIRI: worker %d (pid %d) spent more than %d s on %r: killing it and "
                      "its process group", name, wid, pid, limit, request)
            board.set(wid - 1, scoreboard.HARAKIRI, board.get(wid - 1, scoreboard.HARAKIRI) + 1)
            if cfg.harakiri_verbose:
                for what in ("syscall", "wchan"):
                    log.error("%s: HARAKIRI: -- %s> %s", name, what, _proc_text(pid, what))
            killpg(pid, signal.SIGKILL)


def check_lifetime(cfg: config.Config, name: str, workers: dict[int, int], spawned_at: dict[int, float],
                   done: set[int], now: float) -> None:
    """max-worker-lifetime: a graceful SIGTERM to each worker older than its lifetime; the
    worker finishes its request, exits 0 and is respawned by ``worker_died``."""
    base = cfg.max_worker_lifetime
    for pid, wid in workers.items():
        limit = base + wid * cfg.max_worker_lifetime_delta
        if pid not in done and now - spawned_at.get(wid, now) > limit:
            done.add(pid)
            log.info("%s: worker %d (pid %d) recycled: max-worker-lifetime (%d s)", name, wid, pid, limit)
            kill(pid, signal.SIGTERM)


def chain_step(chain: ChainReload, name: str, workers: dict[int, int], board: Scoreboard,
               recycled: set[int], now: float) -> None:
    """touch-chain-reload: one worker at a time (emperor/vassal/touch.py ChainReload)."""
    step = chain.step(now, workers, lambda wid: bool(board.get(wid - 1, scoreboard.ACCEPTING)))
    if step is None:
        return
    what, pid, wid = step
    if what == "touched":
        log.info("%s: chain reload: replacing %d worker(s) one at a time (touch-chain-reload)",
                 name, len(workers))
    elif what == "next":
        log.info("%s: chain reload: worker %d (pid %d) finishes and is replaced", name, wid, pid)
        recycled.add(pid)  # a recycle: exits 0, respawned by the master
        kill(pid, signal.SIGTERM)
    else:
        log.info("%s: chain reload done", name)


def log_status(name: str, workers: dict[int, int], board: Scoreboard) -> None:
    """SIGUSR1: one status line per worker."""
    for pid, wid in sorted(workers.items(), key=lambda kv: kv[1]):
        i = wid - 1
        log.info("%s: worker %d pid %d requests %d %s respawns %d harakiri %d", name, wid, pid,
                 board.get(i, scoreboard.REQUESTS), "busy" if board.get(i, scoreboard.BUSY_SINCE) else "idle",
                 board.get(i, scoreboard.RESPAWNS), board.get(i, scoreboard.HARAKIRI))


def _proc_text(pid: int, name: str) -> str:
    """One line of /proc/PID/NAME (harakiri-verbose), or why it could not be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(256).decode("ascii", "replace").strip() or "-"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
