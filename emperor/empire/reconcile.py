"""Reconcile by set difference: what the directory says against what is running.

Pure: it reads the scan result and the vassal records and returns actions; the emperor
performs them. New file -> spawn, changed file -> graceful reload (or, for a dead vassal,
an immediate retry: touching the file is how an operator says "try again"), gone file ->
graceful stop. A file that looks gone is stopped only when a second look, ``settle``
seconds later, agrees: an editor that renames the old file away before writing the new
one must not cost a stop and a start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from emperor.empire.scan import Found
from emperor.empire.vassals import DEAD, RUNNING, State, Vassal

HANDOVER = 2.0  # a new vassal waits this long at most for vassals being stopped (a rename reuses the socket)


class Do(enum.Enum):
    SPAWN = "spawn"  # no record: create one and spawn
    RELOAD = "reload"  # running, file changed
    RETRY = "retry"  # dead (throttled or failed), file changed: spawn now
    RESTART = "restart"  # tyrant: the owner changed; stop now, the next scan spawns it anew
    MISSING = "missing"  # the file looks gone: look again after ``settle``
    STOP = "stop"  # the file is gone (confirmed): graceful stop
    FORGET = "forget"  # the file is gone and the vassal is not running: drop the record


@dataclass(frozen=True)
class Action:
    do: Do
    name: str
    found: Found | None = None


def plan(found: Mapping[str, Found], vassals: Mapping[str, Vassal], now: float,
         settle: float) -> list[Action]:
    actions: list[Action] = []
    for name, f in found.items():
        v = vassals.get(name)
        if v is None:
            actions.append(Action(Do.SPAWN, name, f))
        elif v.state == State.STOPPING:
            continue  # once it has exited, the next reconcile spawns it again
        elif (f.uid, f.gid) != (v.uid, v.gid) and v.state in RUNNING:
            actions.append(Action(Do.RESTART, name, f))
        elif f.stamp != v.stamp:
            actions.append(Action(Do.RETRY if v.state in DEAD else Do.RELOAD, name, f))
    for name, v in vassals.items():
        if name in found:
            continue
        if v.state in DEAD:
            actions.append(Action(Do.FORGET, name))
        elif v.state in RUNNING:
            gone_long_enough = v.missing_since is not None and now - v.missing_since >= settle
            actions.append(Action(Do.STOP if gone_long_enough else Do.MISSING, name))
    return actions


def handover_until(vassals: Mapping[str, Vassal], mercy: float) -> float:
    """New vassals wait while others are leaving, so a renamed file finds its socket free.

    A rename looks like "old name gone, new name found" in one scan; spawning the new one
    at once would race the old one for the same socket. The wait is bounded by HANDOVER.
    """
    until = 0.0
    for v in vassals.values():
        if v.missing_since is not None:
            until = max(until, v.missing_since + HANDOVER)
        elif v.state == State.STOPPING and not v.killed:
            until = max(until, v.stop_deadline - mercy + HANDOVER)
    return until
