"""The emperor's stats: uWSGI's emperor JSON (uwsgitop shows it) plus our own fields, and Prometheus text.

Built from the vassal records (``Vassal.snapshot``) and, when broodlord is on, whatever the
pool exposes (the emperor's ``broodlord_snapshot()`` and ``zerg_counts(name)``, if it has them):
read only, never raising for a missing field, so this module does not have to change
every time a record grows. Times in the records are monotonic; the document gives epochs,
as uWSGI does. Every number is an integer (uwsgi_exporter's rule).

The same document answers ``emperor ctl list``/``status``, so the control plane and the
stats socket can never disagree. What it reads of the emperor is named by ``Governor`` (the
``Emperor`` satisfies it; this module does not import it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from emperor import __version__
from emperor.statsserver import StatsServer

if TYPE_CHECKING:
    from emperor.empire.vassals import Vassal

log = logging.getLogger("emperor.stats")


class Named(Protocol):
    """A vassal source as the stats name it (a directory, a glob, an etcd:// prefix)."""

    @property
    def path(self) -> str: ...


class Settings(Protocol):
    @property
    def sources(self) -> Sequence[Named]: ...

    @property
    def tyrant(self) -> bool: ...


class Governor(Protocol):
    """What the stats read of the emperor: its records, its refused names, its settings, its clock
    (and, when broodlord is on, ``broodlord_snapshot()``, looked up by name)."""

    @property
    def vassals(self) -> Mapping[str, Vassal]: ...

    @property
    def refused(self) -> Mapping[str, str]: ...

    @property
    def s(self) -> Settings: ...

    def clock(self) -> float: ...


def _epoch(emp: Governor, mono: float) -> int:
    """A monotonic time of the emperor's clock as an epoch (0 stays 0: "never")."""
    if not mono:
        return 0
    return int(time.time() - (emp.clock() - mono))


def _integers(value: Any) -> Any:
    """Floats -> ints, recursively: every figure in the document is a JSON integer."""
    if isinstance(value, float):
        return int(value)
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_integers(v) for v in value]
    return value


def pool(emp: Governor) -> dict[str, Any] | None:
    """The broodlord pool as its owner describes it, or None when broodlord is off (or absent)."""
    snap = getattr(emp, "broodlord_snapshot", None)
    if not callable(snap):
        return None
    try:
        data = snap()
    except Exception:  # another module's bug must not break stats
        log.exception("stats: broodlord snapshot failed")
        return None
    if not isinstance(data, dict) or not data.get("pool"):
        return None
    data.setdefault("zergs_max", data.get("pool", 0))
    data.setdefault("zergs_busy", data.get("alive", 0))
    return data


def vassal(emp: Governor, v: Vassal) -> dict[str, Any]:
    """One vassal: uWSGI's keys first, then ours (state, last_error, throttle, zergs)."""
    counts = getattr(emp, "zerg_counts", None)  # the zerg table's figures (emperor/empire/zergs.py)
    snap = v.snapshot(emp.clock(), counts(v.name) if callable(counts) else None)
    try:
        born = int(os.stat(v.path).st_mtime)
    except OSError:
        born = 0
    ready = bool(snap.get("ready"))
    doc: dict[str, Any] = {
        "id": v.name,
        "pid": snap.get("pid", 0),
        "born": born,
        "last_mod": born,
        "last_heartbeat": _epoch(emp, getattr(v, "heartbeat_at", 0.0)),
        "loyal": snap.get("loyal", 0),
        "ready": int(ready),
        "accepting": int(ready),
        "last_loyal": 0,
        "last_ready": _epoch(emp, getattr(v, "ready_at", 0.0)),
        "last_accepting": _epoch(emp, getattr(v, "ready_at", 0.0)),
        "first_run": _epoch(emp, getattr(v, "spawned_at", 0.0)),
        "last_run": _epoch(emp, getattr(v, "spawned_at", 0.0)),
        "cursed": 0,
        "zerg": int(bool(snap.get("zerg", 0))),
        "on_demand": "",
        "uid": snap.get("uid", 0),
        "gid": snap.get("gid", 0),
        "monitor": "",
        "respawns": snap.get("respawns", 0),
    }
    for key, value in snap.items():
        doc.setdefault(key, value)
    doc["next_attempt_in_ms"] = int(float(snap.get("next_attempt_in", 0) or 0) * 1000)
    doc.pop("next_attempt_in", None)
    doc.setdefault("zergs", 0)
    return doc


