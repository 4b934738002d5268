"""What crosses a re-exec of the vassal's master: a graceful reload, and ``home`` (a venv's python).

A reload re-executes the master in place (same pid), so whatever must survive travels in the
environment: the listening sockets (``sockets.ENV_FDS``), parked keep-alive connections, the
emperor channel, the reload count, and the old workers still finishing with their deadline.
The new image takes them back at boot (``old_workers_from_env``). Before any of it, the new
configuration is checked (``refusal``): an invalid one, or one that changes the user, is
refused and the running configuration stays.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence

from emperor import channel, config, privileges, venv
from emperor.options import Scope
from emperor.vassal import parking, sockets

log = logging.getLogger("emperor.master")

ENV_RELOADS = "EMPEROR_RELOADS"
ENV_OLD_WORKERS = "EMPEROR_OLD_WORKERS"


def render_args(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """Turn (key, value) pairs back into a command line for the re-exec."""
    out: list[str] = []
    for key, value in pairs:
        out += [f"--{key}", value]
    return out


def refusal(name: str, pairs: list[tuple[str, str]], scope: Scope) -> str | None:
    """Why the configuration on disk cannot be reloaded into (logged), or None if it can."""
    try:
        privileges.plan(privileges.resolve(config.from_args(pairs, scope)), reloaded=True)
    except privileges.IdentityError as exc:
        why = f"{exc}; a reload cannot change the user: stop and start the vassal"
        log.error("%s: reload refused (still running the previous configuration): %s", name, why)
        return why
    except config.ConfigError as exc:
        log.error("%s: reload refused, the configuration is invalid (still running the previous "
                  "one): %s", name, exc)
        return str(exc)
    return None


def handover_env(listeners: list[sockets.Listener], lot: parking.ParkingLot | None, reloads: int,
                 old: dict[int, float], deadline: float, chan: socket.socket | None,
                 name: str) -> dict[str, str]:
    """The environment of the new master image: everything it inherits from this one."""
    env = dict(os.environ)
    env[sockets.ENV_FDS] = sockets.export(listeners)
    if lot is not None:
        env[parking.ENV] = lot.export()
    env[ENV_RELOADS] = str(reloads + 1)
    import json  # only for a reload: a cold start imports no JSON (docs/emperor.md#cold-start)

    env[ENV_OLD_WORKERS] = json.dumps({"pids": list(old), "deadline": deadline})
    if chan is not None:
        chan.set_inheritable(True)
        env[channel.ENV_FD] = str(chan.fileno())
        env[channel.ENV_NAME] = name
    return env


def reexec(pairs: list[tuple[str, str]], env: dict[str, str]) -> None:
    """Replace this process with a fresh master; returns only by raising OSError."""
    argv = [*venv.self_command(), *render_args(pairs)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)


def old_workers_from_env() -> dict[int, float]:
    """The previous image's workers still finishing: pid -> kill deadline (after a reload)."""
    raw = os.environ.pop(ENV_OLD_WORKERS, "")
    if not raw:
        return {}
    import json  # only after a reload

    try:
        data = json.loads(raw)
        return {int(p): float(data["deadline"]) for p in data["pids"]}
    except (ValueError, KeyError, TypeError):
        log.error("ignoring malformed %s", ENV_OLD_WORKERS)
        return {}


def enter_venv(cfg: config.Config, pairs: list[tuple[str, str]], chan: socket.socket | None) -> None:
    """``home``: re-execute under the venv's own python unless already running from it (emperor/venv.py)."""
    home = cfg.home
    assert home is not None  # the caller enters only when home is set
    try:
        python = venv.check(home)
    except venv.VenvError as exc:
        e = cfg.sources.get("home")
        raise config.ConfigError(str(exc), e.file if e else "", e.line if e else 0,
                                 e.key if e else "home") from None
    if venv.running_in(home):
        return
    env = dict(os.environ)
    if chan is not None:
        chan.set_inheritable(True)
        env[channel.ENV_FD] = str(chan.fileno())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(python, [*venv.command(python), *render_args(pairs)], env)
    except OSError as exc:
        raise config.ConfigError(f"home {cfg.home}: cannot run {python}: {exc.strerror}") from None

