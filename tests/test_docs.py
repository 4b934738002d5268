"""Every option and ``emperor ctl`` command the docs name exists (issue 8, item 18).

The rule (a heuristic, strict on purpose; extend ``NOT_OPTIONS`` only with a reason):

1. Inline code that is a lowercase hyphenated word, alone or as ``key = value``
   (`` `touch-logreopen` ``, `` `emperor-stats = ADDR` ``), names an option.
2. In fenced ``ini`` blocks, every ``key = value`` line names an option, unless the block
   uses the key as a placeholder (``%(key)``).
3. ``--word`` in code (inline or a fenced line) that runs emperor (``emperor``,
   ``emperorctl``, ``python -m emperor``/``emperor.vassal``) names an option or a flag of
   ``emperor ctl`` (its global flags and its commands' flags).
4. ``emperor ctl WORD`` (also ``emperorctl WORD``) anywhere names a registered command.

"Names an option" means: declared in ``emperor/options.py`` (a name or an alias), listed
there as a uWSGI decision (COMPAT) or in UNSUPPORTED (the docs say so for uWSGI options users copy), or a
directive of the ini reader (``if-env``, ``for``, ``end-if``, ...). A name that is none of
those and not in ``NOT_OPTIONS`` below fails the test with its file and line. One-word
keys in inline code (`` `k = "a b"` ``) are not checked: the docs use them for placeholders.
"""

from __future__ import annotations

import re
from pathlib import Path

from emperor import ini
from emperor.cli import build_parser as emperor_parser
from emperor.control.cli import build_parser
from emperor.control.commands import REGISTRY
from emperor.options import BY_NAME, UNSUPPORTED, Scope

DOCS = Path(__file__).resolve().parent.parent / "docs"

# Hyphenated words in backticks that are not options, and why.
NOT_OPTIONS = {
    "apps-available": "directory of the symlink workflow",
    "apps-enabled": "directory of the symlink workflow",
    "reload-failed": "an event name",
    "emperor-nofollow": "uWSGI's option, named as not implemented",
    "dynamic-apps": "uWSGI 2.1's option, named in a comparison",
    "zerg-fallback": "uWSGI's option, named as not implemented",
    "uwsgi-zerg": "the bytes of uWSGI's zerg handshake",
    "flask-json": "a benchmark workload",
    "emperor-exec": "a benchmark kind (bench/ondemand_cold.py: our emperor with emperor-template = false)",
    "http-asgi-r2": "a benchmark results directory",
    "nginx-http-ka": "a benchmark front (nginx with upstream keepalive)",
    "emperor-asgi-direct": "a benchmark config",
    "granian-asgi-direct": "a benchmark config",
    "www-data": "Debian's web server user and group",
    "x-foo": "an example HTTP header name",
    "site-packages": "a Python directory",
    "flask-payload": "a benchmark workload",
    "flask-echo": "a benchmark workload",
    "anchors-1": "a benchmark run",
}

HYPHENATED = re.compile(r"^([a-z][a-z0-9]*(?:-[a-z0-9]+)+)(?: = .*)?$")
ASSIGNMENT = re.compile(r"^([a-z][a-z0-9-]*) = ")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
CTL = re.compile(r"\bemperor ?ctl\s+(?:(?:--ini|--endpoint|--timeout|-e)\s+\S+\s+|--?[a-z-]+\s+)*"
                 r"([a-z][a-z-]*)")
INLINE = re.compile(r"`([^`\n]+)`")


INI_DIRECTIVES = (ini.INCLUDE_KEYS | ini.PLACEHOLDER_KEYS | ini._END_KEYS | ini._IF_KEYS | ini._FOR_KEYS
                  | set(ini._REFUSED))
RUNS_EMPEROR = re.compile(r"(?:^|[\s/])(?:emperor|emperorctl)(?:\s|$)|-m emperor(?:\.vassal)?(?![\w.])")


def _is_option(name: str) -> bool:
    return name in BY_NAME or name in UNSUPPORTED or name in INI_DIRECTIVES


