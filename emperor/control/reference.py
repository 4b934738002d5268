"""Generate docs/reference/commands.md from the command registry (``python -m emperor.control.reference``).

Derived, never edited by hand: tests/test_control.py fails when the committed page differs.
"""

from __future__ import annotations

import sys

from emperor.control.commands import REGISTRY, Command
from emperor.control.protocol import MAX_MESSAGE, TRANSPORT_LIMIT, Errno


def usage(cmd: Command) -> str:
    parts = ["emperor ctl", cmd.name]
    for p in cmd.params:
        if p.flag:
            parts.append(f"[--{p.name}]")
        elif p.required:
            parts.append(p.name.upper())
        else:
            parts.append(f"[{p.name.upper()}]")
    return " ".join(parts)


def render() -> str:
    out = ["# Control commands reference", "",
           "Generated from `emperor/control/commands.py` by `python -m emperor.control.reference`; "
           "do not edit.", "",
           "`emperor ctl [--endpoint E | --ini EMPEROR.INI] [--timeout S] [--json] COMMAND ...` sends one "
           "request to the emperor's control endpoint (`emperor-control`) and prints the reply. Exit "
           "status: 0 done, 1 the emperor refused (error reply), 2 usage, 3 no emperor answered.", "",
           "## Wire format", "",
           "One ZMQ frame of JSON to the ROUTER socket: `{\"id\": ..., \"command\": NAME, \"properties\": "
           "{...}}`. Reply: `{\"id\", \"status\": \"ok\", ...}` or `{\"id\", \"status\": \"error\", "
           "\"errno\", \"reason\"}`. Events: the PUB socket sends two frames, the topic "
           "`vassal.<name>.<event>` and a JSON body.", "",
           f"A request over {MAX_MESSAGE} bytes gets a `TOO_LARGE` error reply without being parsed; "
           f"one over {TRANSPORT_LIMIT} bytes never reaches the emperor's memory: ZMQ (`MAXMSGSIZE`) "
           "drops the connection, and `emperor ctl` reports `TOO_LARGE`.", "",
           "| errno | name |", "|---|---|"]
    out += [f"| {int(e)} | `{e.name}` |" for e in Errno]
    out.append("")
    for cmd in REGISTRY.values():
        out += [f"## `{cmd.name}`", "", "```", usage(cmd), "```", "", cmd.doc, ""]
        if cmd.params:
            out += ["| property | type | required | meaning |", "|---|---|---|---|"]
            for p in cmd.params:
                out.append(f"| `{p.name}` | {p.kind.__name__} | {'yes' if p.required else 'no'} | {p.help} |")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
