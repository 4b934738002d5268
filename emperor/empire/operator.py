"""The operator's side of the emperor: emperor-stats, /metrics, the control plane and the event stream.

The emperor's loop owns one ``Operator`` (``emp.console``) and touches it at a few points only: ``open``/
``close`` around the loop (``fds()`` to watch), ``ready(kind)`` when one of its fds is readable,
``tick()`` once per iteration, ``deadline()`` for the select timeout, each vassal record's
``on_event`` (set at spawn) and the zerg table's ``publish`` for the event stream.

``Operator`` is also the emperor as the control plane sees it: it implements
``emperor.control.api.EmperorAPI`` (names in, dicts and booleans out) with the emperor's
public verbs (``Governed``: reload, hold, start, scale ...), so ``control/`` never imports
``empire/``, a command changes nothing the emperor's loop would not, and this module reads
nothing of the emperor but that protocol.

Operator intent wins over the directory: a vassal stopped with ``emperor ctl stop`` is
*held* (``Emperor.hold``): the scans no longer see its file (so it is not respawned, even
when the file changes) until ``emperor ctl start``. The hold lives in memory: an emperor
restart forgets it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from emperor import channel
from emperor.control.api import Later
from emperor.control.commands import SCALE_WAIT
from emperor.control.protocol import Errno, Identity
from emperor.empire import stats
from emperor.empire.vassals import Vassal

if TYPE_CHECKING:
    from emperor.control.server import ControlServer
    from emperor.statsserver import StatsServer

log = logging.getLogger("emperor")


class Settings(stats.Settings, Protocol):
    @property
    def stats(self) -> str | None: ...  # emperor-stats

    @property
    def stats_http(self) -> bool: ...

    @property
    def control(self) -> str | None: ...  # emperor-control


class Governed(Protocol):
    """What the operator reads and asks of the emperor (``Emperor`` satisfies it; this module does
    not import it, so the emperor can import this one)."""

    @property
    def vassals(self) -> Mapping[str, Vassal]: ...

    @property
    def refused(self) -> Mapping[str, str]: ...

    @property
    def held(self) -> Collection[str]: ...

    @property
    def now(self) -> float: ...

    @property
    def s(self) -> Settings: ...

    def clock(self) -> float: ...

    def files(self) -> Collection[str]: ...

    def shutting_down(self) -> bool: ...

    def reload_all(self) -> None: ...

    def reload(self, name: str) -> bool: ...

    def hold(self, name: str) -> None: ...

    def start(self, name: str) -> bool: ...

    def scalable(self, name: str) -> bool: ...

    def scale(self, name: str, count: int) -> bool: ...


class BootError(Exception):
    """A console socket the operator configured cannot be served: the emperor does not start."""


class Operator:
    """The control and stats servers on the emperor's loop, and the ``EmperorAPI`` they act through."""

    def __init__(self, emp: Governed) -> None:
        self.emp = emp
        self.control: ControlServer | None = None
        self.stats_server: StatsServer | None = None
        self.scaling: dict[str, list[Later]] = {}  # vassal -> scale replies waiting for its answer (FIFO)

    # ---- the emperor's loop -------------------------------------------------------------
    def open(self) -> None:
        """Bind emperor-stats and the control plane; raises BootError when one cannot be served."""
        s = self.emp.s
        from emperor.control.server import ControlBootError, open_server

        try:
            if s.stats:
                self.stats_server = stats.open_server(self.emp, s.stats, s.stats_http)
                log.info("stats: emperor stats on %s", self.stats_server.describe())
            self.control = open_server(self, s.control, self.identity())
        except (OSError, ValueError) as exc:
            self.close()
            raise BootError(f"emperor-stats = {s.stats}: {exc}") from None
        except ControlBootError as exc:
            self.close()
            raise BootError(str(exc)) from None

    def fds(self) -> list[tuple[Any, str]]:
        """What the loop watches for us, each with the name ``ready`` is called with."""
        out: list[tuple[Any, str]] = []
        if self.stats_server is not None:
            out.append((self.stats_server, "stats"))
        if self.control is not None:
            out.append((self.control.fileno(), "control"))
        return out

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
        scale replies past their deadline."""
        if self.control is not None:
            self.control.service()
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

    # ---- events -------------------------------------------------------------------------
    def vassal_event(self, v: Vassal, word: str, detail: str) -> None:
        """A record changed state (``Vassal._to`` and exits): publish ``vassal.<name>.<word>``."""
        if self.control is not None:
            self.control.publish(v.name, word.replace(" ", "-"), {
                "pid": v.pid or 0, "state": v.state.value if v.state else "new", "detail": detail})

    def publish(self, vassal: str, event: str, **data: Any) -> None:
        """An event that is not a state change (the zerg table's ``lend`` and ``reclaim``)."""
        if self.control is not None:
            self.control.publish(vassal, event, data)

    # ---- EmperorAPI: what a control command sees (emperor/control/api.py) ----------------
    def records(self) -> Collection[str]:
        return self.emp.vassals.keys()

    def files(self) -> Collection[str]:
        return self.emp.files()

    def held(self) -> Collection[str]:
        return self.emp.held

    def state(self, name: str) -> str:
        v = self.emp.vassals.get(name)
        return v.state.value if v is not None and v.state is not None else "not started"

    def shutting_down(self) -> bool:
        return self.emp.shutting_down()

    def document(self) -> dict[str, Any]:
        return stats.document(self.emp)

    def entry(self, name: str) -> dict[str, Any]:
        return stats.vassal(self.emp, self.emp.vassals[name])

    def pool(self) -> dict[str, Any] | None:
        return stats.pool(self.emp)

    def events_endpoint(self) -> str:
        return self.control.events_endpoint if self.control is not None else ""

    def reload_all(self) -> None:
        self.emp.reload_all()

    def reload(self, name: str) -> bool:
        """Like touching the file: reload a running vassal, retry a dead one now."""
        return self.emp.reload(name)

    def hold(self, name: str) -> None:
        self.emp.hold(name)

    def start(self, name: str) -> bool:
        return self.emp.start(name)

    def scale(self, name: str, count: int, wait: float) -> Later | None:
        """Send SCALE; the reply waits for the vassal's SCALED (None: it cannot be asked now)."""
        if not self.emp.scale(name, count):
            return None
        later = Later(self.emp.now + wait)
        self.scaling.setdefault(name, []).append(later)
        return later

    def workers(self, v: Vassal, payload: str) -> None:
        """The vassal's WORKERS (cheaper spawned or retired, or a scale): kept on its record for
        ``emperor ctl list/status`` and the stats, and published as a ``workers`` event."""
        if (counts := channel.parse_workers(payload)) is None:
            log.warning("channel: %r sent malformed worker counts %r", v.name, payload[:60])
            return
        v.workers = counts
        cur, low, high, spawns, cheaps = counts
        self.publish(v.name, "workers", pid=v.pid or 0, workers=cur, min=low, max=high, spawns=spawns,
                     cheaps=cheaps)

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
            cur, low, high = v.workers[:3]  # its WORKERS line came before SCALED, on the same channel
            later.finish({"scaled": v.name, "processes": int(detail), "pid": v.pid, "workers": cur,
                          "workers_min": low, "workers_max": high})
        else:
            later.fail(Errno.REFUSED, f"scale: {v.name} refused: {detail}")

    def _expire_scales(self) -> None:
        for name in list(self.scaling):
            v = self.emp.vassals.get(name)
            keep = []
            for later in self.scaling[name]:
                if v is None or not self.emp.scalable(name):
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
        held = set(self.emp.held) - set(self.emp.vassals)
        lines += [f"{name}: held (emperor ctl stop)" for name in sorted(held)]
        return lines or ["no vassals"]
