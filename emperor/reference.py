"""Generate docs/reference/options.md from the option table (``python -m emperor.reference``).

The page is derived, never edited by hand; tests/test_options.py fails when the committed
file differs from what this module produces.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from emperor import validators as v
from emperor.options import IGNORED, OPTIONS, UNSUPPORTED, Option, Scope

_TYPES: dict[Callable[[str], Any], str] = {
    v.boolean: "boolean", v.text: "string", v.nonempty: "string", v.seconds: "seconds",
    v.octal_mode: "octal mode", v.env_assignment: "KEY=VALUE", v.python_callable_ref: "module[:callable]",
}
_GROUPS = {
    "config": "Loading configuration", "sockets": "Sockets and the uwsgi protocol",
    "app": "The application", "processes": "Processes, recycling and reloads",
    "logging": "Logging, pidfiles and process titles", "emperor": "The emperor",
    "http": "HTTP listeners (docs/http.md)", "static": "Static files (docs/http.md)",
}


def type_name(opt: Option) -> str:
    name = _TYPES.get(opt.convert)
    if name is None:
        name = (opt.convert.__doc__ or "value").split("\n")[0]
    return name + (", repeatable" if opt.multi else "")


def scopes(opt: Option) -> str:
    parts = [s.name.lower() for s in (Scope.EMPEROR, Scope.VASSAL, Scope.ZERG) if s in opt.scope and s.name]
    return ", ".join(parts)


def render() -> str:
    out = ["# Options reference", "",
           "Generated from `emperor/options.py` by `python -m emperor.reference`; do not edit.", "",
           "Every option can be written as `key = value` in an ini file (section `[uwsgi]` unless "
           "`file.ini:section` says otherwise) or given on the command line as `--key value`. "
           "Repeatable options accumulate in order; for the others the last value wins. "
           "*Where* says which configurations accept the option: the emperor's ini, a vassal's, "
           "or a vassal's `[zerg]` section.", ""]
    groups: dict[str, list[Option]] = {}
    for opt in OPTIONS:
        groups.setdefault(opt.group, []).append(opt)
    for group, opts in groups.items():
        out += [f"## {_GROUPS.get(group, group.capitalize())}", "",
                "| option | type | default | where | meaning |", "|---|---|---|---|---|"]
        for opt in opts:
            names = f"`{opt.name}`" + "".join(f"<br>`{a}`" for a in opt.aliases)
            if opt.short:
                names += f"<br>`-{opt.short}`"
            default = "" if opt.default is None or opt.multi else f"`{_fmt(opt.default)}`"
            text = opt.help.replace("%%", "%").replace("|", "\\|").replace("\n", " ")
            out.append(f"| {names} | {type_name(opt)} | {default} | {scopes(opt)} | {text} |")
        out.append("")
    out += ["## uWSGI options that are refused", "",
            "These uWSGI options stop the configuration with an error rather than being silently "
            "ignored:", "", "| option | why |", "|---|---|"]
    out += [f"| `{k}` | {why} |" for k, why in sorted(UNSUPPORTED.items())]
    out += ["", "## uWSGI options that are accepted and ignored", "", "| option | why |", "|---|---|"]
    out += [f"| `{k}` | {why} |" for k, why in sorted(IGNORED.items())]
    return "\n".join(out) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else '""'


if __name__ == "__main__":
    sys.stdout.write(render())
