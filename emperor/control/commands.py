"""The command registry: every control command is one function here, and its docstring is its reference.

``emperor ctl`` builds its sub-commands from ``REGISTRY`` (``Param`` says how each property
is given on the command line), the server validates requests against the same ``Param``
list before calling the function, and ``python -m emperor.control.reference`` renders
docs/reference/commands.md from the docstrings. A command runs inside the emperor's loop
(between two iterations, never concurrently with anything), acts only through the
emperor's own methods, and answers with a dict; a refusal raises ``ControlError``.

Vassals are named by their id (the file name, ``app.ini``; ``app`` is accepted too).
Names are looked up in the emperor's tables, never used as paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emperor.control.protocol import MAX_NAME, ControlError, Errno
from emperor.empire import stats

if TYPE_CHECKING:
    from emperor.empire.emperor import Emperor
    from emperor.empire.vassals import Vassal

MAX_PROCESSES = 4096  # the processes option's own limit; the vassal also caps at its scoreboard
SCALE_WAIT = 3.0  # seconds the emperor waits for a vassal's answer to a scale (below ctl's 5 s timeout)


@dataclass
class Later:
    """A reply that waits for a vassal (``scale``): the server binds ``send``, the console finishes it.

    ``finish`` sends the result dict, ``fail`` an error reply; the first call wins, later
    ones are ignored (an answer that arrives after the deadline is simply dropped).
    """

    deadline: float
    request_id: Any = None
    send: Callable[[dict[str, Any] | ControlError], None] | None = field(default=None, repr=False)
    done: bool = False

    def finish(self, result: dict[str, Any] | ControlError) -> None:
        if self.done:
            return
        self.done = True
        if self.send is not None:
            self.send(result)

    def fail(self, errno: Errno, reason: str) -> None:
        self.finish(ControlError(errno, reason))


@dataclass(frozen=True)
class Param:
    """One property of a request: its JSON type, and its shape on the ``emperor ctl`` command line."""

    name: str
    help: str
    kind: type = str  # str or int
    required: bool = True
    flag: bool = False  # a boolean given as ``--name`` on the command line


@dataclass(frozen=True)
class Command:
    name: str
    run: Callable[[Emperor, dict[str, Any]], dict[str, Any] | Later]
    params: tuple[Param, ...]
    client_only: bool = False  # ``events``: the server only says where to subscribe

    @property
    def doc(self) -> str:
        return _dedent(self.run.__doc__ or "")

    @property
    def summary(self) -> str:
        return self.doc.split("\n\n", 1)[0].replace("\n", " ")


REGISTRY: dict[str, Command] = {}


Runner = Callable[..., "dict[str, Any] | Later"]


def command(*params: Param, client_only: bool = False) -> Callable[[Runner], Runner]:
    """Register ``cmd_<name>`` as the command ``<name>``."""
    def register(fn: Runner) -> Runner:
        name = fn.__name__.removeprefix("cmd_")
        assert name not in REGISTRY, f"command {name} registered twice"
        REGISTRY[name] = Command(name, fn, params, client_only)
        return fn
    return register


def validate(cmd: Command, props: object) -> dict[str, Any]:
    """Check ``properties`` against the command's params: types, presence, nothing unknown."""
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise ControlError(Errno.MESSAGE_ERROR, "properties must be a JSON object")
    known = {p.name: p for p in cmd.params}
    unknown = sorted(set(props) - set(known))
    if unknown:
        shown = ", ".join(str(k)[:40] for k in unknown[:5])
        raise ControlError(Errno.MESSAGE_ERROR, f"{cmd.name}: unknown properties: {shown}")
    out: dict[str, Any] = {}
    for p in cmd.params:
        if p.name not in props or props[p.name] is None:
            if p.required:
                raise ControlError(Errno.MESSAGE_ERROR, f"{cmd.name}: property '{p.name}' is required")
            out[p.name] = False if p.kind is bool else None
            continue
        value = props[p.name]
        if p.kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise ControlError(Errno.MESSAGE_ERROR, f"{cmd.name}: '{p.name}' must be an integer")
        if p.kind is bool and not isinstance(value, bool):
            raise ControlError(Errno.MESSAGE_ERROR, f"{cmd.name}: '{p.name}' must be true or false")
        if p.kind is str and (not isinstance(value, str) or not 0 < len(value) <= MAX_NAME):
            raise ControlError(Errno.MESSAGE_ERROR,
                               f"{cmd.name}: '{p.name}' must be a string of 1 to {MAX_NAME} characters")
        out[p.name] = value
    return out


