"""From ordered (key, value, file, line) entries to a typed, validated configuration.

Entries come from the ini reader (``emperor.ini``) and the command line (parsed here too, by
an argparse parser generated from the option table: ``emperor``, ``python -m emperor.vassal``
and ``emperor check`` share it), in the order uWSGI would apply them: ``--ini`` files are
spliced in where they appear. Scalars take the last value, repeatable options accumulate,
and every error names the file, line and key.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emperor import __version__, ini
from emperor import validators as v
from emperor.config_view import ConfigView
from emperor.options import ALL, BY_NAME, OPTIONS, UNSUPPORTED, Decision, Option, Scope

log = logging.getLogger("emperor.config")

Entry = ini.Entry


@dataclass(frozen=True)
class Problem:
    """One finding about a configuration, located like a compiler message."""

    file: str
    line: int
    key: str
    message: str
    error: bool = True

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (
            f"{self.file}: " if self.file else "")
        return f"{where}{self.key + ': ' if self.key else ''}{self.message}"


class ConfigError(Exception):
    """The configuration cannot run. ``problems`` holds every error and warning found, in file
    order; the message lists the errors, one per line, each ``file:line: key: message``."""

    def __init__(self, message: str = "", file: str = "", line: int = 0, key: str = "",
                 problems: list[Problem] | None = None) -> None:
        self.problems = problems if problems is not None else [Problem(file, line, key, message)]
        errors = [p for p in self.problems if p.error] or [Problem(file, line, key, message)]
        first = errors[0]
        self.file, self.line, self.key, self.message = first.file, first.line, first.key, first.message
        super().__init__("\n".join(str(p) for p in errors))


@dataclass
class Config(ConfigView):
    """Typed option values; attribute names are the option names with ``-`` -> ``_``.

    The attribute types come from ``ConfigView`` (emperor/config_view.py, generated from the
    option table); at run time ``__getattr__`` serves them from ``values``. It is hidden from
    mypy so that a misspelt option name is a type error, not an ``Any``.
    """

    values: dict[str, Any]
    sources: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # the warnings, located

    if not TYPE_CHECKING:
        def __getattr__(self, attr: str) -> Any:
            try:
                return self.__dict__["values"][attr]
            except KeyError:
                raise AttributeError(attr) from None

    def where(self, name: str) -> str:
        """``file:line`` of the entry that set option ``name`` (for error messages)."""
        e = self.sources.get(name.replace("-", "_"))
        return f"{e.file}:{e.line}" if e and e.line else (e.file if e else "command line")


def _suggest(key: str, scope: Scope) -> str:
    names = [n for n, o in BY_NAME.items() if o.scope & scope and o.uwsgi is not Decision.REFUSED]
    import difflib  # only for a misspelt key: kept off the cold-start path

    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


_WHERE = {Scope.EMPEROR: "an emperor", Scope.VASSAL: "a vassal", Scope.ZERG: "a [zerg]"}


def build(entries: Iterable[Entry], scope: Scope, environ: Mapping[str, str] | None = None,
          prior: Iterable[Problem] = ()) -> Config:
    """Validate ``entries`` for ``scope`` and return the typed config, or raise ConfigError
    listing every problem found (not just the first: a file is fixed in one pass).

    The policy is uWSGI's (docs/configuration.md): an unknown key is a warning with a "did you
    mean" hint and is otherwise ignored, because uWSGI treats it as a placeholder; ``strict``
    makes it an error. A uWSGI option emperor does not implement follows its row's Decision.
    ``prior`` are problems found before (by the reader); they come first in the report.
    """
    problems: list[Problem] = list(prior)
    try:
        expanded, referenced = ini.expand(list(entries), environ)
    except ini.IniError as exc:
        raise ConfigError(problems=[*problems, _problem(exc)]) from None
    values: dict[str, Any] = {}
    sources: dict[str, Entry] = {}
    files: list[str] = []
    for o in OPTIONS:
        values[o.attr] = [] if o.multi else o.default_for(scope)
    strict = False
    for e in expanded:
        if e.key == "strict":
            try:
                strict = BY_NAME["strict"].convert(e.value)
            except ValueError:
                pass  # reported below with its line

    def warn(e: Entry, message: str) -> None:
        problems.append(Problem(e.file, e.line, e.key, message, error=False))

    def fail(e: Entry, message: str) -> None:
        problems.append(Problem(e.file, e.line, e.key, message))

    for e in expanded:
        if e.line and e.file not in files:
            files.append(e.file)
        key = e.key
        opt: Option | None = BY_NAME.get(key)
        if opt is None:
            if key in UNSUPPORTED:
                fail(e, f"not supported by emperor: {UNSUPPORTED[key]}")
            elif key in referenced:
                if strict:
                    fail(e, "unknown option used as a placeholder (strict: declare it with "
                         f"set-placeholder = {key}=...)")
            elif strict:
                fail(e, "unknown option (strict)" + _suggest(key, scope))
            else:
                warn(e, "unknown option, ignored" + _suggest(key, scope))
            continue
        if not (opt.scope & scope):
            fail(e, f"not valid in {_WHERE.get(scope, 'this')} configuration")
            continue
        if opt.uwsgi is Decision.REFUSED:
            fail(e, f"not supported by emperor: {opt.why}")
            continue
        if opt.name in ("ini", "set-placeholder"):
            continue  # already applied by the reader
        try:
            value = opt.convert(e.value)
        except v.Lenient as exc:
            value = exc.value
            warn(e, str(exc))
        except ValueError as exc:
            fail(e, f"bad value: {exc}")
            continue
        if opt.uwsgi is Decision.IGNORED:
            if value is not False:  # `thunder-lock = false` asks for nothing
                warn(e, f"accepted and ignored: {opt.why}")
            continue
        if opt.uwsgi is Decision.BUILT_IN and opt.attr not in values:
            continue
        attr = opt.extra.get("sets", opt.name).replace("-", "_")  # procname-prefix-spaced
        if opt.multi:
            values[attr].append(value)
        else:
            values[attr] = value
        sources[attr] = e
        if opt.name == "chmod-socket" and value & 0o002:
            warn(e, f"mode {value:o} lets every local user connect and set any CGI variable")
    if any(p.error for p in problems):
        raise ConfigError(problems=problems)
    warnings = [str(p) for p in problems]
    return Config(values, sources, warnings, files, problems)


def _spec_file(spec: str, last: str) -> str:
    """The absolute file an ``--ini`` spec names (for a later ``--ini :section``)."""
    given = spec.rpartition(":")[0] if ":" in spec and "/" not in spec.rpartition(":")[2] else spec
    return os.path.abspath(given) if given else last


def from_args(pairs: Iterable[tuple[str, str]], scope: Scope,
              environ: Mapping[str, str] | None = None) -> Config:
    """Build from command-line ``(key, value)`` pairs; ``('ini', spec)`` splices that file in place."""
    entries: list[Entry] = []
    reader: list[ini.IniError] = []
    last = ""
    for key, value in pairs:
        if key == "ini":
            try:
                entries.extend(ini.load(value, environ=environ, before=entries, last=last, problems=reader))
            except ini.IniError as exc:
                raise ConfigError(problems=[*map(_problem, reader), _problem(exc)]) from None
            last = _spec_file(value, last)
        else:
            entries.append(Entry(key, value, "command line", 0))
    return build(entries, scope, environ, map(_problem, reader))


def _problem(exc: ini.IniError) -> Problem:
    return Problem(exc.file, exc.line, exc.key, exc.message)


# ---------------------------------------------------------------- the command line


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
        "a running emperor; 'emperor upstreams' renders the fleet's etcd keys for nginx.",
        allow_abbrev=False)
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
        default = "" if opt.default_for(scope) is None else f" (default: {opt.default_for(scope)})"
        group.add_argument(*flags, action=_Ordered, option=opt, dest=f"opt_{opt.attr}",
                           metavar=opt.metavar, help=(opt.help + default).replace("%", "%%"), **extra)
    return parser


def parse_pairs(argv: Sequence[str], prog: str, scope: Scope) -> list[tuple[str, str]]:
    """A command line as (option, raw value) pairs for ``from_args`` (``python -m emperor.vassal``)."""
    fast = _plain_pairs(argv, scope)
    return fast if fast is not None else parse_command_line(build_parser(prog, scope), argv)[0]


def _plain_pairs(argv: Sequence[str], scope: Scope) -> list[tuple[str, str]] | None:
    """The command line the emperor gives a vassal (``--key value`` pairs of known options) read
    without building the argparse parser, which costs milliseconds per vassal start (cold start,
    docs/emperor.md). Anything else (help, a bare flag, a positional file, an unknown key, a
    value that looks like an option) returns None and goes through argparse, which reads it the
    same way or reports the error."""
    if len(argv) % 2:
        return None
    pairs: list[tuple[str, str]] = []
    for key, value in zip(argv[::2], argv[1::2], strict=True):
        opt = BY_NAME.get(key[2:]) if key.startswith("--") else None
        if opt is None or not opt.scope & scope or value.startswith("-"):
            return None
        pairs.append((opt.name, value))
    return pairs


def parse_command_line(parser: argparse.ArgumentParser,
                       argv: Sequence[str]) -> tuple[list[tuple[str, str]], bool]:
    """(the (option, raw value) pairs in command-line order, whether ``--check`` was given)."""
    ns = parser.parse_args(list(argv))
    pairs: list[tuple[str, str]] = [("ini", c) for c in ns.configs]
    pairs.extend(getattr(ns, "pairs", None) or [])
    return pairs, bool(getattr(ns, "check", False))
