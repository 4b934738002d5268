"""The uWSGI ini dialect reader: parsing rules, magic variables, includes, expansion, limits.

Pure logic: files in tmp_path, no processes. Each table row is one rule from the spec (§3).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emperor import __version__, ini
from emperor.ini import Entry, IniError

FIXTURES = Path(__file__).parent / "fixtures" / "ini"


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def pairs(entries: list[Entry]) -> list[tuple[str, str]]:
    return [(e.key, e.value) for e in entries]


def load_text(tmp_path: Path, text: str | bytes, section: str = "", **kw: object) -> list[Entry]:
    path = write(tmp_path, "t.ini", text)
    return ini.load(f"{path}:{section}" if section else str(path), **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- parsing rules

PARSE_CASES = [
    ("basic", "[uwsgi]\nsocket = /a.sock\n", [("socket", "/a.sock")]),
    ("spaces and tabs trimmed", "[uwsgi]\n \t socket\t =\t /a.sock \t\n", [("socket", "/a.sock")]),
    ("CRLF", "[uwsgi]\r\nsocket = a\r\nmaster\r\n", [("socket", "a"), ("master", "")]),
    ("BOM", "\ufeff[uwsgi]\nk = v\n", [("k", "v")]),
    ("no trailing newline", "[uwsgi]\nk = v", [("k", "v")]),
    ("semicolon comment", "[uwsgi]\n; k = v\n  ;x\nk = 1\n", [("k", "1")]),
    ("hash comment", "[uwsgi]\n# k = v\n\t# y\nk = 1\n", [("k", "1")]),
    ("no inline comments", "[uwsgi]\nk = v ; x\nh = v # y\n", [("k", "v ; x"), ("h", "v # y")]),
    ("quotes stay literal", "[uwsgi]\nk = \"a b\"\nj = 'c'\n", [("k", '"a b"'), ("j", "'c'")]),
    ("key ends at first =", "[uwsgi]\nenv = A=B=C\n", [("env", "A=B=C")]),
    ("bare key is empty value", "[uwsgi]\nmaster\nvacuum\n", [("master", ""), ("vacuum", "")]),
    ("empty value", "[uwsgi]\nk =\n", [("k", "")]),
    ("repeated keys kept in order", "[uwsgi]\nsocket = a\nenv = X=1\nsocket = b\nsocket = a\n",
     [("socket", "a"), ("env", "X=1"), ("socket", "b"), ("socket", "a")]),
    ("other sections ignored", "[other]\nx = 1\n[uwsgi]\nk = v\n[zerg]\ny = 2\n", [("k", "v")]),
    ("lines before any section ignored", "k0 = v\n[uwsgi]\nk = v\n", [("k", "v")]),
    ("section may appear twice", "[uwsgi]\na = 1\n[x]\nb = 2\n[uwsgi]\nc = 3\n", [("a", "1"), ("c", "3")]),
    ("section name trimmed", "[ uwsgi ]\nk = v\n", [("k", "v")]),
    ("comma values are not lists", "[uwsgi]\nenv = PATH=/usr/bin,/bin\n", [("env", "PATH=/usr/bin,/bin")]),
    ("empty section is found", "[uwsgi]\n", []),
    ("placeholders and env left for expand", "[uwsgi]\nk = %(a) $(B) @(/etc/hostname)\n",
     [("k", "%(a) $(B) @(/etc/hostname)")]),
    ("ini/include lines are replaced (here: nothing to include from an empty for)",
     "[uwsgi]\nfor =\nini = nowhere.ini\nendfor\nk = v\n", [("k", "v")]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse(tmp_path: Path, text: str, expected: list[tuple[str, str]]) -> None:
    assert pairs(load_text(tmp_path, text)) == expected


def test_entries_carry_absolute_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "d/a.ini", "; c\n[uwsgi]\n\nk = v\r\nj\n")
    entries = ini.load("d/a.ini", cwd=str(tmp_path))
    f = str(tmp_path / "d/a.ini")
    assert entries == [Entry("k", "v", f, 4), Entry("j", "", f, 5)]


def test_section_selection_and_spec_splitting(tmp_path: Path) -> None:
    path = write(tmp_path, "app.ini", "[uwsgi]\na = 1\n[zerg]\nz = 2\n")
    assert pairs(ini.load(f"{path}:zerg")) == [("z", "2")]
    assert pairs(ini.load(f"{path}:")) == [("a", "1")]  # empty section = default
    colon_dir = write(tmp_path, "x:y/app.ini", "[uwsgi]\nc = 3\n[s]\nd = 4\n")
    assert pairs(ini.load(str(colon_dir))) == [("c", "3")]  # ':' before a '/' is part of the path
    assert pairs(ini.load(f"{colon_dir}:s")) == [("d", "4")]  # split at the LAST ':'


ERROR_CASES = [
    ("missing section", "[other]\nk = v\n", "section [uwsgi] not found", 0, ""),
    ("unclosed header", "[uwsgi\nk = v\n", "without closing ']'", 1, ""),
    ("key missing", "[uwsgi]\n= v\n", "no key", 2, ""),
    ("invalid UTF-8", b"[uwsgi]\nk = ok\nk = \xff\xfe\n", "not valid UTF-8", 3, ""),
    ("NUL byte", "[uwsgi]\nk = a\0b\n", "NUL", 2, ""),
    ("nested for", "[uwsgi]\nfor = a\nfor = b\nendfor\nendfor\n", "nested block", 3, "for"),
    ("unclosed for", "[uwsgi]\nfor = a b\nk = %(_)\n", "never closed", 2, "for"),
    ("stray endfor", "[uwsgi]\nendfor\n", "no open for/if block", 2, "endfor"),
    ("xml refused", "[uwsgi]\nxml = a.xml\n", "not supported by emperor", 2, "xml"),
    ("inherit refused", "[uwsgi]\ninherit = base.ini\n", "not supported by emperor", 2, "inherit"),
    ("if-reload refused", "[uwsgi]\nif-reload\nk\nendif\n", "not supported by emperor", 2, "if-reload"),
    ("else outside a block", "[uwsgi]\nelse\n", "no open if block", 2, "else"),
    ("else after for", "[uwsgi]\nfor = a\nk\nelse\nendfor\n", "else needs an if block", 4, "else"),
    ("nested for-glob", "[uwsgi]\nif-env = X\nfor-glob = *\nendfor\nendif\n", "nested block", 3,
     "for-glob"),
    ("for-readline missing file", "[uwsgi]\nfor-readline = nope.txt\nk\nendfor\n", "cannot read", 2,
     "for-readline"),
    ("yaml include refused", "[uwsgi]\ninclude = x.yaml\n", "only ini files", 2, "include"),
    ("bad for-times", "[uwsgi]\nfor-times = many\nk\nendfor\n", "needs a count", 2, "for-times"),
    ("empty include", "[uwsgi]\nini =\n", "needs a file name", 2, "ini"),
    ("placeholder in include path", "[uwsgi]\nini = %(base).ini\n", "placeholders are not expanded", 2,
     "ini"),
]


@pytest.mark.parametrize(("text", "fragment", "line", "key"), [c[1:] for c in ERROR_CASES],
                         ids=[c[0] for c in ERROR_CASES])
def test_errors(tmp_path: Path, text: str | bytes, fragment: str, line: int, key: str) -> None:
    with pytest.raises(IniError) as info:
        load_text(tmp_path, text)
    exc = info.value
    assert fragment in exc.message
    assert exc.file == str(tmp_path / "t.ini")
    assert (exc.line, exc.key) == (line, key)
    assert str(exc).startswith(str(tmp_path / "t.ini"))


def test_missing_file_and_section_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(IniError, match=r"nope\.ini: cannot read: No such file") as info:
        ini.load(str(tmp_path / "nope.ini"))
    assert info.value.file == str(tmp_path / "nope.ini")
    path = write(tmp_path, "a.ini", "[uwsgi]\n")
    with pytest.raises(IniError, match=r"a\.ini: section \[zerg\] not found"):
        ini.load(f"{path}:zerg")


def test_ini_error_format() -> None:
    assert str(IniError("bad", "/a.ini", 3, "k")) == "/a.ini:3: k: bad"
    assert str(IniError("bad", "/a.ini")) == "/a.ini: bad"
    assert str(IniError("bad", "/a.ini", 0, "k")) == "/a.ini: k: bad"
    assert str(IniError("bad")) == "bad"
    assert str(IniError("bad", key="k")) == "k: bad"


def test_colon_section_alone_is_refused() -> None:
    with pytest.raises(IniError, match="no file name"):
        ini.load(":zerg")


# --------------------------------------------------------------------------------- magic variables

def test_magic_variables(tmp_path: Path) -> None:
    keys = list("opsnedcx01vijkugtThVb")
    body = "".join(f"m{k} = %{k}\n" for k in keys)
    write(tmp_path, "etc/vassals/app1.ini", "[uwsgi]\n" + body + "pct = 100%%\nunknown = a%qb\n"
          "ph = %(name)\nesc = %[\ntrail = 5%\n[s]\nsec = %x\n")
    got = dict(pairs(ini.load("etc/vassals/app1.ini", cwd=str(tmp_path))))
    path = str(tmp_path / "etc/vassals/app1.ini")
    parts = [p for p in str(tmp_path).split("/") if p] + ["etc", "vassals"]
    assert got["mo"] == "etc/vassals/app1.ini"
    assert got["mp"] == path
    assert (got["ms"], got["mn"], got["me"]) == ("app1.ini", "app1", "ini")
    assert got["md"] == str(tmp_path / "etc/vassals") + "/"
    assert got["mc"] == "vassals"
    assert got["mx"] == ""  # no section given
    assert (got["m0"], got["m1"]) == (parts[0], parts[1] if len(parts) > 1 else "")
    assert got["mv"] == str(tmp_path)
    assert got["mi"] == str(os.lstat(path).st_ino)
    assert len(got["mj"]) == 8 and int(got["mj"], 16) >= 0
    assert got["mk"] == str(os.cpu_count())
    assert (got["mu"], got["mg"]) == (str(os.getuid()), str(os.getgid()))
    assert abs(int(got["mt"]) - time.time()) < 60 and got["mT"].startswith(got["mt"][:8])
    assert got["mh"] and got["mV"] == __version__ and got["mb"]
    assert got["pct"] == "100%"
    assert got["unknown"] == "ab"  # unknown %<char> vanishes, as in uWSGI
    assert got["ph"] == "%(name)"  # kept for expand()
    assert got["esc"] == "\x1b"
    assert got["trail"] == "5%"
    assert pairs(ini.load(f"{path}:s")) == [("sec", "s")]


def test_magic_applies_to_section_headers_and_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "web.ini", "[%n]\nk_%n = 1\n")
    assert pairs(ini.load(f"{path}:web")) == [("k_web", "1")]


def test_magic_name_without_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "app", "[uwsgi]\nn = %n\ne = %e\n")
    assert pairs(ini.load(str(path))) == [("n", "app"), ("e", "")]


def test_magic_djb33x_matches_uwsgi_algorithm() -> None:
    # hash = hash * 33 ^ c, from 5381, 32-bit: "a" -> 5381*33 ^ 97
    assert ini._djb33x("a") == f"{(5381 * 33) ^ 97:08x}"


def test_symlink_name_is_the_links(tmp_path: Path) -> None:
    """One skel file, many symlinks: %n, %p and %d describe the link, not its target."""
    write(tmp_path, "skel/base.ini", "[uwsgi]\nsocket = /run/%n.sock\np = %p\nd = %d\ns = %s\n")
    (tmp_path / "vassals").mkdir()
    (tmp_path / "vassals/shop.ini").symlink_to(tmp_path / "skel/base.ini")
    got = dict(pairs(ini.load("vassals/shop.ini", cwd=str(tmp_path))))
    assert got == {"socket": "/run/shop.sock", "p": str(tmp_path / "vassals/shop.ini"),
                   "d": str(tmp_path / "vassals") + "/", "s": "shop.ini"}


# ---------------------------------------------------------------------------------------- includes

def test_include_is_spliced_in_place(tmp_path: Path) -> None:
    write(tmp_path, "main.ini",
          "[uwsgi]\nsocket = :3031\nini = file2.ini\nsocket = :3032\nchdir = /var/www\n")
    write(tmp_path, "file2.ini", "[uwsgi]\nmaster = true\nprocesses = 4\n")
    entries = ini.load(str(tmp_path / "main.ini"))
    assert pairs(entries) == [("socket", ":3031"), ("master", "true"), ("processes", "4"),
                              ("socket", ":3032"), ("chdir", "/var/www")]
    assert [(Path(e.file).name, e.line) for e in entries] == [
        ("main.ini", 2), ("file2.ini", 2), ("file2.ini", 3), ("main.ini", 4), ("main.ini", 5)]


def test_include_relative_to_including_file_and_section(tmp_path: Path) -> None:
    write(tmp_path, "a/main.ini", "[uwsgi]\ninclude = ../b/common.ini:shared\nk = main\n")
    write(tmp_path, "b/common.ini", "[uwsgi]\nno = 1\n[shared]\nini = deeper/x.ini\n")
    write(tmp_path, "b/deeper/x.ini", "[uwsgi]\nwho = %n %o %x %N %X\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    entries = ini.load(str(tmp_path / "a/main.ini"), cwd=str(elsewhere))
    assert pairs(entries) == [("who", "x deeper/x.ini  main"), ("k", "main")]
    assert entries[0].file == str(tmp_path / "b/deeper/x.ini")


def test_include_path_env_expanded_at_load(tmp_path: Path) -> None:
    write(tmp_path, "main.ini", "[uwsgi]\nini = $(CONF)/x.ini\n")
    write(tmp_path, "conf/x.ini", "[uwsgi]\nk = v\n")
    env = {"CONF": str(tmp_path / "conf")}
    assert pairs(ini.load(str(tmp_path / "main.ini"), environ=env)) == [("k", "v")]


def test_same_file_twice_is_not_a_loop(tmp_path: Path) -> None:
    write(tmp_path, "main.ini", "[uwsgi]\nini = x.ini\nini = x.ini\nini = main.ini:other\n[other]\no = 1\n")
    write(tmp_path, "x.ini", "[uwsgi]\nk = v\n")
    assert pairs(ini.load(str(tmp_path / "main.ini"))) == [("k", "v"), ("k", "v"), ("o", "1")]


def test_include_loop(tmp_path: Path) -> None:
    write(tmp_path, "a.ini", "[uwsgi]\nini = b.ini\n")
    write(tmp_path, "b.ini", "[uwsgi]\n\nini = a.ini\n")
    with pytest.raises(IniError) as info:
        ini.load(str(tmp_path / "a.ini"))
    a, b = str(tmp_path / "a.ini"), str(tmp_path / "b.ini")
    assert info.value.message == f"include loop: {a} -> {b} -> {a}"
    assert (info.value.file, info.value.line, info.value.key) == (b, 3, "ini")


def test_include_depth_cap(tmp_path: Path) -> None:
    for i in range(30):
        write(tmp_path, f"f{i}.ini", f"[uwsgi]\nini = f{i + 1}.ini\n")
    write(tmp_path, "f30.ini", "[uwsgi]\nk = v\n")
    with pytest.raises(IniError, match="nested more than 16 deep"):
        ini.load(str(tmp_path / "f0.ini"))


def test_include_fan_out_is_bounded(tmp_path: Path) -> None:
    # each level includes the next one 10 times: 10**10 files without a cap
    for i in range(10):
        write(tmp_path, f"g{i}.ini", "[uwsgi]\n" + f"ini = g{i + 1}.ini\n" * 10)
    write(tmp_path, "g10.ini", "[uwsgi]\n")
    start = time.monotonic()
    with pytest.raises(IniError, match="files included"):
        ini.load(str(tmp_path / "g0.ini"))
    assert time.monotonic() - start < 5


def test_missing_include_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "main.ini", "[uwsgi]\nk = v\nini = gone.ini\n")
    with pytest.raises(IniError) as info:
        ini.load(str(tmp_path / "main.ini"))
    assert str(info.value) == (f"{tmp_path / 'main.ini'}:3: ini: cannot include {tmp_path / 'gone.ini'}: "
                               "cannot read: No such file or directory")


def test_fixture_vassal(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES, tmp_path / "f")
    entries, referenced = ini.expand(ini.load(str(tmp_path / "f/vassal.ini")), {})
    assert pairs(entries) == [
        ("project", "vassal"), ("base", "/srv/vassal"), ("master", ""), ("processes", "4"),
        ("logto", "/var/log/emperor/vassal.log"), ("included-from", "common"),
        ("socket", "/run/emperor/vassal.sock"), ("env", "DJANGO_SETTINGS_MODULE=vassal.settings"),
        ("env", "PATH=/usr/bin,/bin"), ("chdir", "/srv/vassal")]
    assert referenced == {"project", "base"}
    zerg = ini.load(str(tmp_path / "f/vassal.ini") + ":zerg")
    assert pairs(zerg) == [("zerg", "/run/emperor/vassal-zerg.sock")]


# ----------------------------------------------------------------------------------- logic blocks

BLOCK_CASES = [
    ("for", "for = a b  c\nsocket = /%(_).sock\nendfor\n", {}, [("socket", "/a.sock"), ("socket", "/b.sock"),
                                                              ("socket", "/c.sock")]),
    ("for repeats each line", "for = 1 2\nx = %(_)\ny = %(_)\nend-for\n", {},
     [("x", "1"), ("y", "1"), ("x", "2"), ("y", "2")]),
    ("for-times", "for-times = 3\nw = %(_)\nend\n", {}, [("w", "1"), ("w", "2"), ("w", "3")]),
    ("if-env set", "if-env = HOME\nh = %(_)\nendif\n", {"HOME": "/root"}, [("h", "/root")]),
    ("if-env unset", "if-env = NOPE\nh = 1\nendif\n", {}, []),
    ("if-env value", "if-env = MODE=prod\np = 1\nend-if\nif-env = MODE=dev\nd = 1\nendif\n", {"MODE": "prod"},
     [("p", "1")]),
    ("if-not-env", "if-not-env = NOPE\nn = 1\nendif\n", {}, [("n", "1")]),
    ("if-exists", "if-exists = t.ini\ne = %(_)\nendif\nif-not-exists = nope\nn = 1\nendif\n", {},
     [("e", "t.ini"), ("n", "1")]),
    ("if-file/if-dir", "if-file = .\nf = 1\nendif\nif-dir = .\nd = 1\nendif\n", {}, [("d", "1")]),
    ("include inside for", "for = p q\nini = t.ini:%(_)\nendfor\n[p]\nk = P\n[q]\nk = Q\n", {},
     [("k", "P"), ("k", "Q")]),
    ("if-opt set earlier", "processes = 4\nif-opt = processes\nseen = %(_)\nendif\n", {},
     [("processes", "4"), ("seen", "4")]),
    ("if-opt takes the first value", "a = 1\na = 2\nif-opt = a=1\nfirst = yes\nendif\n", {},
     [("a", "1"), ("a", "2"), ("first", "yes")]),
    ("if-opt not yet set", "if-opt = later\nno = 1\nendif\nlater = 1\n", {}, [("later", "1")]),
    ("if-not-opt", "if-not-opt = socket\nsocket = /d.sock\nendif\n", {}, [("socket", "/d.sock")]),
    ("if-not-opt value differs", "mode = dev\nif-not-opt = mode=prod\ndebug = 1\nendif\n", {},
     [("mode", "dev"), ("debug", "1")]),
    ("else after a failed if", "if-env = NOPE\na = 1\nelse\nb = 2\nendif\n", {}, [("b", "2")]),
    ("else after a true if", "if-env = HOME\na = %(_)\nelse\nb = 2\nendif\n", {"HOME": "/h"},
     [("a", "/h")]),
    ("uWSGI's short spellings", "ifenv = HOME\ne = 1\nendif\nifdir = .\nd = 1\nendif\n"
     "if-directory = .\nd2 = 1\nendif\nifexists = t.ini\nx = 1\nendif\n", {"HOME": "/h"},
     [("e", "1"), ("d", "1"), ("d2", "1"), ("x", "1")]),
    ("if-hostname", f"if-hostname = {socket.gethostname()}\nh = %(_)\nendif\n"
     "if-not-hostname = not-this-host.invalid\nn = 1\nendif\n", {},
     [("h", socket.gethostname()), ("n", "1")]),
    ("for-glob, sorted, directories marked", "for-glob = g/*\npythonpath = %(_)\nendfor\n", {},
     [("pythonpath", "g/a.py"), ("pythonpath", "g/b.py"), ("pythonpath", "g/sub/")]),
    ("for-glob without a match gives the pattern", "for-glob = nomatch/*.py\np = %(_)\nendfor\n", {},
     [("p", "nomatch/*.py")]),
    ("for-readline", "for-readline = hosts.txt\nenv = HOST=%(_)\nendfor\n", {},
     [("env", "HOST=alpha"), ("env", "HOST=beta"), ("env", "HOST=")]),
    ("ini = :section is a section of this file", "a = 1\nini = :extra\nb = 2\n[extra]\nx = %x\n", {},
     [("a", "1"), ("x", "extra"), ("b", "2")]),
]


@pytest.mark.parametrize(("body", "env", "expected"), [c[1:] for c in BLOCK_CASES],
                         ids=[c[0] for c in BLOCK_CASES])
def test_blocks(tmp_path: Path, body: str, env: dict[str, str], expected: list[tuple[str, str]]) -> None:
    for name in ("g/a.py", "g/b.py", "g/sub/c.py", "g/.hidden"):
        write(tmp_path, name, "")
    write(tmp_path, "hosts.txt", "alpha\r\nbeta\n\n")
    assert pairs(load_text(tmp_path, "[uwsgi]\n" + body, environ=env)) == expected


def test_if_opt_sees_the_command_line_before_the_file(tmp_path: Path) -> None:
    cmdline = [Entry("processes", "8", "command line", 0)]
    got = load_text(tmp_path, "[uwsgi]\nif-opt = processes=8\nthreads = 2\nendif\n", before=cmdline)
    assert pairs(got) == [("threads", "2")]


def test_for_readline_is_bounded_like_an_ini_file(tmp_path: Path) -> None:
    big = write(tmp_path, "big.txt", "x\n" * (ini.MAX_FILE_SIZE // 2 + 1))
    with pytest.raises(IniError, match="file too large"):
        load_text(tmp_path, f"[uwsgi]\nfor-readline = {big}\nk = %(_)\nendfor\n")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(IniError, match="refusing to read a FIFO"):
        load_text(tmp_path, "[uwsgi]\nfor-readline = fifo\nk = %(_)\nendfor\n")


def test_colon_section_on_the_command_line_is_the_last_file(tmp_path: Path) -> None:
    from emperor import config
    from emperor.options import Scope

    path = write(tmp_path, "app.ini", "[uwsgi]\nsocket = /a.sock\n[more]\nprocesses = 3\n")
    cfg = config.from_args([("ini", str(path)), ("ini", ":more")], Scope.VASSAL)
    assert cfg.socket == ["/a.sock"] and cfg.processes == 3


def test_magic_k_is_the_cpu_count(tmp_path: Path) -> None:
    assert pairs(load_text(tmp_path, "[uwsgi]\nprocesses = %k\n")) == [("processes", str(os.cpu_count()))]


def test_for_lines_keep_their_line_numbers(tmp_path: Path) -> None:
    entries = load_text(tmp_path, "[uwsgi]\nfor = a b\nk = %(_)\nendfor\n")
    assert [e.line for e in entries] == [3, 3]


# -------------------------------------------------------------------------------------- expansion

def E(key: str, value: str, line: int = 1) -> Entry:
    return Entry(key, value, "/t.ini", line)


EXPAND_CASES = [
    ("env", [E("k", "$(HOME)/x")], {"HOME": "/h"}, [("k", "/h/x")]),
    ("env unresolved stays literal", [E("k", "$(UNSET) $(")], {}, [("k", "$(UNSET) $(")]),
    ("env default :-", [E("a", "$(X:-d)"), E("b", "$(E:-d)")], {"E": ""}, [("a", "d"), ("b", "d")]),
    ("env default -", [E("a", "$(X-d)"), E("b", "$(E-d)")], {"E": ""}, [("a", "d"), ("b", "")]),
    ("placeholder", [E("base", "/srv"), E("chdir", "%(base)/app")], {},
     [("base", "/srv"), ("chdir", "/srv/app")]),
    ("first wins", [E("dup", "first"), E("dup", "second"), E("x", "%(dup)")], {},
     [("dup", "first"), ("dup", "second"), ("x", "first")]),
    ("forward reference", [E("x", "%(later)"), E("later", "v")], {}, [("x", "v"), ("later", "v")]),
    ("chain", [E("a", "%(b)!"), E("b", "%(c)%(c)"), E("c", "z")], {},
     [("a", "zz!"), ("b", "zz"), ("c", "z")]),
    ("append idiom", [E("p", "a"), E("p", "%(p):b")], {}, [("p", "a"), ("p", "a:b")]),
    ("unresolved placeholder literal", [E("k", "%(nope) %(")], {}, [("k", "%(nope) %(")]),
    ("refers to an option", [E("socket", "/s"), E("k", "%(socket)")], {}, [("socket", "/s"), ("k", "/s")]),
    ("env before placeholders", [E("a", "$(V)"), E("b", "%(a)")], {"V": "%(c)"},
     [("a", "%(c)"), ("b", "%(c)")]),
    ("set-placeholder", [E("set-placeholder", "name=val"), E("k", "%(name)")], {},
     [("set-placeholder", "name=val"), ("k", "val")]),
    ("set-ph first wins over later option", [E("set-ph", "n = a"), E("n", "b"), E("k", "%(n)")], {},
     [("set-ph", "n = a"), ("n", "b"), ("k", "a")]),
    ("set becomes the entry", [E("set", "processes=4"), E("k", "%(processes)")], {},
     [("processes", "4"), ("k", "4")]),
    ("env in placeholder value", [E("a", "$(H)"), E("b", "%(a)")], {"H": "/h"}, [("a", "/h"), ("b", "/h")]),
    ("@() stays literal", [E("n", "@(/etc/hostname)")], {}, [("n", "@(/etc/hostname)")]),
    ("maths is not supported", [E("a", "1"), E("b", "%(a + 1)")], {}, [("a", "1"), ("b", "%(a + 1)")]),
    ("command-line entries count", [E("k", "%(cl)"), Entry("cl", "v", "command line", 0)], {},
     [("k", "v"), ("cl", "v")]),
]


@pytest.mark.parametrize(("entries", "env", "expected"), [c[1:] for c in EXPAND_CASES],
                         ids=[c[0] for c in EXPAND_CASES])
def test_expand(entries: list[Entry], env: dict[str, str], expected: list[tuple[str, str]]) -> None:
    out, _ = ini.expand(entries, env)
    assert pairs(out) == expected
    assert [(e.file, e.line) for e in out] == [(e.file, e.line) for e in entries]


def test_expand_reports_every_referenced_name() -> None:
    _, referenced = ini.expand([E("a", "%(x) %(y)"), E("set-ph", "p=%(z)"), E("b", "$(NO) %(w")], {})
    assert referenced == {"x", "y", "z"}


def test_expand_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPEROR_INI_TEST", "yes")
    assert pairs(ini.expand([E("k", "$(EMPEROR_INI_TEST)")])[0]) == [("k", "yes")]


@pytest.mark.parametrize(("entries", "message", "line", "key"), [
    ([E("a", "%(a)")], "placeholder loop: a -> a", 1, "a"),
    ([E("x", "%(a)", 1), E("a", "%(b)", 2), E("b", "%(a)", 3)], "placeholder loop: a -> b -> a", 2, "a"),
    ([E("a", "%(b)", 1), E("set-ph", "b=%(a)", 2)], "placeholder loop: a -> b -> a", 1, "a"),
    ([E("set", "noequals")], "needs name=value", 1, "set"),
    ([E("set-placeholder", "=v")], "needs name=value", 1, "set-placeholder"),
], ids=["self", "cycle", "cycle via set-ph", "set without =", "set-ph without name"])
def test_expand_errors(entries: list[Entry], message: str, line: int, key: str) -> None:
    with pytest.raises(IniError) as info:
        ini.expand(entries, {})
    exc = info.value
    assert (exc.message, exc.file, exc.line, exc.key) == (message, "/t.ini", line, key)
    assert str(info.value) == f"/t.ini:{line}: {key}: {message}"


def test_deep_chain_is_iterative() -> None:
    n = 10_000
    entries = [E(f"a{i}", f"%(a{i + 1})", i + 1) for i in range(n)] + [E(f"a{n}", "end")]
    start = time.monotonic()
    out, _ = ini.expand(entries, {})
    assert out[0].value == "end" and time.monotonic() - start < 5


def test_deep_cycle_reports_a_loop_without_recursion_error() -> None:
    n = 10_000
    entries = [E(f"a{i}", f"%(a{(i + 1) % n})", i + 1) for i in range(n)]
    with pytest.raises(IniError, match=r"placeholder loop: a0 -> a1 -> .* -> a9999 -> a0$"):
        ini.expand(entries, {})


def test_exponential_expansion_is_capped() -> None:
    entries = [E("a0", "xxxxxxxx")] + [E(f"a{i + 1}", f"%(a{i})%(a{i})") for i in range(40)]
    start = time.monotonic()
    with pytest.raises(IniError, match="longer than 65536 characters") as info:
        ini.expand(entries, {})
    assert info.value.key.startswith("a") and time.monotonic() - start < 5


def test_long_env_value_is_capped() -> None:
    with pytest.raises(IniError, match="longer than"):
        ini.expand([E("k", "$(BIG)")], {"BIG": "x" * (ini.MAX_VALUE_LEN + 1)})


def test_load_then_expand_with_command_line(tmp_path: Path) -> None:
    """The config.py flow: file entries, then command-line entries, then one expand()."""
    path = write(tmp_path, "app.ini", "[uwsgi]\nchdir = %(base)/%n\n")
    entries = [*ini.load(str(path)), Entry("base", "/srv", "command line", 0)]
    out, referenced = ini.expand(entries, {})
    assert pairs(out) == [("chdir", "/srv/app"), ("base", "/srv")] and referenced == {"base"}


# ------------------------------------------------------------------------------------ hostile files

def test_size_cap(tmp_path: Path) -> None:
    ok = write(tmp_path, "ok.ini", "[uwsgi]\n" + ";" * (ini.MAX_FILE_SIZE - 9) + "\n")
    assert os.path.getsize(ok) == ini.MAX_FILE_SIZE and ini.load(str(ok)) == []
    big = write(tmp_path, "big.ini", "[uwsgi]\n" + ";" * ini.MAX_FILE_SIZE)
    with pytest.raises(IniError) as info:
        ini.load(str(big))
    assert info.value.file == str(big)
    assert f"file too large ({ini.MAX_FILE_SIZE + 8} bytes" in info.value.message


@pytest.mark.timeout(10)
def test_fifo_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.ini"
    os.mkfifo(fifo)
    with pytest.raises(IniError, match="refusing to read a FIFO") as info:
        ini.load(str(fifo))
    assert info.value.file == str(fifo)
    write(tmp_path, "main.ini", "[uwsgi]\nini = fifo.ini\n")
    with pytest.raises(IniError, match=r"cannot include .*fifo\.ini: refusing to read a FIFO"):
        ini.load(str(tmp_path / "main.ini"))


@pytest.mark.timeout(10)
def test_fifo_swapped_in_after_stat_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fstat on the opened descriptor is what counts (the path may change after stat)."""
    fifo = tmp_path / "fifo.ini"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(ini.os, "stat", lambda p, *a, **k: real_stat(__file__))
    with pytest.raises(IniError, match="refusing to read a FIFO"):
        ini.load(str(fifo))


