"""``emperor check FILE...``: would these files run? Every problem at once, nothing started.

Each file is loaded exactly as ``emperor --ini FILE`` would load it (the same reader, the same
option table, the same scope: an emperor file when it sets ``emperor``, a ``[zerg]`` section
when asked for ``file.ini:zerg``, a vassal otherwise). Then the checks that would otherwise
fail at start-up are made without side effects: socket addresses are parsed (not bound),
``chdir`` and ``wsgi-file`` must exist, an emperor's vassal directories must exist. The
application is never imported, so checking an untrusted file runs none of its code.

An emperor file brings its vassals along: each vassal file it would run is checked with the
``vassal-set`` values and ``vassals-include`` files the emperor would give it.

The output is one ``file:line: key: message`` line per problem (warnings say ``warning:``),
then one verdict line per file; the exit status is 0 when every file can run and 78
(EX_CONFIG, what a vassal with a bad config exits with) otherwise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from emperor import addresses, config, ini
from emperor.config import Problem
from emperor.options import Scope

EXIT_OK = 0
EXIT_CONFIG = 78


def scope_of(pairs: Sequence[tuple[str, str]], environ: Mapping[str, str] | None = None) -> Scope:
    """The configuration ``pairs`` describe, decided the way ``emperor`` decides it."""
    for key, value in pairs:
        if key == "emperor":
            return Scope.EMPEROR
        if key == "ini":
            try:
                if any(e.key == "emperor" for e in ini.load(value, environ=environ)):
                    return Scope.EMPEROR
            except ini.IniError:
                pass  # reported by the full load
    if any(k == "ini" and v.rpartition(":")[2] == "zerg" for k, v in pairs):
        return Scope.ZERG
    return Scope.VASSAL


def check_pairs(pairs: Sequence[tuple[str, str]], environ: Mapping[str, str] | None = None,
                label: str = "") -> list[Problem]:
    """Every error and warning for the configuration ``pairs`` (command-line order)."""
    scope = scope_of(pairs, environ)
    try:
        cfg = config.from_args(pairs, scope, environ)
    except config.ConfigError as exc:
        return exc.problems
    return cfg.problems + _startup_checks(cfg, scope, label)


def _startup_checks(cfg: config.Config, scope: Scope, label: str) -> list[Problem]:
    """What start-up would refuse, found without binding, importing or starting anything."""
    found: list[Problem] = []

    def err(key: str, message: str) -> None:
        e = cfg.sources.get(key.replace("-", "_"))
        found.append(Problem(e.file if e else label, e.line if e else 0, key, message))

    if scope is Scope.EMPEROR:
        from emperor.empire.emperor import Settings

        try:
            Settings.from_config(cfg, os.getcwd())
        except config.ConfigError as exc:
            found.extend(p for p in exc.problems if p.error)
        return found
    https = [spec.split(",", 1)[0] for spec in cfg.https_socket or []]
    if not (cfg.socket or cfg.zerg or cfg.http_socket or cfg.http or https):
        found.append(Problem(label, 0, "socket", "no socket configured: set socket = /path/app.sock or "
                             "127.0.0.1:PORT, or http-socket = 127.0.0.1:PORT"))
    for key, addrs in (("socket", cfg.socket), ("http-socket", cfg.http_socket), ("http", cfg.http),
                       ("https-socket", https)):
        for addr in addrs or []:
            try:
                addresses.parse(addr)
            except ValueError as exc:
                err(key, f"bad address {addr!r}: {exc}")
    from emperor.vassal import cheaper

    for warning in cheaper.Settings.from_config(cfg)[1]:  # values the vassal would adjust
        e = cfg.sources.get("cheaper")
        found.append(Problem(e.file if e else label, e.line if e else 0, "cheaper", warning, error=False))
    if cfg.chdir and not os.path.isdir(cfg.chdir):
        err("chdir", f"{cfg.chdir}: no such directory")
    if cfg.wsgi_file:
        path = os.path.join(cfg.chdir or "", cfg.wsgi_file)
        if not os.path.isfile(path):
            err("wsgi-file", f"{path}: no such file")
    elif not cfg.module and not cfg.asgi and cfg.need_app:
        found.append(Problem(label, 0, "module", "no application configured: set module, wsgi-file or "
                             "asgi (or need-app = false)"))
    return found


def report(label: str, problems: Sequence[Problem], out: list[str]) -> bool:
    """Append the problem lines and the verdict for one file; True when it can run."""
    errors = sum(p.error for p in problems)
    warnings = len(problems) - errors
    for p in problems:
        text = str(Problem(p.file or label, p.line, p.key, ("" if p.error else "warning: ") + p.message))
        out.append(text)
    counts = f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"
    out.append(f"{label}: {'FAILED, would not start' if errors else 'OK, would start'} ({counts})")
    return not errors


def vassals_of(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    """For an emperor configuration that loads: (vassal file, the command line the emperor would
    give it: its ``vassal-set`` values, the file, its ``vassals-include`` files)."""
    from emperor.empire.emperor import Settings

    try:
        settings = Settings.from_config(config.from_args(pairs, Scope.EMPEROR), os.getcwd())
    except config.ConfigError:
        return []
    before = settings.vassal_before
    set_pairs = [(before[i].removeprefix("--"), before[i + 1]) for i in range(0, len(before) - 1, 2)]
    after = [("ini", inc) for inc in settings.vassal_includes]
    return [(path, [*set_pairs, ("ini", path), *after])
            for source in settings.sources for _name, path in source.candidates()]


def main(files: Sequence[str]) -> int:
    """``emperor check FILE...``: check each file on its own, and the vassals an emperor file
    would run (with its vassal-set and vassals-include); 0 when all can run, else 78."""
    usage = ("usage: emperor check FILE.ini[:section]...\n\nLoad each file as the emperor or a vassal "
             "would, start nothing, print every error and warning and one verdict per file.\nExit "
             "status: 0 when every file can run, 78 when one cannot.")
    if not files or files[0] in ("-h", "--help"):
        print(usage, file=sys.stdout if files else sys.stderr)
        return 0 if files else 2
    out: list[str] = []
    ok = True
    given = {os.path.abspath(f) for f in files}
    for spec in files:
        pairs = [("ini", spec)]
        ok = report(spec, check_pairs(pairs, label=spec), out) and ok
        if scope_of(pairs) is Scope.EMPEROR:
            for path, vassal in vassals_of(pairs):
                if path not in given:
                    ok = report(path, check_pairs(vassal, label=path), out) and ok
    print("\n".join(out))
    return EXIT_OK if ok else EXIT_CONFIG


def check_command_line(pairs: Sequence[tuple[str, str]]) -> int:
    """``emperor --ini FILE ... --check``: the whole command line as one configuration (and, for
    an emperor, each vassal it would run)."""
    label = " ".join(v for k, v in pairs if k == "ini") or "command line"
    out: list[str] = []
    ok = report(label, check_pairs(pairs, label=label), out)
    if scope_of(pairs) is Scope.EMPEROR:
        for path, vassal in vassals_of(pairs):
            ok = report(path, check_pairs(vassal, label=path), out) and ok
    print("\n".join(out))
    return EXIT_OK if ok else EXIT_CONFIG
