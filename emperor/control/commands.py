"""The command registry: every control command is one function here, and its docstring is its reference.

``emperor ctl`` builds its sub-commands from ``REGISTRY`` (``Param`` says how each property
is given on the command line), the server validates requests against the same ``Param``
list before calling the function, and ``python -m emperor.control.reference`` renders
docs/reference/commands.md from the docstrings. A command runs inside the emperor's loop
(between two iterations, never concurrently with anything), acts only through the
``EmperorAPI`` it is given (emperor/control/api.py: the emperor's own verbs, or a fake in the
unit tests), and answers with a dict; a refusal raises ``ControlError``.

Vassals are named by their id (the file name, ``app.ini``; ``app`` is accepted too).
Names are looked up in the emperor's tables, never used as paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from emperor.control.api import EmperorAPI, Later
from emperor.control.protocol import MAX_NAME, ControlError, Errno

__all__ = ["REGISTRY", "Command", "EmperorAPI", "Later", "Param", "validate"]

MAX_PROCESSES = 4096  # the processes option's own limit; the vassal also caps at its scoreboard
SCALE_WAIT = 3.0  # seconds the emperor waits for a vassal's answer to a scale (below ctl's 5 s timeout)


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
    run: Callable[[EmperorAPI, dict[str, Any]], dict[str, Any] | Later]
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


def find(api: EmperorAPI, name: str, command: str) -> str:
    """The record's name for ``name`` (``app.ini`` or ``app``).

    A vassal held by ``emperor ctl stop`` is BAD_STATE and says so (it is not unknown: its
    file is there, ``start`` brings it back); any other missing name is UNKNOWN_VASSAL.
    """
    records, held = api.records(), api.held()
    for key in (name, f"{name}.ini"):
        if key in records and key not in held:
            return key
    held_as = held_name(api, name)
    if held_as is not None:
        raise ControlError(Errno.BAD_STATE, f"{command}: {held_as} is held (stopped with 'emperor ctl "
                           f"stop'); 'emperor ctl start {held_as}' starts it again")
    raise ControlError(Errno.UNKNOWN_VASSAL, f"no vassal named {name!r} (see 'emperor ctl list')")


def held_name(api: EmperorAPI, name: str) -> str | None:
    held = api.held()
    for key in (name, f"{name}.ini"):
        if key in held:
            return key
    return None


def _known_name(api: EmperorAPI, name: str) -> str | None:
    records, files, held = api.records(), api.files(), api.held()
    for key in (name, f"{name}.ini"):
        if key in records or key in files or key in held:
            return key
    return None


# ---- commands ---------------------------------------------------------------------------------


@command()
def cmd_list(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """List every vassal: id, pid, state, loyal, respawns, last error, throttle.

    Reply: ``{"vassals": [{"id", "pid", "state", "loyal", "respawns", "last_error",
    "throttle_level", ...}], "held": [names stopped with 'emperor ctl stop']}``. The entries
    are the ones of the emperor-stats document.
    """
    doc = api.document()
    return {"vassals": doc["vassals"], "held": sorted(api.held()), "refused": doc["refused"]}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_status(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """Show one vassal's record: state, pid, loyalty, respawns, reloads, last error, throttle.

    Reply: ``{"vassal": {...}}`` (the emperor-stats entry). The vassal's workers are in its
    own stats (``stats = ADDR`` in its ini).
    """
    held = held_name(api, props["name"])
    if held is not None and held not in api.records():
        return {"vassal": {"id": held, "pid": 0, "state": "held",
                           "last_error": "stopped with 'emperor ctl stop'"}}
    if held is not None:  # still stopping
        return {"vassal": {**api.entry(held), "held": True}}
    return {"vassal": api.entry(find(api, props["name"], "status"))}


@command()
def cmd_stats(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """The whole emperor-stats document (what ``emperor-stats = ADDR`` serves).

    Reply: ``{"stats": {...}}``.
    """
    return {"stats": api.document()}


@command(Param("name", "the vassal (app.ini or app)", required=False),
         Param("all", "reload every vassal (as SIGHUP does)", kind=bool, required=False, flag=True))
def cmd_reload(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """Gracefully reload one vassal (as touching its file does), or every vassal with ``--all``.

    A running vassal re-reads its ini and replaces its workers without dropping a request;
    a throttled or failed one is retried now. A reload also ends a runtime ``scale``: the
    ini's ``processes`` applies again. Give exactly one of ``name`` and ``all``.
    Reply: ``{"reloaded": [names]}``.
    """
    if bool(props["name"]) == bool(props["all"]):
        raise ControlError(Errno.MESSAGE_ERROR, "reload: give a vassal name or --all (not both)")
    if props["all"]:
        if api.shutting_down():
            raise ControlError(Errno.BAD_STATE, "reload: the emperor is shutting down")
        names = sorted(api.records())
        api.reload_all()
        return {"reloaded": names}
    name = find(api, props["name"], "reload")
    if not api.reload(name):
        raise ControlError(Errno.BAD_STATE, f"reload: {name} is {api.state(name)}")
    return {"reloaded": [name]}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_stop(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """Gracefully stop a vassal and keep it stopped until ``emperor ctl start``.

    In-flight requests finish (bounded by the emperor's reload-mercy). The file stays where
    it is; the emperor ignores it (even when it changes) until ``start`` or an emperor
    restart. Reply: ``{"stopping": name}``.
    """
    held = held_name(api, props["name"])
    if held is not None:
        raise ControlError(Errno.BAD_STATE, f"stop: {held} is already stopped (held until "
                           f"'emperor ctl start {held}')")
    name = find(api, props["name"], "stop")
    api.hold(name)
    return {"stopping": name}


@command(Param("name", "the vassal (app.ini or app)"))
def cmd_start(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """Start a vassal stopped with ``emperor ctl stop``, or retry a throttled or failed one now.

    Reply: ``{"starting": name}``. A vassal that is already running is an error (BAD_STATE);
    a name with no file in the vassal directories is UNKNOWN_VASSAL.
    """
    name = _known_name(api, props["name"])
    if name is None:
        raise ControlError(Errno.UNKNOWN_VASSAL, f"no vassal file named {props['name']!r}")
    if not api.start(name):
        now = api.state(name) if name in api.records() else "not startable"
        raise ControlError(Errno.BAD_STATE, f"start: {name} is {now}")
    return {"starting": name}


@command(Param("name", "the vassal (app.ini or app)"),
         Param("processes", "the new worker count", kind=int))
def cmd_scale(api: EmperorAPI, props: dict[str, Any]) -> Later:
    """Change a running vassal's worker count now, without a restart and without dropping a request.

    New workers are forked from the vassal's master; surplus ones (the highest numbers)
    get SIGTERM, finish their request and exit. Runtime only: any reload of the vassal
    (its file changes, ``emperor ctl reload``, SIGHUP) re-reads the ini, whose
    ``processes`` then applies again. The vassal accepts up to four times its ini's
    ``processes`` (at least 64); beyond that it refuses. Under ``cheaper`` the number is the
    ceiling (``processes``): the cheaper algorithm keeps choosing the count below it
    (docs/autoscaling.md).
    The reply waits for the vassal's answer (at most 3 s): ``{"scaled": name, "processes": N,
    "pid": master pid, "workers": running now, "workers_min": M, "workers_max": N}`` (the
    counts the vassal reported with its answer: running workers, cheaper's minimum and
    ceiling; without cheaper both are N, and new workers may still be starting), or the
    error REFUSED with the vassal's reason.
    """
    name = find(api, props["name"], "scale")
    count = props["processes"]
    if not 1 <= count <= MAX_PROCESSES:
        raise ControlError(Errno.MESSAGE_ERROR, f"scale: processes must be 1 to {MAX_PROCESSES} "
                           f"(got {count}); 'emperor ctl stop' stops a vassal")
    later = api.scale(name, count, SCALE_WAIT)
    if later is None:
        raise ControlError(Errno.BAD_STATE, f"scale: {name} is {api.state(name)}")
    return later


@command()
def cmd_zergs(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """The broodlord zerg pool: its size, the zergs lent and to whom.

    Reply: ``{"enabled": bool, "pool": {...}}``: the pool as broodlord describes it
    (``zergs_max``, ``zergs_busy``, ...), or ``enabled: false`` when broodlord is off.
    """
    pool = api.pool()
    return {"enabled": pool is not None, "pool": pool or {}}


@command(Param("name", "only this vassal's events", required=False), client_only=True)
def cmd_events(api: EmperorAPI, props: dict[str, Any]) -> dict[str, Any]:
    """Follow the event stream: one line per state change, lend, reclaim and throttle.

    The emperor replies with its PUB endpoint, ``{"endpoint": E}``; ``emperor ctl events``
    then subscribes to the topics ``vassal.<name>.<event>`` (all vassals, or ``name``) and
    prints each event as JSON until interrupted. Event bodies: ``{"vassal", "event",
    "pid", "state", "detail", "time"}``.
    """
    return {"endpoint": api.events_endpoint()}


def _dedent(text: str) -> str:
    lines = text.strip("\n").splitlines()
    if not lines:
        return ""
    rest = [ln for ln in lines[1:] if ln.strip()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in rest), default=0)
    return "\n".join([lines[0].strip(), *(ln[indent:] for ln in lines[1:])]).strip()
