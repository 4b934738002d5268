"""The zerg processes (emperor-broodlord, docs/broodlord.md): lent on a vassal's SOS, reclaimed idle.

``broodlord.Broodlord`` is the pool's policy (who gets a slot, who gives one back); this
module carries its verdicts out: it spawns, reloads, stops, kills and reaps the zergs, and
it keeps the one count of them: ``count(vassal)`` is the number of zergs in its table, and
the lends and reclaims per vassal are tallied here, where they happen, and published at
that moment (the ``lend`` and ``reclaim`` events of the control plane's stream).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from emperor import channel
from emperor.channel import Msg
from emperor.empire import broodlord, spawn
from emperor.empire.broodlord import Zerg
from emperor.empire.vassals import Vassal, describe_exit

log = logging.getLogger("emperor")

Content = Callable[[str, int | None, int | None], bytes | None]  # (vassal, uid, gid) -> checked ini
Publish = Callable[..., None]  # (vassal, event, **data): the operator's event stream


class Zergs:
    def __init__(self, pool: int, clock: Callable[[], float], children: spawn.Children,
                 vassals: Mapping[str, Vassal], content: Content, mercy: float,
                 spawner: spawn.Spawner = spawn.spawn) -> None:
        self.pool = pool
        self.mercy = mercy  # reload-mercy: a ready zerg's graceful stop
        self.brood = broodlord.Broodlord(pool, clock)  # the policy
        self.children = children
        self.vassals = vassals
        self.content = content
        self.spawner = spawner
        self.table: dict[str, Zerg] = {}
        self.tally: dict[str, tuple[int, int]] = {}  # vassal -> (lent in all, reclaimed idle)
        self.seq = 0
        self.publish: Publish | None = None

    # ---- the one count ------------------------------------------------------------------
    def of(self, parent: str) -> list[Zerg]:
        return [z for z in self.table.values() if z.parent == parent]

    def count(self, parent: str) -> int:
        return sum(z.parent == parent for z in self.table.values())

    def counts(self, parent: str) -> dict[str, int]:
        """Its figures for the stats: zergs alive, lent in all, reclaimed idle."""
        lends, reclaims = self.tally.get(parent, (0, 0))
        return {"zergs": self.count(parent), "lends": lends, "reclaims": reclaims}

    def forget(self, parent: str) -> None:
        """Its record is gone: a vassal added again under that name starts its tally afresh."""
        self.tally.pop(parent, None)

    def get(self, name: str) -> Zerg | None:
        return self.table.get(name)

    def __iter__(self) -> Iterator[Zerg]:
        return iter(list(self.table.values()))

    def _event(self, parent: str, event: str) -> None:
        lends, reclaims = self.tally.get(parent, (0, 0))
        self.tally[parent] = (lends + (event == "lend"), reclaims + (event == "reclaim"))
        v = self.vassals.get(parent)
        if self.publish is not None:
            self.publish(parent, event, pid=(v.pid if v else 0) or 0, zergs=self.count(parent))

    # ---- SOS and lending ----------------------------------------------------------------
    def sos(self, v: Vassal, payload: str, now: float) -> None:
        """SOS read on ``v``'s own channel (the caller checked broodlord is on and ``v`` serves)."""
        backlog, threshold = channel.parse_sos(payload)  # "BACKLOG THRESHOLD", or "busy" for vassal-sos
        verdict = self.brood.sos(v.name, backlog, threshold)
        if verdict.preempt:
            donors = [z for z in self.of(verdict.preempt) if not z.leaving]
            if donors:
                youngest = max(donors, key=lambda z: z.spawned_at)
                self.stop(youngest, "preempted", f"(fair share: {v.name!r} is overloaded too)", now)
            else:
                self.brood.gone(verdict.preempt, "preempted", preempted=True)  # nothing left to take
        if verdict.lend:
            for i in range(verdict.count):
                self._lend(v, verdict.slot + i, backlog, now)
        else:
            log.debug("sos: %r (backlog %s): no zerg: %s", v.name, payload, verdict.reason)

    def _lend(self, v: Vassal, slot: int, backlog: int | None, now: float) -> None:
        self.seq += 1
        name = f"{v.name}:zerg#{self.seq}"
        try:
            content = self.content(v.name, v.uid, v.gid)
            argv = spawn.zerg_argv(v.path, v.uid is not None, content)
            proc = self.spawner(name, v.path, argv, v.uid, v.gid, content)
        except OSError as exc:
            log.error("lend failed: cannot start a zerg for %r: %s", v.name, exc)
            self.brood.spawn_failed(v.name)
            return
        self.children.add(name, proc, "zerg")
        self.table[name] = Zerg(name, v.name, proc.pid, now, backlog)
        why = f"backlog {backlog}" if backlog is not None else "every worker busy"
        log.info("lent: zerg %d/%d to %r (%s): %r (pid %d)", slot, self.pool, v.name, why, name, proc.pid)
        self._event(v.name, "lend")

    # ---- acting on zergs ----------------------------------------------------------------
    def send(self, z: Zerg, msg: Msg) -> None:
        v = self.vassals.get(z.parent)
        content = self.content(v.name, v.uid, v.gid) if v and msg == Msg.RELOAD else None
        self.children.send(z.name, msg, content)

    def reload(self, parent: str) -> None:
        """The new code reaches the zergs too (they keep the sockets)."""
        for z in self.of(parent):
            self.send(z, Msg.RELOAD)

    def stop(self, z: Zerg, how: str, why: str, now: float) -> None:
        if z.leaving:
            return
        mercy = self.mercy
        # one that is not ready yet serves nothing: it gets a second, not the full mercy
        z.leaving, z.stop_deadline = how, now + (mercy if z.ready else min(mercy, 1.0))
        log.info("stopping: zerg %r of %r (pid %d) %s", z.name, z.parent, z.pid, why)
        self.send(z, Msg.STOP)

    def stop_all(self, parent: str | None, why: str, now: float) -> None:
        """Stop the zergs of ``parent`` (every zerg: None)."""
        for z in self:
            if parent is None or z.parent == parent:
                self.stop(z, "stopped", why, now)

    def withdraw(self, parent: str, now: float) -> None:
        """Its vassal is stopping: its zergs leave and it no longer competes for the pool."""
        self.stop_all(parent, "(its vassal is stopping)", now)
        self.brood.forget(parent)

    def kill(self, z: Zerg, why: str) -> None:
        if z.killed or z.name not in self.children:
            return
        z.killed = True
        log.error("killing: zerg %r (pid %d) and its process group: %s", z.name, z.pid, why)
        self.children.kill(z.name)

    def read(self, name: str, now: float) -> None:
        z = self.table.get(name)
        if z is None or name not in self.children:
            return
        for msg, payload in self.children.messages(name):
            if msg == Msg.READY and not z.ready:
                z.ready = True
                self.brood.started(z.parent)
                log.info("zerg ready: %r (pid %d) serving %r in %.2f s", name, z.pid, z.parent,
                         now - z.spawned_at)
            elif msg == Msg.IDLE and not z.leaving:
                log.info("reclaimed: zerg %r of %r (pid %d), idle %s s", name, z.parent, z.pid, payload)
                self.stop(z, "idle", "(idle)", now)

    def reap(self, name: str) -> None:
        z = self.table.get(name)
        if z is None or name not in self.children:
            return
        returncode = self.children.reap(name)
        if returncode is None:
            return
        del self.table[name]
        how = z.leaving or ("lost" if z.ready else "failed")
        self.brood.gone(z.parent, how, preempted=how == "preempted")
        if how == "idle" and z.parent in self.vassals:
            self._event(z.parent, "reclaim")
        left = f"pool {self.brood.alive}/{self.pool}"
        if how in ("lost", "failed"):
            log.warning("lost: zerg %r of %r (pid %d) %s%s; its slot is free (%s)", name, z.parent, z.pid,
                        describe_exit(returncode), "" if z.ready else " before it was ready", left)
        else:
            how_exit = "killed by the emperor" if z.killed else describe_exit(returncode)
            log.info("gone: zerg %r of %r (pid %d) %s (%s)", name, z.parent, z.pid, how_exit, left)

    # ---- timers -------------------------------------------------------------------------
    def deadlines(self) -> list[float]:
        return [z.stop_deadline for z in self.table.values() if z.leaving and not z.killed]

    def timers(self, now: float) -> None:
        for z in self:
            if z.leaving and not z.killed and now >= z.stop_deadline:
                self.kill(z, "it did not stop in time")

    def snapshot(self, now: float) -> dict[str, object]:
        """Pool facts for the stats server: the policy's counters and every zerg alive."""
        snap: dict[str, object] = self.brood.snapshot()
        snap["zergs"] = [z.snapshot(now) for z in self.table.values()]
        return snap
