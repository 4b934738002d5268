"""The emperor's configuration, resolved from the option table (absolute paths, seconds).

Defaults are read from the option table (``Option.default_for(Scope.EMPEROR)``), never
restated, so the CLI help, the reference page and the emperor cannot disagree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from emperor import config, etcdkv, privileges
from emperor.control.protocol import Identity
from emperor.empire import etcdsource, fleet, ondemand, scan, spawn
from emperor.options import Scope, lookup


def _default(key: str, scale: float = 1.0) -> Any:
    """An option's emperor default, from the option table (emperor/options.py): never restated here."""
    opt = lookup(key)
    assert opt is not None, key
    value = opt.default_for(Scope.EMPEROR)
    return value / scale if scale != 1.0 else value


@dataclass
class Settings:
    """The emperor's configuration, resolved (absolute paths, seconds)."""

    sources: list[scan.Source | etcdsource.EtcdSource]
    mercy: float = float(_default("reload-mercy"))
    freq: float = float(_default("emperor-freq"))
    throttle: float = _default("emperor-throttle", 1000)  # ms in the table
    max_throttle: float = _default("emperor-max-throttle", 1000)
    tyrant: bool = _default("emperor-tyrant")
    template: bool = _default("emperor-template")  # fork vassals from a template (emperor/empire/template.py)
    vassal_before: list[str] = field(default_factory=list)
    vassal_includes: list[str] = field(default_factory=list)
    logto: str | None = None
    touch_logreopen: str | None = None
    stats: str | None = None  # emperor-stats, stats-http, emperor-control (emperor/empire/operator.py)
    stats_http: bool = _default("stats-http")
    control: str | None = None
    broodlord: int = _default("emperor-broodlord")  # the zerg pool
    required_heartbeat: float = float(_default("emperor-required-heartbeat"))
    identity: Identity | None = None  # names the default control endpoint (emperor/control/protocol.py)
    ident: privileges.Identity = field(default_factory=privileges.Identity)  # uid/gid: dropped after binding
    on_demand: ondemand.Modes = field(default_factory=ondemand.Modes)  # emperor-on-demand-*
    fleet: fleet.FleetSettings | None = None  # emperor-etcd (docs/fleet.md)

    @classmethod
    def from_config(cls, cfg: config.Config, cwd: str) -> Settings:
        if not cfg.emperor:
            raise config.ConfigError("no vassal directory: set emperor = DIR (or a glob)", key="emperor")
        fleet_settings, sources = fleet_config(cfg, cwd)
        if cfg.emperor_tyrant and os.geteuid() != 0:
            raise config.ConfigError("tyrant mode needs root (it runs each vassal as its file's owner)",
                                     cfg.where("emperor-tyrant"), key="emperor-tyrant")
        ident = privileges.resolve(cfg)
        if cfg.emperor_tyrant and ident.drops:
            raise config.ConfigError("emperor-tyrant needs the emperor to stay root: remove uid/gid from "
                                     "the emperor's configuration", cfg.where("emperor-tyrant"),
                                     key="emperor-tyrant")
        if ident.drops and os.geteuid() != 0:
            raise config.ConfigError("the emperor can switch to uid/gid only when started as root",
                                     cfg.where("uid" if ident.uid is not None else "gid"), key="uid")
        return cls(
            stats=cfg.emperor_stats, stats_http=cfg.stats_http, control=cfg.emperor_control,
            sources=sources, freq=max(0.1, cfg.emperor_freq), throttle=cfg.emperor_throttle / 1000,
            max_throttle=max(cfg.emperor_max_throttle, cfg.emperor_throttle) / 1000,
            tyrant=cfg.emperor_tyrant, template=cfg.emperor_template,
            vassal_before=spawn.vassal_set_args(cfg.vassal_set),
            vassal_includes=[os.path.join(cwd, p) for p in cfg.vassals_include], mercy=cfg.reload_mercy,
            logto=cfg.logto or cfg.daemonize, touch_logreopen=cfg.touch_logreopen,
            broodlord=cfg.emperor_broodlord, required_heartbeat=cfg.emperor_required_heartbeat,
            identity=Identity.of_config(cfg.files, cfg.emperor, cwd), ident=ident,
            on_demand=_on_demand_modes(cfg, cwd), fleet=fleet_settings)


def fleet_config(cfg: config.Config, cwd: str) -> tuple[fleet.FleetSettings | None,
                                                       list[scan.Source | etcdsource.EtcdSource]]:
    """The emperor-etcd settings and the sources (directories, globs, etcd:// prefixes)."""
    tls = etcdkv.Tls(cfg.emperor_etcd_ca, cfg.emperor_etcd_cert, cfg.emperor_etcd_key)
    sources: list[scan.Source | etcdsource.EtcdSource] = []
    for spec in cfg.emperor:
        try:
            if etcdsource.is_etcd_spec(spec):
                if cfg.emperor_tyrant:
                    raise ValueError(f"{spec!r}: an etcd key has no owner to run it as; tyrant mode "
                                     "takes its vassals from files only")
                etcdkv.require_client()
                sources.append(etcdsource.EtcdSource(spec, cwd, tls))
            else:
                sources.append(scan.Source.parse(spec, cwd))
        except ValueError as exc:
            raise config.ConfigError(str(exc), cfg.where("emperor"), key="emperor") from None
    if not cfg.emperor_etcd:
        return None, sources
    try:
        etcdkv.require_client()
    except ValueError as exc:
        raise config.ConfigError(str(exc), cfg.where("emperor-etcd"), key="emperor-etcd") from None
    return fleet.FleetSettings(etcdkv.parse_endpoints(cfg.emperor_etcd), cfg.emperor_etcd_prefix,
                               cfg.emperor_etcd_ttl, cfg.emperor_etcd_advertise, tls), sources


def _on_demand_modes(cfg: config.Config, cwd: str) -> ondemand.Modes:
    """emperor-on-demand-*: the directory must exist (a typo would make every vassal fail to bind)."""
    directory = cfg.emperor_on_demand_directory
    if directory:
        directory = os.path.join(cwd, directory)
        if not os.path.isdir(directory):
            key = "emperor-on-demand-directory"
            raise config.ConfigError(f"{directory} is not a directory", cfg.where(key), key=key)
    return ondemand.Modes(cfg.emperor_on_demand_extension, directory, cfg.emperor_on_demand_exec)
