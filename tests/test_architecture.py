"""The import layering of the package, read from the source with ``ast`` (nothing is imported).

``python -m emperor`` -> ``emperor.cli`` -> ``empire`` -> ``control``/``vassal`` -> ``protocol``,
with the shared top-level modules (config, options, channel, addresses, ...) under all of
them. Concretely:

- ``emperor.protocol.*`` imports nothing else of the project (sans-IO codecs);
- ``emperor.control.*`` imports nothing from ``empire`` or ``vassal`` (it sees the emperor
  through ``emperor.control.api.EmperorAPI``);
- ``emperor.empire.*`` never imports ``emperor.vassal.*`` (the emperor runs vassals as
  processes, it never imports their code);
- ``emperor.vassal.*`` never imports ``emperor.empire.*`` or ``emperor.control.*``;
- a shared top-level module imports no sub-package and no entry module; only the entry
  modules (``ENTRY``) may import everything;
- no import cycle among the project's modules.

Every import counts: module level, under ``if TYPE_CHECKING:`` (a type-only back reference
is still a knot: the owner is then described by a ``Protocol``, as ``vassal/stats.py`` and
``empire/operator.py`` do) and inside functions. ``LAZY_EXEMPT`` lists the function-level
imports allowed to close a cycle, each with its reason; it is empty today.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "emperor"
ENTRY = {"emperor.__main__", "emperor.cli", "emperor.check"}  # command lines: may import anything
LAZY_EXEMPT: dict[tuple[str, str], str] = {}  # (importer, imported) -> why this lazy import may close a cycle


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at function level) for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def resolve(base: str, names: list[str]) -> list[str]:
        out = []
        for n in names:
            full = f"{base}.{n}"
            out.append(full if full in MODULES else base)  # ``from emperor import channel``
        return out

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found.extend((m, child.lineno, lazy) for m in resolve(base, [a.name for a in child.names]))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(m, line, lazy) for m, line, lazy in found if m == "emperor" or m.startswith("emperor.")]


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in ("protocol", "control", "empire", "vassal"):
        return parts[1]
    return "entry" if name in ENTRY else "shared"


FORBIDDEN = {  # importer's layer -> layers it must not import
    "protocol": {"shared", "entry", "control", "empire", "vassal"},
    "control": {"entry", "empire", "vassal"},
    "empire": {"entry", "vassal"},
    "vassal": {"entry", "empire", "control"},
    "shared": {"entry", "protocol", "control", "empire", "vassal"},
    "entry": set(),
}


def test_the_walk_sees_the_package() -> None:
    """The checks below are only as good as the walk: it must find the modules and their imports."""
    assert {"emperor.cli", "emperor.control.api", "emperor.empire.emperor", "emperor.vassal.master",
            "emperor.protocol.uwsgi", "emperor.channel"} <= set(MODULES)
    assert ("emperor.channel", False) in {(m, lazy) for m, _, lazy in IMPORTS["emperor.vassal.master"]}
    assert ("emperor.empire.main", True) in {(m, lazy) for m, _, lazy in IMPORTS["emperor.cli"]}
    assert any(m == "emperor.control.server" for m, _, _ in IMPORTS["emperor.empire.operator"])


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_import(layer: str) -> None:
    bad = [f"{name}:{line} imports {imported}" for name, found in sorted(IMPORTS.items())
           if _layer(name) == layer for imported, line, _ in found
           if imported != "emperor" and _layer(imported) in FORBIDDEN[layer]
           and not (layer == "protocol" and _layer(imported) == "protocol")]
    assert not bad, "\n".join(bad)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, found in IMPORTS.items():
        for imported, _line, lazy in found:
            if imported in MODULES and imported != name and not (lazy and (name, imported) in LAZY_EXEMPT):
                graph[name].add(imported)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_exemptions_are_still_needed() -> None:
    for (importer, imported), why in LAZY_EXEMPT.items():
        assert why, f"{importer} -> {imported}: an exemption needs its reason"
        assert (imported, True) in {(m, lazy) for m, _, lazy in IMPORTS[importer]}, \
            f"{importer} no longer imports {imported} lazily: drop the exemption"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_emperor_ctl_does_not_load_the_emperor() -> None:
    """``emperor ctl`` (control/cli.py) reaches neither the emperor nor any stats code, even lazily."""
    seen: set[str] = set()
    todo = ["emperor.control.cli"]
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo.extend(m for m, _, _ in IMPORTS[name])
    assert "emperor.control.commands" in seen  # the walk works
    assert not {m for m in seen if m.startswith(("emperor.empire", "emperor.vassal"))}
    assert not {"emperor.statsserver", "emperor.empire.stats", "emperor.vassal.stats"} & seen
