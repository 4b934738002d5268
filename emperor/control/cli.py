"""``emperor ctl`` (also ``emperorctl``): the control plane's command line, generated from the registry.

The endpoint is, in order: ``--endpoint``, the ``emperor-control`` key of ``--ini
EMPEROR.INI`` (so the CLI finds the emperor the ini describes), ``$EMPEROR_CONTROL``, the
default ``ipc://`` path. Exit statuses: 0 done, 1 the emperor refused (error reply),
2 usage, 3 no emperor answered at the endpoint.
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
from emperor.control.protocol import ControlError, Errno


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emperor ctl", description="Control a running emperor.",
                                     allow_abbrev=False)
    parser.add_argument("--endpoint", "-e", help="the emperor's control endpoint (ipc:///path or "
                        "tcp://host:port); default: from --ini, $EMPEROR_CONTROL, or "
                        f"{protocol.default_endpoint()}")
    parser.add_argument("--ini", help="read the endpoint (emperor-control) from this emperor ini")
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


def resolve_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        configured: str | None = args.endpoint
    elif args.ini:
        from emperor import config
        from emperor.options import Scope

        try:
            cfg = config.from_args([("ini", args.ini)], Scope.EMPEROR)
        except config.ConfigError as exc:
            raise ControlError(Errno.MESSAGE_ERROR, f"--ini: {exc}") from None
        configured = cfg.emperor_control
    else:
        configured = os.environ.get("EMPEROR_CONTROL") or None
    try:
        endpoint = protocol.normalize(configured)
    except ValueError as exc:
        raise ControlError(Errno.MESSAGE_ERROR, str(exc)) from None
    if endpoint is None:
        raise ControlError(Errno.NO_EMPEROR, "the control plane is off (emperor-control = off)")
    return endpoint


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    cmd = REGISTRY[args.command]
    props = {p.name: getattr(args, p.name) for p in cmd.params if getattr(args, p.name) not in (None, False)}
    try:
        client = Client(resolve_endpoint(args), args.timeout)
        reply = client.call(cmd.name, **props)
        if cmd.client_only:
            return _follow(client, reply, props.get("name"))
    except ControlError as exc:
        print(f"emperor ctl: {exc.reason} (errno {int(exc.errno)} {exc.errno.name})", file=sys.stderr)
        return 3 if exc.errno == Errno.NO_EMPEROR else 1
    reply.pop("status", None)
    reply.pop("id", None)
    print(json.dumps(reply, indent=2) if args.json else _human(cmd, reply))
    return 0


def _follow(client: Client, reply: dict[str, Any], vassal: str | None) -> int:
    """``events``: print each event as one JSON line until Ctrl-C (or the pipe closes)."""
    try:
        for _topic, event in client.events(reply["endpoint"], vassal):
            print(json.dumps(event), flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return 0


def _human(cmd: Command, reply: dict[str, Any]) -> str:
    if cmd.name == "list":
        rows = [("VASSAL", "PID", "STATE", "LOYAL", "RESPAWNS", "THROTTLE", "LAST ERROR")]
        for v in reply["vassals"]:
            loyal = "yes" if v.get("loyal") else "no"
            rows.append((v["id"], str(v["pid"] or "-"), v.get("state", "?"), loyal,
                         str(v.get("respawns", 0)), f"{v.get('throttle_level', 0) / 1000:g}s",
                         str(v.get("last_error", ""))[:60]))
        for name in reply.get("held", []):
            if not any(v["id"] == name for v in reply["vassals"]):
                rows.append((name, "-", "held", "-", "-", "-", "stopped by emperor ctl stop"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
                         for r in rows).rstrip()
    if cmd.name == "status":
        return "\n".join(f"{k}: {v}" for k, v in reply["vassal"].items())
    return json.dumps(reply, indent=2)