@pytest.mark.parametrize(("target", "kind"), [("/dev/null", "a character device"), (".", "a directory")])
def test_non_regular_files_refused(tmp_path: Path, target: str, kind: str) -> None:
    with pytest.raises(IniError, match=f"refusing to read {kind}"):
        ini.load(target, cwd=str(tmp_path))


def test_total_size_cap_after_expansion() -> None:
    """Many references to one large placeholder must not multiply into gigabytes."""
    big = "x" * (ini.MAX_VALUE_LEN - 10)
    entries = [E("a", big)] + [E("b", "%(a)", i + 2) for i in range(ini.MAX_TOTAL_LEN // len(big) + 2)]
    start = time.monotonic()
    with pytest.raises(IniError, match=r"larger than .* after expansion"):
        ini.expand(entries, {})
    assert time.monotonic() - start < 5


def test_total_size_cap_in_for_blocks(tmp_path: Path) -> None:
    text = "[uwsgi]\nfor-times = 100000\nk = %(_)" + "x" * 60_000 + "\nendfor\n"
    with pytest.raises(IniError, match="configuration larger than"):
        load_text(tmp_path, text)


def test_entry_count_cap(tmp_path: Path) -> None:
    with pytest.raises(IniError, match="more than 100000 entries"):
        load_text(tmp_path, "[uwsgi]\nfor-times = 100000\na\nb\nendfor\n")


# -------------------------------------------------------------------------------------- properties

_FRAGMENTS = st.sampled_from([
    "[uwsgi]", "[zerg]", "[", "]", "=", " = ", "k", "socket", "%(", ")", "%(k)", "%(a)", "a = %(b)",
    "b = %(a)", "%n", "%", "%%", "$(HOME)", "$(", "@(/etc/passwd)", "ini = t.ini", "ini = t.ini:zerg",
    "include = other.ini", "for = a b", "for-times = 3", "endfor", "end", "if-env = HOME", "endif",
    "set = x=1", "set-ph = y=%(x)", ";", "#", "\n", "\r\n", "\t", " ", "\ufeff", "é", "\x00",
])


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(), st.lists(_FRAGMENTS, max_size=60).map("".join)),
       section=st.sampled_from(["", "zerg", "uwsgi"]))
