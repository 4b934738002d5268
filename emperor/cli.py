"""The ``emperor`` command line, generated from the option table.

``emperor --ini emperor.ini`` runs the emperor when the configuration has an ``emperor``
key, and a single vassal (master + workers) otherwise, as the ``uwsgi`` binary does.
``python -m emperor.vassal`` always runs a vassal; it is what the emperor execs.

Arguments keep their order: ``--ini`` files are spliced in where they appear and later
values override earlier ones, so ``emperor --ini app.ini --processes 4`` wins over the file.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from emperor.config import build_parser, parse_command_line, parse_pairs
from emperor.options import Scope

__all__ = ["build_parser", "main", "parse_pairs"]  # the parser itself lives in config.py


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
    pairs, check = parse_command_line(build_parser("emperor", Scope.ANY, check=True), args)
    if check:
        from emperor.check import check_command_line

        return check_command_line(pairs)
    if not pairs:
        build_parser("emperor", Scope.ANY).print_usage(sys.stderr)
        print("emperor: give --ini FILE, or --emperor DIR, or vassal options such as --socket",
              file=sys.stderr)
        return 2
    if _wants_emperor(pairs):
        from emperor.empire.main import run_emperor

        return run_emperor(pairs)
    from emperor.vassal.main import run_vassal  # the emperor never imports the vassal

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
