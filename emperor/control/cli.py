"""``emperor ctl`` (also ``emperorctl``): the control plane's command line, generated from the registry.

The endpoint is, in order: ``--endpoint``, the ``emperor-control`` key of ``--ini
EMPEROR.INI`` or that emperor's default endpoint (so the CLI finds the emperor the ini
describes), ``$EMPEROR_CONTROL``, else the one default endpoint of this user's running
emperors (with several, ``--ini`` is required). With ``--ini``, the request names that
emperor's identity and an emperor with another one refuses it (WRONG_EMPEROR): a shared or
mistyped endpoint never acts on another emperor's vassals. Exit statuses: 0 done, 1 the
emperor (or the vassal) refused (error reply), 2 usage, 3 no emperor answered at the endpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from emperor.control import protocol
from emperor.control.client import Client
from emperor.control.commands import REGISTRY, Command
from emperor.control.protocol import ControlError, Errno, Identity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emperor ctl", description="Control a running emperor.",
                                     allow_abbrev=False)
    parser.add_argument("--endpoint", "-e", help="the emperor's control endpoint (ipc:///path or "
                        "tcp://host:port); default: from --ini, $EMPEROR_CONTROL, or the one emperor "
                        f"of yours running with a default endpoint (in {protocol.runtime_dir()})")
    parser.add_argument("--ini", help="the emperor's ini: its endpoint, and the emperor that must answer")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply (default 5)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON reply")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in REGISTRY.values():
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the JSON reply")
        for param in cmd.params:
            if param.flag:
                p.add_argument(f"--{param.name}", action="store_true", help=param.help)
            else:
                p.add_argument(param.name, type=param.kind, help=param.help,
                               nargs=None if param.required else "?")
    return parser


def resolve_endpoint(args: argparse.Namespace) -> tuple[str, Identity | None]:
    """(endpoint, the identity of the emperor that must answer: known only with ``--ini``)."""
    identity: Identity | None = None
    if args.ini:
        from emperor import config
        from emperor.options import Scope

        try:
            cfg = config.from_args([("ini", args.ini)], Scope.EMPEROR)
        except config.ConfigError as exc:
            raise ControlError(Errno.MESSAGE_ERROR, f"--ini: {exc}") from None
        identity = Identity.of_config(cfg.files, cfg.emperor, os.getcwd())
    if args.endpoint:
        configured: str | None = args.endpoint
    elif identity is not None:
        configured = cfg.emperor_control
    else:
        configured = os.environ.get("EMPEROR_CONTROL") or None
        if configured is None:
            return _the_running_emperor(), None
    try:
        endpoint = protocol.normalize(configured, identity.key if identity else None)
    except ValueError as exc:
        raise ControlError(Errno.MESSAGE_ERROR, str(exc)) from None
    if endpoint is None:
        raise ControlError(Errno.NO_EMPEROR, "the control plane is off (emperor-control = off)")
    return endpoint, identity


def _the_running_emperor() -> str:
    """Without --ini/--endpoint: the default endpoint of this user's only running emperor."""
    found = protocol.running_defaults()
    if len(found) == 1:
        return found[0]
    if not found:
        raise ControlError(Errno.NO_EMPEROR, f"no emperor of yours is running with a default endpoint "
                           f"(nothing listens in {protocol.runtime_dir()}); give --ini EMPEROR.INI or "
                           "--endpoint")
    raise ControlError(Errno.MESSAGE_ERROR, f"{len(found)} emperors of yours are running: say which with "
                       f"--ini EMPEROR.INI (or --endpoint: {', '.join(found)})")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cmd = REGISTRY[args.command]
    props = {p.name: getattr(args, p.name) for p in cmd.params
             if getattr(args, p.name) is not None and getattr(args, p.name) is not False}
    try:
        endpoint, identity = resolve_endpoint(args)
        client = Client(endpoint, args.timeout, identity.key if identity else None)
        reply = client.call(cmd.name, **props)
        if cmd.client_only:
            return _follow(client, reply, props.get("name"))
    except ControlError as exc:
        print(f"emperor ctl: {exc.reason} (errno {int(exc.errno)} {exc.errno.name})", file=sys.stderr)
        return 3 if exc.errno == Errno.NO_EMPEROR else 1
    reply.pop("status", None)
    reply.pop("id", None)
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    reply.pop("emperor", None)
    print(_human(cmd, reply))
    return 0


def _follow(client: Client, reply: dict[str, Any], vassal: str | None) -> int:
    """``events``: print each event as one JSON line until Ctrl-C (or the pipe closes)."""
    try:
        for _topic, event in client.events(reply["endpoint"], vassal):
            print(json.dumps(event), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


def _workers(v: dict[str, Any]) -> str:
    """``3 (1-8)``: running workers and the range cheaper keeps them in; ``4`` without cheaper."""
    cur, low, high = v.get("workers", 0), v.get("workers_min", 0), v.get("workers_max", 0)
    if not high:
        return "-"  # the vassal has not said yet
    return str(cur) if low == high else f"{cur} ({low}-{high})"


def _scaled(reply: dict[str, Any]) -> str:
    """What a scale set and what runs when the vassal answered: under cheaper the number is the
    ceiling and cheaper keeps choosing the count; without it, new workers are still starting
    (and surplus ones finishing) when the answer comes."""
    name, asked, pid = reply["scaled"], reply["processes"], reply["pid"]
    cur, low, high = reply.get("workers"), reply.get("workers_min"), reply.get("workers_max")
    tail = f"master pid {pid}; until its next reload"
    if cur is None or not high:  # an emperor that does not send the counts
        return f"scaled: {name} to {asked} worker(s) ({tail})"
    if low != high:
        return (f"scaled: {name}: ceiling set to {asked} worker(s); cheaper keeps {low} to {high}, "
                f"{cur} running now ({tail})")
    running = "" if cur == asked else f", {cur} running when it answered, the others " + \
        ("starting" if cur < asked else "finishing their request")
    return f"scaled: {name} to {asked} worker(s){running} ({tail})"


def _human(cmd: Command, reply: dict[str, Any]) -> str:
    if cmd.name == "list":
        rows = [("VASSAL", "PID", "STATE", "LOYAL", "WORKERS", "RESPAWNS", "THROTTLE", "LAST ERROR")]
        for v in reply["vassals"]:
            loyal = "yes" if v.get("loyal") else "no"
            rows.append((v["id"], str(v["pid"] or "-"), v.get("state", "?"), loyal, _workers(v),
                         str(v.get("respawns", 0)), f"{v.get('throttle_level', 0) / 1000:g}s",
                         str(v.get("last_error", ""))[:60]))
        for name in reply.get("held", []):
            if not any(v["id"] == name for v in reply["vassals"]):
                rows.append((name, "-", "held", "-", "-", "-", "-", "stopped by emperor ctl stop"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
                         for r in rows).rstrip()
    if cmd.name == "status":
        return "\n".join(f"{k}: {v}" for k, v in reply["vassal"].items())
    if cmd.name == "reload":
        return f"reloading: {', '.join(reply['reloaded']) or 'no vassal'}"
    if cmd.name == "stop":
        name = reply["stopping"]
        return f"stopping: {name} (held stopped until 'emperor ctl start {name}')"
    if cmd.name == "start":
        return f"starting: {reply['starting']}"
    if cmd.name == "scale":
        return _scaled(reply)
    return json.dumps(reply, indent=2)