def test_arbitrary_text_only_raises_ini_error(tmp_path: Path, text: str, section: str) -> None:
    path = tmp_path / "t.ini"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        entries = ini.load(f"{path}:{section}" if section else str(path), environ={"HOME": "/h"})
        ini.expand([*entries, Entry("cl", "%(k)", "command line", 0)], {"HOME": "/h"})
    except IniError:
        pass


@settings(max_examples=200, deadline=2000)
@given(st.lists(st.tuples(st.sampled_from("abcdefg"), st.text("abcdefg%()$x ", max_size=12)), max_size=30))
def test_expand_property(rows: list[tuple[str, str]]) -> None:
    """Any mix of references either expands or reports a loop; nothing else, never a hang."""
    entries = [E(k, v, i + 1) for i, (k, v) in enumerate(rows)]
    try:
        out, _ = ini.expand(entries, {})
    except IniError as exc:
        assert exc.message.startswith("placeholder loop: ")
        return
    assert [e.key for e in out] == [e.key for e in entries]


def test_problems_are_collected_and_reading_goes_on(tmp_path: Path) -> None:
    write(tmp_path, "inc.ini", "[uwsgi]\nfrom-include = 1\nyaml = x.yml\n")
    problems: list[IniError] = []
    got = load_text(tmp_path, "[uwsgi]\na = 1\nxml = a.xml\nini = missing.ini\nendfor\n= v\n"
                    "for-times = many\nskipped = %(_)\nendfor\nini = inc.ini\nfor = x\nfor = y\nb = %(_)\n"
                    "endfor\n[broken\nhidden = 1\n[uwsgi]\nc = 3\nif-env = X\n", problems=problems)
    assert pairs(got) == [("a", "1"), ("from-include", "1"), ("b", "x"), ("c", "3")]
    # malformed lines are found when the file is split, the rest when its lines are applied
    assert [(Path(p.file).name, p.line, p.key, p.message.split(":")[0]) for p in problems] == [
        ("t.ini", 6, "", "'=' with no key before it"),
        ("t.ini", 15, "", "section header without closing ']'"),
        ("t.ini", 3, "xml", "not supported by emperor"),
        ("t.ini", 4, "ini", f"cannot include {tmp_path}/missing.ini"),
        ("t.ini", 5, "endfor", "no open for/if block to end"),
        ("t.ini", 7, "for-times", "needs a count from 0 to 100000, got 'many'"),
        ("inc.ini", 3, "yaml", "not supported by emperor"),
        ("t.ini", 12, "for", "nested block inside 'for' (line 11) is not supported"),
        ("t.ini", 19, "if-env", "block is never closed (missing endfor/endif)")]


def test_limits_still_stop_reading_when_collecting(tmp_path: Path) -> None:
    problems: list[IniError] = []
    with pytest.raises(IniError, match="more than 100000 entries"):
        load_text(tmp_path, "[uwsgi]\nxml = a\nfor-times = 100000\nk = %(_)\nk2 = %(_)\nendfor\n",
                  problems=problems)
    assert [p.key for p in problems] == ["xml"]
