"""The typed config view (emperor/config_view.py) and the per-scope defaults of the option table.

The view is generated from the option table like docs/reference/options.md, so a new option
cannot be read untyped: these tests fail when the committed module differs from the table, or
when the types it declares are not the types the config builder produces.
"""

from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from emperor import config, config_view, reference
from emperor.options import BY_NAME, OPTIONS, Scope

ROOT = Path(__file__).resolve().parent.parent


def test_config_view_is_current() -> None:
    committed = (ROOT / "emperor" / "config_view.py").read_text()
    assert committed == reference.render_config_view(), (
        "run: python -m emperor.reference --config-view > emperor/config_view.py")


def test_the_view_declares_exactly_what_the_builder_fills() -> None:
    declared = set(typing.get_type_hints(config_view.ConfigView))
    assert declared == {o.attr for o in OPTIONS}
    assert declared == set(config.build([], Scope.VASSAL).values)
    assert issubclass(config.Config, config_view.ConfigView)


@pytest.mark.parametrize("scope", [Scope.EMPEROR, Scope.VASSAL, Scope.ZERG])
def test_every_default_has_its_declared_type(scope: Scope) -> None:
    hints = typing.get_type_hints(config_view.ConfigView)
    cfg = config.build([], scope)
    for name, hint in hints.items():
        value = getattr(cfg, name)  # served by Config.__getattr__ at run time
        if typing.get_origin(hint) is list:
            assert value == [], name
        else:
            kinds = tuple(typing.get_origin(a) or a for a in typing.get_args(hint)) or hint  # tuple[str, str]
            assert isinstance(value, kinds), f"{name} = {value!r} is not {hint}"


def test_a_set_value_has_its_declared_type(tmp_path: Path) -> None:
    ini = tmp_path / "v.ini"
    ini.write_text("[uwsgi]\nprocesses = 3\nreload-mercy = 5\nsocket = /a.sock\nlog-date = %%Y\n"
                   "max-requests-delta = 2\nchmod-socket = 660\n")
    cfg = config.from_args([("ini", str(ini))], Scope.VASSAL)
    assert (cfg.processes, cfg.reload_mercy, cfg.socket, cfg.log_date) == (3, 5.0, ["/a.sock"], "%Y")
    assert (cfg.max_requests_delta, cfg.chmod_socket) == (2, 0o660)
    assert type(cfg.reload_mercy) is float


def test_a_converter_without_a_return_annotation_is_refused() -> None:
    from dataclasses import replace

    opt = replace(BY_NAME["listen"], convert=lambda raw: int(raw))
    with pytest.raises(ValueError, match=r"listen: its converter .* has no return annotation"):
        reference.python_type(opt)
    with pytest.raises(ValueError, match="listen: default '1' is not a int"):
        reference.python_type(replace(BY_NAME["listen"], default="1"))


def test_reload_mercy_default_depends_on_the_scope(tmp_path: Path) -> None:
    """30 s in the emperor (uWSGI's Ragnarok), 60 s in a vassal: both read from the option table;
    a value written in the emperor's file wins over its default."""
    from emperor.empire.emperor import Settings

    assert BY_NAME["reload-mercy"].default_for(Scope.EMPEROR) == 30.0
    assert config.build([], Scope.VASSAL).reload_mercy == 60.0
    assert config.build([], Scope.ZERG).reload_mercy == 60.0
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    assert Settings.from_config(config.from_args([("emperor", str(vassals))], Scope.EMPEROR),
                                str(tmp_path)).mercy == 30.0
    given = config.from_args([("emperor", str(vassals)), ("reload-mercy", "7")], Scope.EMPEROR)
    assert Settings.from_config(given, str(tmp_path)).mercy == 7.0


def test_cli_help_and_reference_show_the_scope_default() -> None:
    page = reference.render()
    assert "| `60` (emperor: `30`) |" in page
    emperor_help = config.build_parser("emperor", Scope.EMPEROR).format_help()
    vassal_help = config.build_parser("vassal", Scope.VASSAL).format_help()
    assert "(default: 30.0)" in " ".join(emperor_help.split())
    assert "(default: 60.0)" in " ".join(vassal_help.split())


@pytest.mark.live  # runs mypy in a subprocess
def test_mypy_rejects_a_misspelt_option_name(tmp_path: Path) -> None:
    """``Config.__getattr__`` is hidden from mypy, so a typo is a type error and not an Any."""
    pytest.importorskip("mypy")
    snippet = tmp_path / "use_config.py"
    snippet.write_text("from emperor.config import Config\n\n\n"
                       "def count(cfg: Config) -> int:\n    return cfg.procesess\n\n\n"
                       "def mercy(cfg: Config) -> str:\n    return cfg.reload_mercy\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                           str(snippet)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "MYPYPATH": str(ROOT)})
    assert '"Config" has no attribute "procesess"' in done.stdout, done.stdout + done.stderr
    assert 'Incompatible return value type (got "float", expected "str")' in done.stdout, done.stdout
