"""uWSGI's policy for keys and values (docs/configuration.md), and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from emperor import config, reference
from emperor.options import ALL, BY_NAME, UNSUPPORTED, Decision, Scope

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp_path: Path, text: str, scope: Scope = Scope.VASSAL) -> config.Config:
    ini = tmp_path / "v.ini"
    ini.write_text(text)
    return config.from_args([("ini", str(ini))], scope)


def _errors(tmp_path: Path, text: str, scope: Scope = Scope.VASSAL) -> config.ConfigError:
    with pytest.raises(config.ConfigError) as info:
        _cfg(tmp_path, text, scope)
    return info.value


def test_unknown_key_is_a_warning_with_a_hint_and_strict_makes_it_an_error(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nsocket = /tmp/a.sock\nprocesess = 4\n")
    assert cfg.processes == 1  # ignored, as uWSGI ignores it
    assert cfg.warnings == [f"{tmp_path}/v.ini:3: procesess: unknown option, ignored (did you mean "
                            "'processes'?)"]
    exc = _errors(tmp_path, "[uwsgi]\nstrict = true\nprocesess = 4\n")
    assert str(exc) == f"{tmp_path}/v.ini:3: procesess: unknown option (strict) (did you mean 'processes'?)"


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    exc = _errors(tmp_path, "[uwsgi]\nprocesses = many\nthreads = 0\nbogus = 1\nchroot = /j\n"
                  "emperor-tyrant = true\nreuse-port\n")
    assert [(p.line, p.key, p.error) for p in exc.problems] == [
        (2, "processes", True), (3, "threads", True), (4, "bogus", False), (5, "chroot", True),
        (6, "emperor-tyrant", True), (7, "reuse-port", False)]
    assert str(exc).count("\n") == 3  # the message lists the four errors, one per line
    assert "v.ini:6: emperor-tyrant: not valid in a vassal configuration" in str(exc)


def test_values_are_read_as_uwsgi_reads_them_and_the_rest_is_warned(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nharakiri = 30s\nsocket-timeout = 10 seconds\nlisten = 512 # big\n"
               "vacuum = off\nlazy-apps = anything\n")
    assert (cfg.harakiri, cfg.socket_timeout, cfg.listen) == (30, 10.0, 512)
    assert (cfg.vacuum, cfg.lazy_apps) == (False, True)  # only false/off/no/0 are false
    assert [w.split(": ", 2)[1] for w in cfg.warnings] == ["harakiri", "socket-timeout", "listen"]
    assert "'30s' is read as 30" in cfg.warnings[0] and "'s' is ignored" in cfg.warnings[0]


def test_built_in_options_are_silent_ignored_ones_warn_unless_off(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nmaster = true\nenable-threads\nthunder-lock = true\nsingle-interpreter\n"
               "die-on-term\nignore-sigpipe\ndisable-write-exception\nlog-master = false\n")
    assert cfg.warnings == []
    cfg = _cfg(tmp_path, "[uwsgi]\nreuse-port = true\noffload-threads = 2\nlog-master = true\n")
    assert [w.split(": ", 3)[1:3] for w in cfg.warnings] == [
        ["reuse-port", "accepted and ignored"], ["offload-threads", "accepted and ignored"]]


@pytest.mark.parametrize("key", ["chroot", "cap", "unshare", "namespace", "jail", "limit-as", "cron2",
                                 "spooler", "mule", "logto2"])
def test_security_and_results_options_are_refused(tmp_path: Path, key: str) -> None:
    exc = _errors(tmp_path, f"[uwsgi]\nsocket = /tmp/a.sock\n{key} = x\n")
    assert f"v.ini:3: {key}: not supported by emperor" in str(exc)


def test_emperor_files_accept_uwsgi_emperor_options(tmp_path: Path) -> None:
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    cfg = _cfg(tmp_path, f"[uwsgi]\nemperor = {vassals}\nmaster = true\nvacuum = true\nthunder-lock\n"
               f"enable-threads\ndie-on-term\nlogto = {tmp_path}/e.log\npidfile = {tmp_path}/e.pid\n",
               Scope.EMPEROR)
    assert cfg.warnings == [] and cfg.vacuum is True


def test_placeholders_stay_silent(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nproject = shop\nchdir = /srv/%(project)\n")
    assert cfg.chdir == "/srv/shop" and cfg.warnings == []


def test_every_option_has_a_decision_and_refusals_say_why() -> None:
    for opt in ALL:
        assert isinstance(opt.uwsgi, Decision)
        if opt.uwsgi is not Decision.IMPLEMENTED:
            assert opt.why, opt.name
    for name in reference.REAL_FILE_OPTIONS:
        assert name in BY_NAME or name in UNSUPPORTED, f"{name}: no decision"


def test_configuration_page_has_the_current_decision_table() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    begin, end = "<!-- decisions:begin -->\n", "<!-- decisions:end -->"
    table = page[page.index(begin) + len(begin):page.index(end)]
    assert table == reference.render_decisions(), \
        "regenerate with: python -m emperor.reference --decisions (between the markers)"


def test_uwsgi_names_work_on_the_command_line_too() -> None:
    from emperor.cli import parse_pairs

    pairs = parse_pairs(["--socket", "/tmp/a.sock", "--thunder-lock", "--chmod", "660", "--logdate",
                         "--procname-prefix-spaced", "shop"], "t", Scope.VASSAL)
    cfg = config.from_args(pairs, Scope.VASSAL)
    assert cfg.chmod_socket == 0o660 and cfg.log_date == "" and cfg.procname_prefix == "shop "
    assert cfg.warnings == []


def test_hints_cover_uwsgi_spellings(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "[uwsgi]\nthunderlock = true\nharakiri_verbose = true\n")
    assert [w.rsplit("(", 1)[1] for w in cfg.warnings] == ["did you mean 'thunder-lock'?)",
                                                         "did you mean 'harakiri-verbose'?)"]


@pytest.mark.parametrize(("raw", "expected"), [("", ""), ("true", ""), ("1", ""), ("off", None),
                                               ("false", None), ("%Y-%m-%d", "%Y-%m-%d")])
def test_log_date_values(raw: str, expected: str | None) -> None:
    from emperor import validators as v

    assert v.log_date(raw) == expected
