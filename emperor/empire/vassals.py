"""One record per vassal and its state machine.

Pure bookkeeping: no sockets, no processes. The emperor's main loop feeds it events
(spawned, READY, LOYAL, exit status ...) with the current monotonic time and performs
whatever side effect the returned value asks for. Every change of state goes through
``Vassal._to`` (nothing else writes ``state``), which logs one line that starts with a
fixed word and names the vassal and its pid, so the log can be grepped ("spawned:",
"ready:", "reloaded:", "stopped:", "throttled:" ...). Each record also says when it next
needs the loop's attention (``next_deadline``): the emperor's select timeout and its timers
read that one answer.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emperor import channel
from emperor.channel import Exit
from emperor.empire.throttle import Throttle

log = logging.getLogger("emperor")

Stamp = tuple[int, ...]


class State(enum.Enum):
    STARTING = "starting"  # exec'd, waiting for READY
    READY = "ready"  # workers accept
    LOYAL = "loyal"  # served a request since its last (re)load
    RELOADING = "reloading"  # RELOAD sent, waiting for READY (or CONFIG_ERROR)
    STOPPING = "stopping"  # STOP sent (or killed), waiting for the process to exit
    THROTTLED = "throttled"  # dead; respawned at ``respawn_at``
    FAILED = "failed"  # dead with an invalid ini; respawned when the file changes
    ON_DEMAND = "on-demand"  # no process: the emperor holds its socket and spawns it at a connection


ALIVE = frozenset({State.STARTING, State.READY, State.LOYAL, State.RELOADING, State.STOPPING})
RUNNING = frozenset({State.STARTING, State.READY, State.LOYAL, State.RELOADING})
DEAD = frozenset({State.THROTTLED, State.FAILED, State.ON_DEMAND})

_ALLOWED: dict[State | None, frozenset[State]] = {
    None: frozenset({State.STARTING, State.THROTTLED, State.ON_DEMAND}),
    State.STARTING: frozenset({State.READY, State.STOPPING, *DEAD}),
    State.READY: frozenset({State.LOYAL, State.RELOADING, State.STOPPING, *DEAD}),
    State.LOYAL: frozenset({State.RELOADING, State.STOPPING, *DEAD}),
    State.RELOADING: frozenset({State.READY, State.STOPPING, *DEAD}),
    State.STOPPING: frozenset({*DEAD}),
    State.THROTTLED: frozenset({State.STARTING, State.THROTTLED, State.FAILED, State.ON_DEMAND}),
    State.FAILED: frozenset({State.STARTING, State.THROTTLED, State.ON_DEMAND}),
    State.ON_DEMAND: frozenset({State.STARTING, State.THROTTLED}),
}


class After(enum.Enum):
    """What the emperor does with a record once its process has exited."""

    FORGET = "forget"  # it was stopped on purpose: delete the record
    RESPAWN = "respawn"  # spawn again at ``respawn_at`` (maybe now)
    WAIT = "wait"  # FAILED: spawn again only when the file changes


def describe_exit(returncode: int) -> str:
    """Human wording of a ``Popen.returncode`` (negative = killed by a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (possible OOM kill)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    meanings: dict[int, str] = {
        Exit.CONFIG: " (invalid configuration)",
        Exit.APP_LOAD: " (the application could not be loaded)",
        Exit.SOCKET: " (a socket could not be bound)",
    }
    meaning = meanings.get(returncode, "")
    return f"exited with status {returncode}{meaning}"


@dataclass
class Vassal:
    name: str  # the file name in the vassals directory (uWSGI's vassal id)
    path: str  # absolute path of that file (the link, not its target)
    stamp: Stamp = ()  # what the file looked like when last (re)loaded
    uid: int | None = None  # tyrant mode: the file's owner
    gid: int | None = None
    state: State | None = None
    pid: int | None = None
    loyal: bool = False  # served since this process was spawned
    spawned_at: float = 0.0
    ready_at: float = 0.0
    respawn_at: float = 0.0
    stop_deadline: float = 0.0
    missing_since: float | None = None  # the file looked gone at this time (confirmed on a second look)
    reload_pending: bool = False  # a change arrived while a (re)load was in progress
    killed: bool = False  # the emperor had to SIGKILL it
    last_error: str = ""
    respawns: int = 0
    reloads: int = 0
    throttle: Throttle = field(default_factory=Throttle)
    # the emperor's event stream (emperor/empire/operator.py): called with (record, word, detail)
    on_event: Callable[[Vassal, str, str], None] | None = field(default=None, repr=False, compare=False)
    heartbeat_at: float = 0.0  # the last HEARTBEAT (0: none since the spawn: the check is off)
    heartbeat_every: float = 0.0  # the vassal's own period (its payload)
    on_demand: str = ""  # on-demand vassals (emperor/empire/ondemand.py): the address the emperor holds
    idle_exit: bool = False  # it said IDLE (die-on-idle): its exit is a return to on-demand waiting
    # the vassal's worker counts (its WORKERS message; docs/autoscaling.md): running, cheaper's
    # minimum, the ceiling, and cheaper's spawns and cheaps so far
    workers: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    # ---- transitions

    def _to(self, new: State, word: str, detail: str = "", level: int = logging.INFO, *,
            shown: str | None = None, silent: bool = False) -> None:
        """The one place ``state`` changes. ``shown``: the log's wording when it says more than
        the event's ``detail``; ``silent``: a retry the caller announces itself (no line, no event)."""
        if new not in _ALLOWED[self.state]:
            raise AssertionError(f"{self.name}: {self.state} -> {new} is not a valid transition")
        self.state = new
        if silent:
            return
        pid = f" (pid {self.pid})" if self.pid else ""
        text = detail if shown is None else shown
        log.log(level, "%s: %r%s%s", word, self.name, pid, f" {text}" if text else "")
        self._event(word, detail)

    def _event(self, word: str, detail: str) -> None:
        """Tell the observer; its failure must never break a transition."""
        if self.on_event is not None:
            try:
                self.on_event(self, word, detail)
            except Exception:
                log.exception("event observer failed for %r", self.name)

    def spawned(self, pid: int, now: float, stamp: Stamp) -> None:
        if self.state is not None:
            self.respawns += 1
        self.pid, self.spawned_at, self.stamp = pid, now, stamp
        self.loyal = self.killed = self.reload_pending = self.idle_exit = False
        self.ready_at = self.stop_deadline = self.heartbeat_at = 0.0
        self._to(State.STARTING, "spawned")

    def spawn_failed(self, now: float, error: str) -> None:
        """The process could not even be created (fd or memory limits): back off like a crash."""
        self.pid, self.last_error = None, error
        delay = self.throttle.death(loyal=False, uptime=0.0)
        self.respawn_at = now + delay
        self._to(State.THROTTLED, "throttled", f"cannot spawn: {error}; next attempt in {delay:g} s",
                 logging.ERROR)

    def ready(self, now: float) -> bool:
        """READY arrived. Returns True when a reload requested meanwhile must be sent now."""
        if self.state == State.STARTING:
            self.ready_at = now
            self._to(State.READY, "ready", f"in {now - self.spawned_at:.2f} s")
        elif self.state == State.RELOADING:
            self.ready_at = now
            self.last_error = ""
            self._to(State.READY, "reloaded")
        else:
            return False
        return self._take_pending()

    def became_loyal(self, now: float) -> bool:
        """LOYAL arrived. Returns True when a reload requested meanwhile must be sent now.

        A vassal that has served is accepting, even if its READY was lost or never came:
        from STARTING this counts as READY too.
        """
        self.loyal = True
        if self.throttle.throttled:
            self.throttle.reset()
        pending = self.ready(now) if self.state == State.STARTING else False
        if self.state == State.READY:
            self._to(State.LOYAL, "loyal")
        return pending

    def config_error(self, text: str) -> bool:
        """A reload found the ini invalid; the vassal keeps serving its old configuration."""
        self.last_error = text
        if self.state == State.STARTING:  # a first boot (or a respawn): there is no previous configuration
            log.error("config error: %r (pid %s) cannot start: %s", self.name, self.pid, text)
            return False
        if self.state == State.STOPPING:  # already on its way out: nothing is kept
            log.error("config error: %r (pid %s): %s", self.name, self.pid, text)
            return False
        log.error("config error: %r (pid %s) keeps its previous configuration: %s", self.name, self.pid, text)
        if self.state == State.RELOADING:
            self._to(State.READY, "reload failed", "(still serving the previous configuration)",
                     logging.WARNING)
            return self._take_pending()
        return False

    def request_reload(self, stamp: Stamp | None = None) -> bool:
        """The file changed (or SIGHUP). Returns True when RELOAD must be sent now.

        A change during a start or a reload is remembered and sent once that finishes,
        so a burst of touches costs at most one extra reload, and the last one wins.
        """
        if stamp is not None:
            self.stamp = stamp
        if self.state in (State.STARTING, State.RELOADING):
            self.reload_pending = True
            return False
        if self.state in (State.READY, State.LOYAL):
            self.reloads += 1
            self._to(State.RELOADING, "reloading")
            return True
        return False

    def _take_pending(self) -> bool:
        if self.reload_pending:
            self.reload_pending = False
            return self.request_reload()
        return False

    def stop(self, deadline: float, why: str = "") -> bool:
        """Begin a graceful stop. Returns True when STOP must be sent (it was running)."""
        if self.state not in RUNNING:
            return False
        self.stop_deadline = deadline
        self.reload_pending = False
        self._to(State.STOPPING, "stopping", why)
        return True

    def exited(self, returncode: int, now: float, shutting_down: bool = False) -> After:
        """The process is gone (reaped). Decide what happens next."""
        how = describe_exit(returncode)
        uptime = now - self.spawned_at
        if self.state == State.STOPPING or shutting_down:
            killed = " after SIGKILL" if self.killed else ""
            log.info("stopped: %r (pid %s) %s%s", self.name, self.pid, how, killed)
            self._event("stopped", f"{how}{killed}")
            self.pid = None
            return After.FORGET
        if returncode == Exit.CONFIG:
            self.last_error = self.last_error or how
            self._to(State.FAILED, "failed", f"{how}; waiting for the file to change", logging.ERROR)
            self.pid = None
            return After.WAIT
        delay = self.throttle.death(self.loyal, uptime)
        self.respawn_at = now + delay
        level = logging.ERROR if returncode < 0 or returncode not in (0, Exit.SOCKET) else logging.WARNING
        if delay == 0:  # THROTTLED for at most one loop iteration; not a throttle
            self.last_error = how
            self._to(State.THROTTLED, "died", f"{how}; respawning now", level,
                     shown=f"{how} after {uptime:.1f} s; respawning now")
        else:
            self.last_error = how
            self._to(State.THROTTLED, "throttled",
                     f"{how} after {uptime:.1f} s before being loyal; next attempt in {delay:g} s "
                     f"(attempt {self.throttle.attempts})", level)
        self.pid = None
        return After.RESPAWN

    def waiting(self, stamp: Stamp, detail: str) -> None:
        """On-demand: no process; the emperor holds the socket (or is still asking for its address)
        and spawns at the next connection."""
        self.pid, self.stamp = None, stamp
        if self.state != State.ON_DEMAND:
            self._to(State.ON_DEMAND, "on-demand", detail)
        else:
            log.info("on-demand: %r %s", self.name, detail)

    def slept(self, returncode: int) -> None:
        """An on-demand vassal left after its idle period: it waits for a connection again."""
        log.info("idle: %r (pid %s) %s after its idle period", self.name, self.pid, describe_exit(returncode))
        self.pid = None
        self._to(State.ON_DEMAND, "on-demand", f"waits for a connection on {self.on_demand} again")

    def heartbeat(self, now: float, payload: str) -> None:
        """HEARTBEAT arrived: from now on a silence longer than ``hung_for`` allows is a hang."""
        self.heartbeat_at = now
        self.heartbeat_every = channel.parse_heartbeat(payload)

    def hung_deadline(self, required: float) -> float | None:
        """When a vassal that sends heartbeats counts as hung, or None (no heartbeat yet, or a
        state where the master is busy re-importing: starting, reloading, stopping). The period
        restarts at the last READY, so a long reload is not counted as silence."""
        if not self.heartbeat_at or self.killed or self.state not in (State.READY, State.LOYAL):
            return None
        return max(self.heartbeat_at, self.ready_at) + max(required, 2 * self.heartbeat_every)

    def unthrottle(self, now: float) -> None:
        """A manual action (touch, SIGHUP, SIGURG) retries a dead vassal at once."""
        self.throttle.reset()
        self.respawn_at = now

    def retry_now(self, now: float) -> bool:
        """SIGHUP, ``emperor ctl reload``/``start`` on a dead vassal (FAILED too): the next timers
        pass spawns it. False when it is not dead."""
        if self.state not in DEAD:
            return False
        self.unthrottle(now)
        self._to(State.THROTTLED, "throttled", silent=True)  # the spawn that follows is the news
        return True

    def next_deadline(self, required_heartbeat: float, zergs_alive: bool = False) -> float | None:
        """When this record next needs the loop, or None: its respawn (THROTTLED; not while its
        zergs still hold its sockets: their exits wake the loop), its SIGKILL (STOPPING), or the
        moment its silence counts as a hang."""
        if self.state == State.THROTTLED:
            return None if zergs_alive else self.respawn_at
        if self.state == State.STOPPING:
            return None if self.killed else self.stop_deadline
        return self.hung_deadline(required_heartbeat)

    def snapshot(self, now: float, pool: Mapping[str, int] | None = None) -> dict[str, Any]:
        """A JSON-ready view, for the log (SIGUSR1) and the stats server. ``pool``: its zerg figures
        (zergs, lends, reclaims), which the zerg table keeps (emperor/empire/zergs.py)."""
        pool = pool or {}
        return {
            "id": self.name,
            "path": self.path,
            "pid": self.pid or 0,
            "state": self.state.value if self.state else "new",
            "loyal": int(self.loyal),
            "ready": int(self.state in (State.READY, State.LOYAL)),
            "uid": self.uid if self.uid is not None else os.getuid(),
            "gid": self.gid if self.gid is not None else os.getgid(),
            "respawns": self.respawns,
            "reloads": self.reloads,
            "throttle_level": int(self.throttle.level * 1000),
            "attempt": self.throttle.attempts,
            "next_attempt_in": round(max(0.0, self.respawn_at - now), 3)
            if self.state == State.THROTTLED else 0,
            "last_error": self.last_error,
            "zergs": pool.get("zergs", 0),
            "workers": self.workers[0],
            "workers_min": self.workers[1],
            "workers_max": self.workers[2],
            "cheaper_spawns": self.workers[3],
            "cheaper_cheaps": self.workers[4],
            "lends": pool.get("lends", 0),
            "reclaims": pool.get("reclaims", 0),
            "on_demand": self.on_demand,
        }