def find(emp: Emperor, name: str, command: str) -> Vassal:
    """The vassal record for ``name`` (``app.ini`` or ``app``).

    A vassal held by ``emperor ctl stop`` is BAD_STATE and says so (it is not unknown: its
    file is there, ``start`` brings it back); any other missing name is UNKNOWN_VASSAL.
    """
    for key in (name, f"{name}.ini"):
        v = emp.vassals.get(key)
        if v is not None and key not in emp.console.held:
            return v
    held = held_name(emp, name)
    if held is not None:
        raise ControlError(Errno.BAD_STATE, f"{command}: {held} is held (stopped with 'emperor ctl stop'); "
                           f"'emperor ctl start {held}' starts it again")
    raise ControlError(Errno.UNKNOWN_VASSAL, f"no vassal named {name!r} (see 'emperor ctl list')")


def held_name(emp: Emperor, name: str) -> str | None:
    for key in (name, f"{name}.ini"):
        if key in emp.console.held:
            return key
    return None


def _known_name(emp: Emperor, name: str) -> str | None:
    for key in (name, f"{name}.ini"):
        if key in emp.vassals or key in emp.found or key in emp.console.held:
            return key
    return None


# ---- commands ---------------------------------------------------------------------------------


@command()
def cmd_list(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """List every vassal: id, pid, state, loyal, respawns, last error, throttle.

    Reply: ``{"vassals": [{"id", "pid", "state", "loyal", "respawns", "last_error",
    "throttle_level", ...}], "held": [names stopped with 'emperor ctl stop']}``. The entries
    are the ones of the emperor-stats document.
    """
    doc = stats.document(emp)
    return {"vassals": doc["vassals"], "held": sorted(emp.console.held), "refused": doc["refused"]}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_status(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """Show one vassal's record: state, pid, loyalty, respawns, reloads, last error, throttle.

    Reply: ``{"vassal": {...}}`` (the emperor-stats entry). The vassal's workers are in its
    own stats (``stats = ADDR`` in its ini).
    """
    held = held_name(emp, props["name"])
    if held is not None and held not in emp.vassals:
        return {"vassal": {"id": held, "pid": 0, "state": "held",
                           "last_error": "stopped with 'emperor ctl stop'"}}
    if held is not None:  # still stopping
        return {"vassal": {**stats.vassal(emp, emp.vassals[held]), "held": True}}
    v = find(emp, props["name"], "status")
    return {"vassal": stats.vassal(emp, v)}


@command()
def cmd_stats(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """The whole emperor-stats document (what ``emperor-stats = ADDR`` serves).

    Reply: ``{"stats": {...}}``.
    """
    return {"stats": stats.document(emp)}


@command(Param("name", "the vassal (app.ini or app)", required=False),
         Param("all", "reload every vassal (as SIGHUP does)", kind=bool, required=False, flag=True))
def cmd_reload(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """Gracefully reload one vassal (as touching its file does), or every vassal with ``--all``.

    A running vassal re-reads its ini and replaces its workers without dropping a request;
    a throttled or failed one is retried now. A reload also ends a runtime ``scale``: the
    ini's ``processes`` applies again. Give exactly one of ``name`` and ``all``.
    Reply: ``{"reloaded": [names]}``.
    """
    if bool(props["name"]) == bool(props["all"]):
        raise ControlError(Errno.MESSAGE_ERROR, "reload: give a vassal name or --all (not both)")
    if props["all"]:
        if emp.shutdown_at is not None:
            raise ControlError(Errno.BAD_STATE, "reload: the emperor is shutting down")
        names = sorted(emp.vassals)
        emp.reload_all()
        return {"reloaded": names}
    v = find(emp, props["name"], "reload")
    if not emp.console.reload(v):
        raise ControlError(Errno.BAD_STATE, f"reload: {v.name} is {_state(v)}")
    return {"reloaded": [v.name]}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_stop(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """Gracefully stop a vassal and keep it stopped until ``emperor ctl start``.

    In-flight requests finish (bounded by the emperor's reload-mercy). The file stays where
    it is; the emperor ignores it (even when it changes) until ``start`` or an emperor
    restart. Reply: ``{"stopping": name}``.
    """
    held = held_name(emp, props["name"])
    if held is not None:
        raise ControlError(Errno.BAD_STATE, f"stop: {held} is already stopped (held until "
                           f"'emperor ctl start {held}')")
    v = find(emp, props["name"], "stop")
    emp.console.hold(v)
    return {"stopping": v.name}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_start(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """Start a vassal stopped with ``emperor ctl stop``, or retry a throttled or failed one now.

    Reply: ``{"starting": name}``. A vassal that is already running is an error (BAD_STATE);
    a name with no file in the vassal directories is UNKNOWN_VASSAL.
    """
    name = _known_name(emp, props["name"])
    if name is None:
        raise ControlError(Errno.UNKNOWN_VASSAL, f"no vassal file named {props['name']!r}")
    if not emp.console.start(name):
        v = emp.vassals.get(name)
        raise ControlError(Errno.BAD_STATE, f"start: {name} is {_state(v) if v else 'not startable'}")
    return {"starting": name}


@command(Param("name", "the vassal (app.ini or app)"),
         Param("processes", "the new worker count", kind=int))
def cmd_scale(emp: Emperor, props: dict[str, Any]) -> Later:
    """Change a running vassal's worker count now, without a restart and without dropping a request.

    New workers are forked from the vassal's master; surplus ones (the highest numbers)
    get SIGTERM, finish their request and exit. Runtime only: any reload of the vassal
    (its file changes, ``emperor ctl reload``, SIGHUP) re-reads the ini, whose
    ``processes`` then applies again. The vassal accepts up to four times its ini's
    ``processes`` (at least 64); beyond that it refuses. Under ``cheaper`` the number is the
    ceiling (``processes``): the cheaper algorithm keeps choosing the count below it
    (docs/autoscaling.md).
    The reply waits for the vassal's answer (at most 3 s): ``{"scaled": name, "processes": N,
    "pid": master pid}``, or the error REFUSED with the vassal's reason.
    """
    v = find(emp, props["name"], "scale")
    count = props["processes"]
    if not 1 <= count <= MAX_PROCESSES:
        raise ControlError(Errno.MESSAGE_ERROR, f"scale: processes must be 1 to {MAX_PROCESSES} "
                           f"(got {count}); 'emperor ctl stop' stops a vassal")
    later = emp.console.scale(v, count, SCALE_WAIT)
    if later is None:
        raise ControlError(Errno.BAD_STATE, f"scale: {v.name} is {_state(v)}")
    return later


@command()
def cmd_zergs(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """The broodlord zerg pool: its size, the zergs lent and to whom.

    Reply: ``{"enabled": bool, "pool": {...}}``: the pool as broodlord describes it
    (``zergs_max``, ``zergs_busy``, ...), or ``enabled: false`` when broodlord is off.
    """
    pool = stats.pool(emp)
    return {"enabled": pool is not None, "pool": pool or {}}


@command(Param("name", "only this vassal's events", required=False), client_only=True)
def cmd_events(emp: Emperor, props: dict[str, Any]) -> dict[str, Any]:
    """Follow the event stream: one line per state change, lend, reclaim and throttle.

    The emperor replies with its PUB endpoint, ``{"endpoint": E}``; ``emperor ctl events``
    then subscribes to the topics ``vassal.<name>.<event>`` (all vassals, or ``name``) and
    prints each event as JSON until interrupted. Event bodies: ``{"vassal", "event",
    "pid", "state", "detail", "time"}``.
    """
    return {"endpoint": emp.console.control.events_endpoint if emp.console.control else ""}


def _state(v: Vassal | None) -> str:
    if v is None or v.state is None:
        return "not started"
    return v.state.value


def _dedent(text: str) -> str:
    lines = text.strip("\n").splitlines()
    if not lines:
        return ""
    rest = [ln for ln in lines[1:] if ln.strip()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in rest), default=0)
    return "\n".join([lines[0].strip(), *(ln[indent:] for ln in lines[1:])]).strip()
