"""The master's checks on its workers: harakiri, max-worker-lifetime, touch-chain-reload.

Each check reads the scoreboard the workers write (``BUSY_SINCE``, ``ACCEPTING``) and the
master's worker table, and acts by signal only: SIGKILL to a stuck worker's process group
(harakiri), a graceful SIGTERM to one due for recycling (lifetime, chain reload). What a worker's
exit means afterwards is the master's business (``Master._worker_died``); the sets passed in
(``harakiri_done``, ``lifetime_done``) are how it tells a harakiri or a recycle from a crash.
Functions, not a class: the state they touch is the master's worker table, shared with the rest
of its loop, and they run once per loop turn, never per request.
"""

from __future__ import annotations

import logging
import os
import signal

from emperor import config
from emperor.vassal import scoreboard
from emperor.vassal.scoreboard import Scoreboard
from emperor.vassal.touch import ChainReload

log = logging.getLogger("emperor.master")


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
    worker finishes its request, exits 0 and is respawned by the master."""
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
