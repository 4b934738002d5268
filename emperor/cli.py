"""The ``emperor`` command line, generated from the option table.

``emperor --ini emperor.ini`` runs the emperor when the configuration has an ``emperor``
key, and a single vassal (master + workers) otherwise, as the ``uwsgi`` binary does.
``python -m emperor.vassal`` always runs a vassal; it is what the emperor execs.

Arguments keep their order: ``--ini`` files are spliced in where they appear and later
values override earlier ones, so ``emperor --ini app.ini --processes 4`` wins over the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from emperor import __version__
from emperor.options import ALL, Option, Scope


class _Ordered(argparse.Action):
    """Record (option name, raw value) in command-line order."""

    def __init__(self, option: Option, **kwargs: Any) -> None:
        self.option = option
        super().__init__(**kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        pairs = getattr(namespace, "pairs", None) or []
        pairs.append((self.option.name, "true" if values is None else str(values)))
        namespace.pairs = pairs


def build_parser(prog: str, scope: Scope, check: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="uWSGI-style emperor and uwsgi-protocol WSGI server. "
        "Every option can also be written as 'key = value' in the [uwsgi] section of an ini file. "
        "'emperor check FILE...' checks files without starting anything; 'emperor ctl' controls "
        "a running emperor; 'emperor upstreams' renders the fleet's etcd keys for nginx.", allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"emperor {__version__}")
    if check:
        parser.add_argument("--check", action="store_true",
                            help="load the configuration as it would run, print every error and warning "
                            "and a verdict, start nothing (exit 0 when it can run, 78 when not)")
    parser.add_argument("configs", nargs="*", metavar="FILE.ini",
                        help="ini files, the same as --ini FILE.ini")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in ALL:
        if not (opt.scope & scope):
            continue
        group = groups.get(opt.group) or parser.add_argument_group(opt.group)
        groups[opt.group] = group
        flags = [f"--{opt.name}", *(f"--{a}" for a in opt.aliases)]
        if opt.short:
            flags.insert(0, f"-{opt.short}")
        extra: dict[str, Any] = {"nargs": "?"} if opt.flag else {}
        default = "" if opt.default is None else f" (default: {opt.default})"
        group.add_argument(*flags, action=_Ordered, option=opt, dest=f"opt_{opt.attr}",
                           metavar=opt.metavar, help=(opt.help + default).replace("%", "%%"), **extra)
    return parser


def parse_pairs(argv: Sequence[str], prog: str, scope: Scope) -> list[tuple[str, str]]:
    return _parse(build_parser(prog, scope), argv)[0]


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[tuple[str, str]], bool]:
    ns = parser.parse_args(list(argv))
    pairs: list[tuple[str, str]] = [("ini", c) for c in ns.configs]
    pairs.extend(getattr(ns, "pairs", None) or [])
    return pairs, bool(getattr(ns, "check", False))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        from emperor.control.cli import main as ctl_main  # issue 5

        return ctl_main(args[1:])
    if args[:1] == ["upstreams"]:
        from emperor.upstreams import main as upstreams_main  # docs/fleet.md

        return upstreams_main(args[1:])
    if args[:1] == ["check"]:
        from emperor.check import main as check_main

        return check_main(args[1:])
    pairs, check = _parse(build_parser("emperor", Scope.ANY, check=True), args)
    if check:
        from emperor.check import check_command_line

        return check_command_line(pairs)
    if not pairs:
        build_parser("emperor", Scope.ANY).print_usage(sys.stderr)
        print("emperor: give --ini FILE, or --emperor DIR, or vassal options such as --socket",
              file=sys.stderr)
        return 2
    if _wants_emperor(pairs):
        from emperor.empire.emperor import run_emperor

        return run_emperor(pairs)
    from emperor.vassal.master import run_vassal  # the emperor never imports the vassal

    return run_vassal(pairs)


def _wants_emperor(pairs: list[tuple[str, str]]) -> bool:
    """True when the command line or one of its ini files sets the ``emperor`` key."""
    from emperor import ini

    for key, value in pairs:
        if key == "emperor":
            return True
        if key == "ini":
            try:
                if any(e.key == "emperor" for e in ini.load(value)):
                    return True
            except ini.IniError:
                return False  # the vassal path reports the error with file and line
    return False