def document(emp: Governor) -> dict[str, Any]:
    vassals = [vassal(emp, v) for v in sorted(emp.vassals.values(), key=lambda v: v.name)]
    blacklist = [{"id": d["id"], "throttle_level": d.get("throttle_level", 0), "attempt": d.get("attempt", 0),
                  "first_attempt": 0, "last_attempt": d["last_run"]}
                 for d in vassals if d.get("state") in ("throttled", "failed")]
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    doc: dict[str, Any] = {
        "version": __version__,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cwd": cwd,
        "emperor": [s.path for s in emp.s.sources],
        "emperor_tyrant": int(emp.s.tyrant),
        "throttle_level": 0,
        "vassals": vassals,
        "blacklist": blacklist,
        # a refused name may hold undecodable bytes (surrogate escapes): shown as \xNN, not as a
        # lone surrogate that strict JSON readers reject
        "refused": [{"id": os.fsencode(name).decode("utf-8", "backslashreplace"), "reason": why}
                    for name, why in sorted(emp.refused.items())],
    }
    brood = pool(emp)
    if brood is not None:
        doc["broodlord"] = brood
        for key in ("zergs_max", "zergs_busy"):
            if key in brood:
                doc[key] = brood[key]
    fleet = getattr(emp, "fleet", None)
    if fleet is not None and fleet.registrar is not None:  # emperor-etcd (docs/fleet.md)
        doc["fleet"] = fleet.registrar.snapshot()
    return _integers(doc)


def render(emp: Governor) -> bytes:
    return json.dumps(document(emp), indent="\t").encode() + b"\n"


def metrics(emp: Governor) -> tuple[str, bytes]:
    """Prometheus text: vassals by state, respawns, throttle, loyalty, and the zerg pool."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    doc = document(emp)

    class _Collector:
        def collect(self) -> list[Any]:
            states: dict[str, int] = {}
            for d in doc["vassals"]:
                states[d.get("state", "new")] = states.get(d.get("state", "new"), 0) + 1
            by_state = GaugeMetricFamily("emperor_vassals", "Vassals by state.", labels=["state"])
            for state in ("starting", "ready", "loyal", "reloading", "stopping", "throttled", "failed"):
                by_state.add_metric([state], states.get(state, 0))
            respawns = CounterMetricFamily("emperor_vassal_respawns", "Times the emperor respawned the "
                                           "vassal.", labels=["vassal"])
            throttle = GaugeMetricFamily("emperor_vassal_throttle_seconds", "Current respawn delay of a "
                                         "crashing vassal (0 = not throttled).", labels=["vassal"])
            loyal = GaugeMetricFamily("emperor_vassal_loyal", "1 once the vassal has served a request.",
                                      labels=["vassal"])
            zergs = GaugeMetricFamily("emperor_vassal_zergs", "Zergs lent to the vassal now.",
                                      labels=["vassal"])
            for d in doc["vassals"]:
                respawns.add_metric([d["id"]], d["respawns"])
                throttle.add_metric([d["id"]], d.get("throttle_level", 0) / 1000)
                loyal.add_metric([d["id"]], d["loyal"])
                zergs.add_metric([d["id"]], d.get("zergs", 0) if isinstance(d.get("zergs"), int) else 0)
            out: list[Any] = [by_state, respawns, throttle, loyal, zergs]
            brood = doc.get("broodlord") or {}
            for key, help_ in (("zergs_max", "Size of the zerg pool."),
                               ("zergs_busy", "Zergs lent out now.")):
                if isinstance(brood.get(key), int):
                    g = GaugeMetricFamily(f"emperor_{key}", help_)
                    g.add_metric([], brood[key])
                    out.append(g)
            return out

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())  # type: ignore[arg-type]
    return "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)


def open_server(emp: Governor, address: str, http: bool) -> StatsServer:
    """``emperor-stats = ADDR``; raises OSError or ValueError when it cannot be served (a boot error)."""
    server = StatsServer(address, lambda: render(emp), http=http, render_metrics=lambda: metrics(emp))
    log.info("stats: emperor stats on %s", server.describe())
    return server
