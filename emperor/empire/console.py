"""The operator's console on the emperor: emperor-stats, /metrics, the control plane and the event stream.

The emperor's loop owns one ``Console`` and touches it at a few points only: ``open``/
``close`` around the loop, ``ready(kind)`` when one of its fds is readable, ``tick()``
once per iteration, ``deadline()`` for the select timeout, ``hide_held()`` after each
scan, and each vassal record's ``on_event`` (set at spawn) for the event stream. Every
action a control command takes goes through the methods below, which call the
emperor's own ones, so a command changes nothing the emperor's loop would not.

Operator intent wins over the directory: a vassal stopped with ``emperor ctl stop`` is
*held*: the scans no longer see its file (so it is not respawned, even when the file
changes) until ``emperor ctl start``. The hold lives in memory: an emperor restart
forgets it.
"""

from __future__ import annotations

import logging
import selectors
from typing import TYPE_CHECKING, Any

from emperor import channel
from emperor.channel import Msg
from emperor.control.commands import SCALE_WAIT, Later
from emperor.control.protocol import Errno, Identity
from emperor.empire import stats
from emperor.empire.vassals import DEAD, RUNNING, State, Vassal

if TYPE_CHECKING:
    from emperor.control.server import ControlServer
    from emperor.empire.emperor import Emperor
    from emperor.empire.scan import Found
    from emperor.statsserver import StatsServer

log = logging.getLogger("emperor")


class BootError(Exception):
    """A console socket the operator configured cannot be served: the emperor does not start."""


