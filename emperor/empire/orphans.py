"""Children the emperor adopted: as a child subreaper (for the template, emperor/empire/template.py)
it becomes the parent of every orphaned descendant, a worker whose master was SIGKILLed or a
process a dead worker left behind. Left alone they would be zombies (or run unsupervised).

On SIGCHLD and after each vassal is reaped, the emperor lists its children
(``/proc/self/task/*/children``) and, for each pid it does not know (not a vassal, zerg,
template or on-demand command of its own):

* exited (a zombie): reaped;
* alive, in a session of a vassal that still runs: left alone; the group kill at that
  vassal's exit reaches it as it does today;
* alive, the leader of its own session (a daemon that detached on purpose, e.g. for
  ``smart-attach-daemon``): left alone, as init would have; reaped when it exits;
* alive otherwise (its vassal is gone): SIGKILLed ("never an orphan"), reaped on its SIGCHLD.

Killing or reaping by pid is safe here: a child's pid cannot be reused until its parent (we)
reaped it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
from collections.abc import Collection

log = logging.getLogger("emperor")


def children() -> list[int]:
    """Our children's pids, from every thread's ``children`` list."""
    pids: list[int] = []
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with contextlib.suppress(OSError), open(path) as f:
            pids += [int(p) for p in f.read().split()]
    return pids


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of ``pid``; None if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()  # after "pid (comm) "
    try:
        return fields[0].decode(), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def reap(known: Collection[int], live_sessions: Collection[int], tolerated: set[int]) -> list[int]:
    """Reap or kill the adopted children (see the module doc). Returns the pids reaped.

    ``known``: our own children, never touched. ``live_sessions``: sessions of running vassals.
    ``tolerated``: detached daemons already logged (kept by the caller, so each is logged once).
    """
    reaped: list[int] = []
    for pid in children():
        if pid in known:
            continue
        st = _stat(pid)
        if st is None:
            continue
        state, _pgid, sid = st
        if state in ("Z", "X"):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
                    tolerated.discard(pid)
                    log.debug("orphans: reaped pid %d (adopted after its parent died)", pid)
            continue
        if sid in live_sessions:
            continue
        if sid == pid:
            if pid not in tolerated:
                tolerated.add(pid)
                log.info("orphans: adopted pid %d, a detached daemon: left running", pid)
            continue
        log.warning("orphans: adopted pid %d (session %d is no vassal's any more): killing it", pid, sid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return reaped