def _ctl_flags() -> set[str]:
    """The flags of ``emperor ctl`` and its commands, and the ``emperor`` command's own (``--check``)."""
    parser = build_parser()
    flags = {s[2:] for a in parser._actions for s in a.option_strings if s.startswith("--")}
    own = emperor_parser("emperor", Scope.EMPEROR | Scope.VASSAL, check=True)
    flags |= {s[2:] for a in own._actions for s in a.option_strings if s.startswith("--")}
    from emperor.upstreams import build_parser as upstreams_parser  # `emperor upstreams` (docs/fleet.md)

    flags |= {s[2:] for a in upstreams_parser()._actions for s in a.option_strings if s.startswith("--")}
    for sub in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for p in sub.choices.values():  # type: ignore[union-attr]
            flags |= {s[2:] for a in p._actions for s in a.option_strings if s.startswith("--")}
    return flags


def _scan(path: Path) -> list[tuple[int, str, str]]:
    """(line number, kind, name) for every name the rules above pick up in one file."""
    found: list[tuple[int, str, str]] = []
    fence: str | None = None
    keys: list[tuple[int, str]] = []  # the current ini block's keys
    block = ""
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if line.lstrip().startswith("```"):
            if fence == "ini":
                found += [(n, "option", k) for n, k in keys if f"%({k})" not in block]
            keys, block = [], ""
            fence = None if fence is not None else (line.strip()[3:].strip() or "text")
            continue
        if fence is not None:
            if RUNS_EMPEROR.search(line):
                found += [(no, "flag", m) for m in FLAG.findall(line)]
            found += [(no, "command", m) for m in CTL.findall(line)]
            block += line + "\n"
            if fence == "ini" and not line.lstrip().startswith((";", "#", "[")) and (m := ASSIGNMENT.match(
                    line.strip())):
                keys.append((no, m.group(1)))
            continue
        found += [(no, "command", m) for m in CTL.findall(line)]
        for code in INLINE.findall(line):
            code = code.strip()
            if m := HYPHENATED.match(code):
                found.append((no, "option", m.group(1)))
            if RUNS_EMPEROR.search(code):
                found += [(no, "flag", f) for f in FLAG.findall(code)]
    return found


def test_every_option_and_command_named_in_the_docs_exists() -> None:
    flags = _ctl_flags()
    wrong = []
    files = sorted(DOCS.rglob("*.md"))
    assert len(files) >= 10
    for path in files:
        for no, kind, name in _scan(path):
            ok = {"option": _is_option(name) or name in NOT_OPTIONS,
                  "flag": _is_option(name) or name in flags,
                  "command": name in REGISTRY}[kind]
            if not ok:
                wrong.append(f"{path.relative_to(DOCS)}:{no}: {kind} {name!r}")
    assert not wrong, "the docs name things that do not exist:\n" + "\n".join(wrong)


def test_the_rule_catches_a_wrong_name(tmp_path: Path) -> None:
    """The heuristic is not vacuous: each rule picks up a misspelt name."""
    doc = tmp_path / "x.md"
    doc.write_text("Set `touch-reloadd` or `emperor-stat = ADDR`.\n\n```ini\n[uwsgi]\nsokcet = /s\n```\n\n"
                   "Run `emperor ctl relaod app` or `emperor ctl --json stauts app`, or "
                   "`emperor --ini e.ini --max-request 5`.\n")
    names = {(kind, name) for _, kind, name in _scan(doc)}
    wrong = {("option", "touch-reloadd"), ("option", "emperor-stat"), ("option", "sokcet"),
             ("command", "relaod"), ("command", "stauts"), ("flag", "max-request")}
    assert wrong <= names
    assert not any(_is_option(n) or n in REGISTRY or n in _ctl_flags() for _, n in wrong)
    assert ("flag", "ini") in names and _is_option("ini")  # the right ones are picked up too
    assert NOT_OPTIONS.keys().isdisjoint(BY_NAME)  # an exception that became an option must go


INLINE_COMMENT = re.compile(r"^\s*[a-z][a-z0-9-]*\s*=.*\s;\s")


def test_ini_examples_have_no_inline_comments() -> None:
    """The ini dialect (uWSGI's too) has no inline comments: ``key = value ; note`` makes the note
    part of the value, so an example copied from the docs would fail. Comments go on their own line."""
    wrong = []
    for path in sorted(DOCS.rglob("*.md")):
        fence: str | None = None
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = None if fence is not None else (line.strip()[3:].strip() or "text")
            elif fence == "ini" and INLINE_COMMENT.match(line):
                wrong.append(f"{path.relative_to(DOCS)}:{no}: {line.strip()}")
    assert not wrong, "inline comments in ini examples:\n" + "\n".join(wrong)
