"""The option table and what is derived from it: validation, the CLI, the reference page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from emperor import __version__, config, reference
from emperor import validators as v
from emperor.cli import build_parser, parse_pairs
from emperor.options import BY_NAME, OPTIONS, Scope

ROOT = Path(__file__).resolve().parent.parent


def test_reference_page_is_current() -> None:
    committed = (ROOT / "docs" / "reference" / "options.md").read_text()
    assert committed == reference.render(), "run: python -m emperor.reference > docs/reference/options.md"


@pytest.mark.parametrize("opt", OPTIONS, ids=lambda o: o.name)
def test_every_option_is_declared_completely(opt) -> None:  # type: ignore[no-untyped-def]
    assert opt.help and opt.help[-1] in ".)", opt.name
    assert opt.scope
    if opt.default is not None and not opt.multi and not isinstance(opt.default, bool):
        assert opt.convert(str(opt.default)) == opt.default  # the default passes its own validator


def test_cli_exposes_every_option_with_its_uwsgi_name() -> None:
    text = build_parser("emperor", Scope.ANY).format_help()
    for opt in OPTIONS:
        assert f"--{opt.name}" in text
        for alias in opt.aliases:
            assert f"--{alias}" in text


def test_arguments_apply_in_order_like_uwsgi(tmp_path: Path) -> None:
    ini = tmp_path / "a.ini"
    ini.write_text("[uwsgi]\nprocesses = 2\nsocket = /tmp/a.sock\nsocket = /tmp/b.sock\n")
    pairs = parse_pairs(["--processes", "8", "--ini", str(ini), "-s", "/tmp/c.sock"], "t", Scope.VASSAL)
    cfg = config.from_args(pairs, Scope.VASSAL)
    assert cfg.processes == 2  # the file came after --processes 8
    assert cfg.socket == ["/tmp/a.sock", "/tmp/b.sock", "/tmp/c.sock"]
    cfg = config.from_args(parse_pairs([str(ini), "--processes", "8"], "t", Scope.VASSAL), Scope.VASSAL)
    assert cfg.processes == 8
    assert cfg.where("processes") == "command line"


def test_bare_flags_and_uwsgi_booleans() -> None:
    cfg = config.from_args(parse_pairs(["--vacuum", "--lazy-apps", "off", "-L"], "t", Scope.VASSAL),
                           Scope.VASSAL)
    assert cfg.vacuum is True and cfg.lazy_apps is False and cfg.disable_logging is True


def _cfg(tmp_path: Path, text: str, scope: Scope = Scope.VASSAL) -> config.Config:
    ini = tmp_path / "v.ini"
    ini.write_text(text)
    return config.from_args([("ini", str(ini))], scope)


@pytest.mark.parametrize(("text", "message"), [
    ("[uwsgi]\nstrict\nproceses = 2\n", "v.ini:3: proceses: unknown option (strict) (did you mean "
     "'processes'?)"),
    ("[uwsgi]\nprocesses = 0\n", "v.ini:2: processes: bad value: 0 is below the minimum 1"),
    ("[uwsgi]\nprocesses = two\n", "v.ini:2: processes: bad value: 'two' is not a whole number"),
    ("[uwsgi]\nbuffer-size = 32k\n", "v.ini:2: buffer-size: bad value: '32k' is read as 32, as uWSGI "
     "reads it (only the leading digits count; 'k' is ignored: there are no size suffixes), and 32 is "
     "below the minimum 64"),
    ("[uwsgi]\nchroot = /jail\n", "v.ini:2: chroot: not supported by emperor: a sandbox setting"),
    ("[uwsgi]\nlogto2 = /x.log\n", "v.ini:2: logto2: not supported by emperor: not supported: logto"),
    ("[uwsgi]\nchmod-socket = 999\n", "v.ini:2: chmod-socket: bad value: '999' is not an octal mode"),
    ("[uwsgi]\ncap = setgid\n", "v.ini:2: cap: not supported by emperor"),
    ("[uwsgi]\nenv = NOEQUALS\n", "v.ini:2: env: bad value: 'NOEQUALS' is not KEY=VALUE"),
    ("[uwsgi]\nmodule = 1bad\n", "v.ini:2: module: bad value: '1bad' is not a dotted module name"),
])
def test_config_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as exc:
        _cfg(tmp_path, text)
    assert message in str(exc.value)


def test_placeholders_are_not_unknown_keys_unless_strict(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nbase = /srv/app\nchdir = %(base)/src\n")
    assert cfg.chdir == "/srv/app/src"
    with pytest.raises(config.ConfigError, match=r"v\.ini:3: base: unknown option used as a placeholder"):
        _cfg(tmp_path, "[uwsgi]\nstrict = true\nbase = /srv/app\nchdir = %(base)/src\n")


def test_scope_is_enforced(tmp_path: Path) -> None:
    emperor_only = next((o for o in OPTIONS if o.scope == Scope.EMPEROR), None)
    if emperor_only is not None:
        with pytest.raises(config.ConfigError, match="not valid in a vassal configuration"):
            _cfg(tmp_path, f"[uwsgi]\n{emperor_only.name} = 1\n")
    with pytest.raises(config.ConfigError, match="not valid in an emperor configuration"):
        _cfg(tmp_path, "[uwsgi]\nsocket = /tmp/x.sock\n", Scope.EMPEROR)


def test_ignored_keys_warn(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nplugins = python3\n")
    assert any("v.ini:2: plugins: accepted and ignored: emperor is a Python WSGI server" in w
               for w in cfg.warnings)


def test_world_writable_socket_mode_warns(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nchmod-socket\n")
    assert cfg.chmod_socket == 0o666
    assert any("every local user" in w for w in cfg.warnings)


@pytest.mark.parametrize(("fn", "raw", "expected"), [
    (v.boolean, "", True), (v.boolean, "off", False), (v.boolean, "No", False), (v.boolean, "0", False),
    (v.boolean, "yes", True), (v.boolean, "anything", True),
    (v.integer(1, 10), " 7 ", 7), (v.seconds, "0.5", 0.5), (v.octal_mode, "660", 0o660),
    (v.octal_mode, "0640", 0o640), (v.octal_mode, "", 0o666), (v.env_assignment, "A=b=c", "A=b=c"),
    (v.python_callable_ref, "pkg.mod:app.wsgi", "pkg.mod:app.wsgi"),
])
def test_validators_accept(fn, raw: str, expected) -> None:  # type: ignore[no-untyped-def]
    assert fn(raw) == expected


@pytest.mark.parametrize(("fn", "raw"), [
    (v.integer(1, 10), "11"), (v.integer(), "1.5"), (v.integer(), "²"), (v.integer(), "0x10"),
    (v.seconds, "-1"), (v.seconds, "nan"), (v.seconds, "inf"), (v.octal_mode, "8"), (v.octal_mode, "66"),
    (v.env_assignment, "=x"), (v.nonempty, "  "), (v.python_callable_ref, "a b"),
])
def test_validators_refuse(fn, raw: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        fn(raw)


@pytest.mark.live  # runs the commands
@pytest.mark.parametrize("cmd", [["-m", "emperor"], ["-m", "emperor.vassal"]])
def test_version_and_help(cmd: list[str]) -> None:
    r = subprocess.run([sys.executable, *cmd, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == f"emperor {__version__}"
    r = subprocess.run([sys.executable, *cmd, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--socket" in r.stdout


def test_aliases_resolve() -> None:
    assert BY_NAME["uwsgi-socket"] is BY_NAME["socket"]
    assert BY_NAME["workers"] is BY_NAME["processes"]
    assert BY_NAME["worker-reload-mercy"] is BY_NAME["reload-mercy"]
