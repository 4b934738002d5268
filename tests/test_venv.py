"""``home`` / ``virtualenv``: each vassal with its own virtualenv's packages (issue #10).

The venvs are built by the tests from the system Python, without pip or network; the
"package" each holds is written into its site-packages (what installing a local package
leaves there), in two versions, plus a fake ``psutil`` (a package the emperor itself depends
on), to show that the emperor's own dependencies never shadow the app's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Nginx, ProcGroup, http_get, request, wait_for, wsgi_vars
from identity_rig import APP, Emperor, get_json, make_venv, remove, world_dir

from emperor import venv
from emperor.empire import spawn

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

# Records, at import time, every module loaded so far that is neither the standard library nor
# emperor itself: what the vassal runtime imported before the app. (sitecustomize belongs to the
# interpreter's installation: Debian ships one in its stdlib directory.)
PROBE_APP = '''\
import sys
OURS = ("emperor", "app_probe", "__main__", "sitecustomize", "verpkg")
FOREIGN = sorted(m for m in sys.modules if m.partition(".")[0] not in sys.stdlib_module_names
                 and m.partition(".")[0] not in OURS)


def application(environ, start_response):
    import verpkg
    now = sorted(m for m in sys.modules if m.partition(".")[0] not in sys.stdlib_module_names
                 and m.partition(".")[0] not in OURS)
    body = (" ".join(FOREIGN) + "|" + " ".join(now) + "|" + verpkg.__version__).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    d = world_dir()
    make_venv(d / "venv-a", {"verpkg": "1.0.0", "psutil": "0.0.1"})
    make_venv(d / "venv-b", {"verpkg": "2.0.0", "psutil": "0.0.2"})
    (d / "app.py").write_text(APP)
    (d / "app_probe.py").write_text(PROBE_APP)
    (d / "socks").mkdir(mode=0o755)
    try:
        yield d
    finally:
        remove(d)


def vassal(world: Path, name: str, home: str, extra: str = "") -> str:
    return "\n".join(["[uwsgi]", f"socket = {world}/socks/{name}.sock", f"chdir = {world}", "module = app",
                      f"home = {home}", "processes = 2", extra, ""])


def test_two_venvs_two_versions_through_nginx(world: Path, procs: ProcGroup,
                                              nginx: Callable[..., Nginx]) -> None:
    """Two vassals of one emperor, two venvs pinning two versions of one package (and of psutil,
    which the emperor itself uses): each app sees its own, through nginx; each runs as its user."""
    (world / "emp").mkdir()
    emp = Emperor(world / "emp", procs)
    emp.write("a", vassal(world, "a", f"{world}/venv-a", "uid = nobody"))
    emp.write("b", vassal(world, "b", f"{world}/venv-b", "uid = daemon"))
    ng = nginx()
    ng.add_uwsgi("/a/", world / "socks" / "a.sock")
    ng.add_uwsgi("/b/", world / "socks" / "b.sock")
    ng.start()
    emp.start()
    for name in ("a", "b"):
        emp.wait_log(rf"ready: '{name}\.ini'")
    for name, version, psutil_version, uid in (("a", "1.0.0", "0.0.1", 65534), ("b", "2.0.0", "0.0.2", 1)):
        status, _, body = wait_for(lambda n=name: http_get(ng.url(f"/{n}/")), 20, what=f"{name} via nginx",
                                   ignore=(OSError,))
        assert status == 200, body
        doc = json.loads(body)
        assert doc["version"] == version
        assert doc["psutil"] == psutil_version, "the emperor's psutil shadowed the venv's"
        assert doc["prefix"] == f"{world}/venv-{name}"
        assert doc["uid"] == uid
        assert doc["emperor"] == os.path.join(venv.package_dir(), "__init__.py")
        cmdline = Path(f"/proc/{emp.master(name)}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode() == f"{world}/venv-{name}/bin/python"  # started with it, no extra exec


def test_vassal_imports_nothing_outside_the_stdlib_before_the_app(world: Path, procs: ProcGroup) -> None:
    """Standalone ``python -m emperor.vassal`` with ``home`` re-executes itself under the venv's python;
    up to the app's import, nothing but the standard library and emperor was imported."""
    ini = world / "probe.ini"
    ini.write_text(vassal(world, "probe", f"{world}/venv-b", "module = app_probe\nstats = "
                          f"{world}/socks/probe-stats.sock\nreload-on-rss = 4096"))
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="probe")
    sock = world / "socks" / "probe.sock"
    def answer() -> bytes:
        status, _, body, _ = request(str(sock), wsgi_vars(path="/"), timeout=5)
        assert status == 200, body
        return body

    wait_for(answer, 20, what="probe app", ignore=(OSError,), proc=proc)
    # the stats document reads every worker's memory, reload-on-rss each worker's own after a response:
    # both from /proc, not through psutil (the venv's fake psutil would break them)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(f"{world}/socks/probe-stats.sock")
        doc = json.loads(b"".join(iter(lambda: s.recv(65536), b"")))
    assert all(w["rss"] > 0 for w in doc["workers"]), doc["workers"]
    for _ in range(4):
        answer()
    before, now, version = answer().decode().split("|")
    assert before == "", f"imported before the app: {before}"
    assert now == "", f"imported by the vassal runtime while serving: {now}"
    assert version == "2.0.0"
    argv0 = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert argv0 == f"{world}/venv-b/bin/python"  # re-executed itself under the venv's python


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d.mkdir(), "is not a virtualenv (no pyvenv.cfg)"),
    (lambda d: (d.mkdir(), (d / "pyvenv.cfg").write_text("version = 3.11.2\n")),
     "has no runnable bin/python"),
    (lambda d: None, "is not a directory"),
    (lambda d: (d.mkdir(), (d / "pyvenv.cfg").write_text("version = 3.9.2\n"), (d / "bin").mkdir(),
                os.symlink(sys.executable, d / "bin" / "python")), "the virtualenv is Python 3.9.2"),
])
def test_bad_home_is_a_config_error(world: Path, tmp_path: Path, make: Callable[[Path], object],
                                    message: str) -> None:
    home = tmp_path / "home"
    make(home)
    sock = world / "socks" / "badhome.sock"
    ini = tmp_path / "bad.ini"
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nmodule = app\nvirtualenv = {home}\n")
    out = subprocess.run([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 78, out.stderr
    assert f"{ini}:4: virtualenv: {home}" in out.stderr and message in out.stderr, out.stderr
    assert not sock.exists()


def test_bad_home_under_the_emperor_affects_only_that_vassal(world: Path, procs: ProcGroup) -> None:
    (world / "emp2").mkdir()
    emp = Emperor(world / "emp2", procs)
    (world / "not-a-venv").mkdir()
    emp.write("bad", vassal(world, "bad", f"{world}/not-a-venv"))
    emp.write("ok", vassal(world, "ok", f"{world}/venv-a"))
    emp.start()
    emp.wait_log(r"ready: 'ok\.ini'")
    emp.wait_log(rf"{emp.vassals}/bad.ini:5: home: {world}/not-a-venv is not a virtualenv \(no pyvenv.cfg\)")
    assert get_json(world / "socks" / "ok.sock")["version"] == "1.0.0"


# ---- the decisions, where this machine has no second CPython version to run


def fake_venv(path: Path, cfg: str) -> Path:
    (path / "bin").mkdir(parents=True)
    os.symlink(sys.executable, path / "bin" / "python")
    (path / "pyvenv.cfg").write_text(cfg)
    return path


@pytest.mark.parametrize(("cfg", "version"), [
    ("home = /usr/bin\nversion = 3.12.1\n", (3, 12, 1)),  # python -m venv
    ("home = /usr/bin\nversion_info = 3.13.0.final.0\n", (3, 13, 0)),  # virtualenv
    ("home = /usr/bin\n", None),
])
def test_venv_version_is_read_from_pyvenv_cfg(tmp_path: Path, cfg: str, version: tuple[int, ...]) -> None:
    fake_venv(tmp_path / "v", cfg)
    assert venv.venv_version(str(tmp_path / "v")) == version


def test_other_python_versions_run_with_their_own_interpreter(tmp_path: Path) -> None:
    """A venv of another CPython >= 3.11 is used as is (its python runs the pure-Python runtime);
    an older one is refused, naming both versions and the fix."""
    newer = fake_venv(tmp_path / "new", "version = 3.13.1\n")
    python = venv.check(str(newer))
    assert python == f"{newer}/bin/python"
    assert venv.command(python) == [python, os.path.join(venv.package_dir(), "_boot.py")]
    old = fake_venv(tmp_path / "old", "version = 3.10.12\n")
    with pytest.raises(venv.VenvError) as err:
        venv.check(str(old))
    mine = ".".join(map(str, sys.version_info[:3]))
    assert "Python 3.10.12" in str(err.value) and ">= 3.11" in str(err.value) and mine in str(err.value)


def test_spawn_picks_the_interpreter_from_home(tmp_path: Path) -> None:
    good = fake_venv(tmp_path / "good", "version = 3.11.2\n")
    ini = tmp_path / "v.ini"
    ini.write_text(f"[uwsgi]\nsocket = /tmp/x.sock\nvenv = {good}\n")
    argv = spawn.vassal_argv(str(ini), [], [])
    assert argv[:2] == [f"{good}/bin/python", os.path.join(venv.package_dir(), "_boot.py")]
    assert argv[2:] == ["--ini", str(ini)]
    # vassal-set can give it to every vassal
    plain = tmp_path / "p.ini"
    plain.write_text("[uwsgi]\nsocket = /tmp/x.sock\n")
    every = spawn.vassal_set_args([f"home={good}"])
    assert spawn.vassal_argv(str(plain), every, [])[0] == f"{good}/bin/python"
    assert spawn.vassal_argv(str(plain), [], [])[:3] == [sys.executable, "-m", "emperor.vassal"]
    # a broken venv: the vassal is started as usual and reports the error itself
    bad = tmp_path / "bad.ini"
    bad.write_text(f"[uwsgi]\nsocket = /tmp/x.sock\nhome = {tmp_path}/nothing\n")
    assert spawn.vassal_argv(str(bad), [], [])[:3] == [sys.executable, "-m", "emperor.vassal"]


def test_runtime_works_without_the_c_speedups() -> None:
    """Another CPython version cannot load _speedups (built for this one): the pure-Python parser
    takes over. Simulated by refusing the import."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "emperor.protocol._speedups":
            raise ImportError("built for another Python")
sys.meta_path.insert(0, Block())
from emperor.protocol import uwsgi
assert uwsgi._c_parse_vars is None
block = b"".join(len(x).to_bytes(2, "little") + x for x in (b"PATH_INFO", b"/x", b"REQUEST_METHOD", b"GET"))
print(sorted(uwsgi.parse_vars(block, 0, len(block)).items()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "('PATH_INFO', '/x')" in out.stdout


def test_tyrant_file_is_read_by_the_emperor_only_when_it_reads_nothing_else(tmp_path: Path) -> None:
    """In tyrant mode the root emperor picks the venv only from a file that includes nothing and tests
    no path (if-exists, for ...): otherwise the vassal, as its user, finds its venv itself."""
    good = fake_venv(tmp_path / "good", "version = 3.11.2\n")
    plain = tmp_path / "plain.ini"
    plain.write_text(f"[uwsgi]\nsocket = /tmp/x.sock\nhome = {good}\n")
    checked = plain.read_bytes()
    assert spawn.vassal_argv(str(plain), [], [], tyrant=True, content=checked)[0] == f"{good}/bin/python"
    # the bytes the scan checked choose the interpreter, never the path read again (a swap after
    # the check must not pick what a tyrant-mode vassal runs as its owner)
    plain.write_text("[uwsgi]\nsocket = /tmp/x.sock\nhome = /tmp/elsewhere\n")
    assert spawn.vassal_argv(str(plain), [], [], tyrant=True, content=checked)[0] == f"{good}/bin/python"
    assert spawn.vassal_argv(str(plain), [], [], tyrant=True)[:3] == [sys.executable, "-m", "emperor.vassal"]
    for line in ("ini = /root/secret.ini", "if-exists = /root/secret\nenv = X=1\nendif =",
                 "  include = other.ini"):
        probing = tmp_path / "probing.ini"
        probing.write_text(f"[uwsgi]\nsocket = /tmp/x.sock\nhome = {good}\n{line}\n")
        argv = spawn.vassal_argv(str(probing), [], [], tyrant=True, content=probing.read_bytes())
        assert argv[:3] == [sys.executable, "-m", "emperor.vassal"], line
