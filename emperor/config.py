"""From ordered (key, value, file, line) entries to a typed, validated configuration.

Entries come from the ini reader (``emperor.ini``) and the command line, in the order
uWSGI would apply them: ``--ini`` files are spliced in where they appear. Scalars take the
last value, repeatable options accumulate, and every error names the file, line and key.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from emperor import ini
from emperor.options import BY_NAME, IGNORED, OPTIONS, UNSUPPORTED, Option, Scope

log = logging.getLogger("emperor.config")

Entry = ini.Entry


class ConfigError(Exception):
    """A configuration problem, located: ``file:line: key: message``."""

    def __init__(self, message: str, file: str = "", line: int = 0, key: str = "") -> None:
        self.file, self.line, self.key, self.message = file, line, key, message
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{key + ': ' if key else ''}{message}")


@dataclass
class Config:
    """Typed option values; attribute names are the option names with ``-`` -> ``_``."""

    values: dict[str, Any]
    sources: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

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
    names = [n for n, o in BY_NAME.items() if o.scope & scope]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(entries: Iterable[Entry], scope: Scope, environ: Mapping[str, str] | None = None) -> Config:
    """Validate ``entries`` for ``scope`` and return the typed config.

    Unknown keys are accepted only as placeholders that some ``%(name)`` refers to (the
    uWSGI idiom ``base = /srv/app`` / ``chdir = %(base)``); any other unknown key is an
    error with a "did you mean" hint, because uWSGI's silent acceptance hides typos.
    """
    expanded, referenced = ini.expand(list(entries), environ)
    values: dict[str, Any] = {}
    sources: dict[str, Entry] = {}
    warnings: list[str] = []
    files: list[str] = []
    for o in OPTIONS:
        values[o.attr] = [] if o.multi else o.default
    strict = any(e.key == "strict" and BY_NAME["strict"].convert(e.value) for e in expanded)
    for e in expanded:
        if e.line and e.file not in files:
            files.append(e.file)
        key = e.key
        opt: Option | None = BY_NAME.get(key)
        if opt is None:
            if key in IGNORED:
                warnings.append(f"{e.file}:{e.line}: {key}: ignored ({IGNORED[key]})")
                continue
            if key in UNSUPPORTED:
                raise ConfigError(f"not supported by emperor: {UNSUPPORTED[key]}", e.file, e.line, key)
            if key in referenced and not strict:
                continue  # a placeholder definition
            if key in referenced:
                raise ConfigError("unknown option used as a placeholder (strict: declare it with "
                                  f"set-placeholder = {key}=...)", e.file, e.line, key)
            raise ConfigError("unknown option" + _suggest(key, scope), e.file, e.line, key)
        if not (opt.scope & scope):
            where = {Scope.EMPEROR: "an emperor", Scope.VASSAL: "a vassal", Scope.ZERG: "a [zerg]"}
            raise ConfigError(f"not valid in {where.get(scope, 'this')} configuration", e.file, e.line, key)
        if opt.name in ("ini", "set-placeholder"):
            continue  # already applied by the reader
        try:
            value = opt.convert(e.value)
        except ValueError as exc:
            raise ConfigError(f"bad value: {exc}", e.file, e.line, key) from None
        if opt.multi:
            values[opt.attr].append(value)
        else:
            values[opt.attr] = value
        sources[opt.attr] = e
        if opt.name == "chmod-socket" and value & 0o002:
            warnings.append(f"{e.file}:{e.line}: chmod-socket: mode {value:o} lets every local user "
                            "connect and set any CGI variable")
    return Config(values, sources, warnings, files)


def from_args(pairs: Iterable[tuple[str, str]], scope: Scope,
              environ: Mapping[str, str] | None = None) -> Config:
    """Build from command-line ``(key, value)`` pairs; ``('ini', spec)`` splices that file in place."""
    entries: list[Entry] = []
    for key, value in pairs:
        if key == "ini":
            try:
                entries.extend(ini.load(value, environ=environ))
            except ini.IniError as exc:
                raise ConfigError(exc.message, exc.file, exc.line, exc.key) from None
        else:
            entries.append(Entry(key, value, "command line", 0))
    try:
        return build(entries, scope, environ)
    except ini.IniError as exc:
        raise ConfigError(exc.message, exc.file, exc.line, exc.key) from None