class Console:
    def __init__(self, emp: Emperor) -> None:
        self.emp = emp
        self.held: set[str] = set()
        self.control: ControlServer | None = None
        self.stats_server: StatsServer | None = None
        self.pool_seen: dict[str, tuple[int, int]] = {}  # vassal -> (lends, reclaims) already published
        self.scaling: dict[str, list[Later]] = {}  # vassal -> scale replies waiting for its answer (FIFO)

    # ---- the emperor's loop -------------------------------------------------------------
    def open(self) -> None:
        """Bind emperor-stats and the control plane; raises BootError when one cannot be served."""
        s, sel = self.emp.s, self.emp.sel
        from emperor.control.server import ControlBootError, open_server

        try:
            if s.stats:
                self.stats_server = stats.open_server(self.emp, s.stats, s.stats_http)
                log.info("stats: emperor stats on %s", self.stats_server.describe())
            self.control = open_server(self.emp, s.control, self.identity())
        except (OSError, ValueError) as exc:
            self.close()
            raise BootError(f"emperor-stats = {s.stats}: {exc}") from None
        except ControlBootError as exc:
            self.close()
            raise BootError(str(exc)) from None
        if self.stats_server is not None:
            sel.register(self.stats_server, selectors.EVENT_READ, ("console", "stats"))
        if self.control is not None:
            sel.register(self.control.fileno(), selectors.EVENT_READ, ("console", "control"))

    def identity(self) -> Identity:
        """This emperor's identity (its ini, else its directories): it names the default endpoint."""
        ident = getattr(self.emp.s, "identity", None)
        if isinstance(ident, Identity):
            return ident
        return Identity.of_config([], [src.path for src in self.emp.s.sources], "/")

    def close(self) -> None:
        if self.stats_server is not None:
            self.stats_server.close()
            self.stats_server = None
        if self.control is not None:
            self.control.close()
            self.control = None

    def ready(self, which: str) -> None:
        if which == "stats" and self.stats_server is not None:
            self.stats_server.service()
        elif which == "control" and self.control is not None:
            self.control.service()

    def tick(self) -> None:
        """Every iteration: requests the edge-triggered fd did not announce, stuck stats readers,
        pool events."""
        if self.control is not None:
            self.control.service()
            self._publish_pool()
        if self.stats_server is not None:
            self.stats_server.expire()
        self._expire_scales()

    def deadline(self, now: float) -> float:
        if self.control is not None and self.control.pending():
            return now
        due = [now + 60.0, *(later.deadline for pending in self.scaling.values() for later in pending)]
        if self.stats_server is not None and self.stats_server.clients:
            due.append(now + 0.5)  # to drop readers past their deadline
        return min(due)

    def hide_held(self, found: dict[str, Found]) -> None:
        for name in self.held:
            found.pop(name, None)

    # ---- events -------------------------------------------------------------------------
    def vassal_event(self, v: Vassal, word: str, detail: str) -> None:
        """A record changed state (``Vassal._to`` and exits): publish ``vassal.<name>.<word>``."""
        if self.control is not None:
            self.control.publish(v.name, word.replace(" ", "-"), {
                "pid": v.pid or 0, "state": v.state.value if v.state else "new", "detail": detail})

    def publish(self, vassal: str, event: str, **data: Any) -> None:
        if self.control is not None:
            self.control.publish(vassal, event, data)

    def _publish_pool(self) -> None:
        """Lend and reclaim events, from the broodlord counters on the records (when they exist)."""
        for v in self.emp.vassals.values():
            lends, reclaims = int(getattr(v, "lends", 0) or 0), int(getattr(v, "reclaims", 0) or 0)
            seen = self.pool_seen.get(v.name, (0, 0))
            if (lends, reclaims) == seen:
                continue
            self.pool_seen[v.name] = (lends, reclaims)
            zergs = int(getattr(v, "zergs", 0) or 0)
            for _ in range(max(0, lends - seen[0])):
                self.publish(v.name, "lend", pid=v.pid or 0, zergs=zergs)
            for _ in range(max(0, reclaims - seen[1])):
                self.publish(v.name, "reclaim", pid=v.pid or 0, zergs=zergs)

    # ---- actions of the control commands ------------------------------------------------
    def reload(self, v: Vassal) -> bool:
        """Like touching the file: reload a running vassal, retry a dead one now."""
        emp = self.emp
        if v.state in RUNNING:
            emp._reload(v)
            return True
        if v.state in DEAD:
            v.unthrottle(emp.now)
            v.state = State.THROTTLED  # FAILED too: the next timers pass spawns it
            return True
        return False

    def hold(self, v: Vassal) -> None:
        emp = self.emp
        self.held.add(v.name)
        emp.found.pop(v.name, None)
        if v.state in RUNNING:
            emp._stop(v, "(emperor ctl stop: held until emperor ctl start)")
        elif v.state in DEAD:
            del emp.vassals[v.name]
            log.info("held: %r stays stopped until emperor ctl start", v.name)

    def start(self, name: str) -> bool:
        emp = self.emp
        if name in self.held:
            self.held.discard(name)
            emp.rescan_at = emp.now  # the next iteration sees the file again and spawns it
            log.info("released: %r (emperor ctl start)", name)
            return True
        v = emp.vassals.get(name)
        if v is not None and v.state in DEAD:
            return self.reload(v)
        return False

    def scale(self, v: Vassal, count: int, wait: float) -> Later | None:
        """Send SCALE; the reply waits for the vassal's SCALED (None: it cannot be asked now)."""
        proc = self.emp.procs.get(v.name)
        if proc is None or v.state not in (State.READY, State.LOYAL) or not proc.send(Msg.SCALE, str(count)):
            return None
        later = Later(self.emp.now + wait)
        self.scaling.setdefault(v.name, []).append(later)
        return later

    def scaled(self, v: Vassal, payload: str) -> None:
        """The vassal's SCALED: finish the oldest scale reply waiting for it."""
        pending = self.scaling.get(v.name)
        accepted, detail = channel.parse_scale_reply(payload)
        if accepted:
            log.info("scaled: %r (pid %s) to %s worker(s)", v.name, v.pid, detail)
        else:
            log.warning("scale refused: %r (pid %s): %s", v.name, v.pid, detail)
        if not pending:
            return  # answered after its deadline: the operator was told already
        later = pending.pop(0)
        if not pending:
            del self.scaling[v.name]
        if accepted:
            later.finish({"scaled": v.name, "processes": int(detail), "pid": v.pid})
        else:
            later.fail(Errno.REFUSED, f"scale: {v.name} refused: {detail}")

    def _expire_scales(self) -> None:
        for name in list(self.scaling):
            v, proc = self.emp.vassals.get(name), self.emp.procs.get(name)
            keep = []
            for later in self.scaling[name]:
                if v is None or proc is None or v.state not in (State.READY, State.LOYAL):
                    now = v.state.value if v is not None and v.state is not None else "gone"
                    later.fail(Errno.BAD_STATE, f"scale: {name} is {now}; its answer will not come")
                elif self.emp.now >= later.deadline:
                    later.fail(Errno.BAD_STATE, f"scale: {name} did not answer within {SCALE_WAIT:g} s")
                else:
                    keep.append(later)
            if keep:
                self.scaling[name] = keep
            else:
                del self.scaling[name]

    # ---- SIGUSR1 --------------------------------------------------------------------------
    def status_lines(self) -> list[str]:
        """SIGUSR1's dump: one readable line per vassal (what ``emperor ctl list`` shows)."""
        lines = []
        for v in sorted(self.emp.vassals.values(), key=lambda v: v.name):
            snap = v.snapshot(self.emp.now)
            parts = [f"{v.name}: {snap.get('state', 'new')}", f"pid {snap.get('pid') or '-'}",
                     f"respawns {snap.get('respawns', 0)}", f"reloads {snap.get('reloads', 0)}",
                     "loyal" if snap.get("loyal") else "not loyal"]
            if snap.get("throttle_level"):
                parts.append(f"throttle {int(snap['throttle_level']) / 1000:g} s")
            if snap.get("last_error"):
                parts.append(f"last error: {snap['last_error']}")
            lines.append(", ".join(parts))
        lines += [f"{name}: held (emperor ctl stop)" for name in sorted(self.held - set(self.emp.vassals))]
        return lines or ["no vassals"]
