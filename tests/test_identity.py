"""Each vassal as its own user: uid/gid/chown-socket/umask under a root emperor (issue #10).

Real emperor, real vassals, real users (``nobody`` and ``daemon``, present on every Debian
system, so nothing is created), real sockets. The tests run as root, as a deployment does.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ProcGroup, wait_for
from identity_rig import APP, SYSTEM_PYTHON, Emperor, children, get_json, ids, make_venv, remove, world_dir

pytestmark = [pytest.mark.live,  # starts real processes (README: Tests)
              pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")]

USERS = {"a": "nobody", "b": "daemon"}
WEB_GROUP = "www-data"


@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    d = world_dir()
    make_venv(d / "venv")
    (d / "app.py").write_text(APP)
    (d / "socks").mkdir(mode=0o755)
    (d / "run").mkdir(mode=0o755)
    root_file = d / "root-only.txt"
    root_file.write_text("")
    root_file.chmod(0o644)
    try:
        yield d
    finally:
        remove(d)


def vassal(world: Path, name: str, extra: str = "") -> str:
    return "\n".join([
        "[uwsgi]", f"socket = {world}/socks/{name}.sock", f"chdir = {world}", "module = app",
        f"home = {world}/venv", "processes = 2", f"env = ROOT_FILE={world}/root-only.txt", extra, ""])


def user_ids(user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def assert_runs_as(pid: int, user: str, more_groups: tuple[int, ...] = ()) -> None:
    uid, gid = user_ids(user)
    u, g, groups = ids(pid)
    assert u == (uid,) * 4, (pid, u)
    assert g == (gid,) * 4, (pid, g)
    assert set(groups) == {*os.getgrouplist(user, gid), *more_groups}, (pid, groups)


def test_two_vassals_two_users(world: Path, procs: ProcGroup) -> None:
    """Master and every worker of each vassal run as its user, also after a worker recycle and a
    reload; the app cannot write a root-owned file; the sockets have the owner and mode asked for;
    the stats socket is the user's; the emperor still drives the vassals over the channel."""
    (world / "emp1").mkdir()
    emp = Emperor(world / "emp1", procs)
    for name, user in USERS.items():
        emp.write(name, vassal(world, name, f"uid = {user}\ngid = {grp.getgrgid(user_ids(user)[1]).gr_name}\n"
                                            f"chown-socket = {user}:{WEB_GROUP}\nchmod-socket = 660\n"
                                            f"max-requests = 3\nstats = {world}/socks/{name}-stats.sock\n"
                                            f"pidfile = {world}/run/{name}.pid\numask = 027\n"))
    emp.write("b", (emp.vassals / "b.ini").read_text() + f"lazy-apps = true\nadd-gid = {WEB_GROUP}\n")
    emp.write("c", vassal(world, "c"))  # no uid: runs as root, warned once
    emp.start()
    for name in (*USERS, "c"):
        emp.wait_log(rf"ready: '{name}\.ini'")

    web_gid = grp.getgrnam(WEB_GROUP).gr_gid
    more = {"a": (), "b": (web_gid,)}  # b: add-gid, and lazy-apps (the app is imported in each worker)
    for name, user in USERS.items():
        uid, gid = user_ids(user)
        master = emp.master(name)
        wait_for(lambda m=master: len(children(m)) == 2, 10, what=f"{name}: two workers")
        for pid in (master, *children(master)):
            assert_runs_as(pid, user, more[name])
        sock = world / "socks" / f"{name}.sock"
        st = sock.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, web_gid, 0o660)
        st = (world / "socks" / f"{name}-stats.sock").stat()
        assert (st.st_uid, st.st_gid) == (uid, gid)
        with socket.socket(socket.AF_UNIX) as s:  # served by the dropped master: it reads /proc as the user
            s.connect(str(world / "socks" / f"{name}-stats.sock"))
            doc = json.loads(b"".join(iter(lambda: s.recv(65536), b"")))
        assert doc["uid"] == uid and all(w["rss"] > 0 for w in doc["workers"]), doc
        assert (world / "run" / f"{name}.pid").read_text().strip() == str(master)
        assert stat.S_IMODE((world / "run" / f"{name}.pid").stat().st_mode) == 0o640  # umask = 027
        doc = get_json(sock)
        assert (doc["uid"], doc["euid"], doc["gid"]) == (uid, uid, gid)
        assert doc["wrote"] is False, "the app wrote a root-owned file"
        assert doc["prefix"] == str(world / "venv")

        # worker recycle (max-requests = 3): new workers, same user
        first = set(children(master))
        seen: set[int] = set()
        for _ in range(20):
            doc = get_json(sock)
            assert doc["uid"] == uid
            seen.add(int(doc["pid"]))  # type: ignore[call-overload]
            if seen - first:
                break
        assert seen - first, "no worker was recycled"
        for pid in children(master):
            assert_runs_as(pid, user, more[name])

    # a reload (touch): same master pid, re-executed as the user, new workers as the user
    mark = emp.mark()
    master = emp.master("a")
    old = children(master)
    os.utime(emp.vassals / "a.ini")
    emp.wait_log(r"reloaded: 'a\.ini'", after=mark)
    wait_for(lambda: children(master) and not (children(master) & old), 15, what="new workers after reload")
    assert emp.master("a") == master
    for pid in (master, *children(master)):
        assert_runs_as(pid, "nobody")
    assert get_json(world / "socks" / "a.sock")["uid"] == user_ids("nobody")[0]
    assert (world / "run" / "a.pid").read_text().strip() == str(master)
    assert (world / "socks" / "a-stats.sock").exists()

    # the root vassal: warned once, naming its file, also after a reload
    mark = emp.mark()
    os.utime(emp.vassals / "c.ini")
    emp.wait_log(r"reloaded: 'c\.ini'", after=mark)
    warning = f"{emp.vassals}/c.ini: runs as root: set uid/gid"
    assert emp.log.count(warning) == 1, emp.log[-3000:]
    assert "runs as root" not in emp.log.replace(warning, "")
    assert get_json(world / "socks" / "c.sock")["uid"] == 0


def test_socket_group_lets_the_web_server_in(world: Path, procs: ProcGroup) -> None:
    """chown-socket = user:www-data + chmod-socket = 660: a www-data process connects, another
    user is refused by the kernel; the vassal itself runs as its own user."""
    (world / "emp2").mkdir()
    emp = Emperor(world / "emp2", procs)
    emp.write("g", vassal(world, "g", f"uid = nobody\nchown-socket = nobody:{WEB_GROUP}\n"
                                      "chmod-socket = 660\n"))
    emp.start()
    emp.wait_log(r"ready: 'g\.ini'")
    sock = world / "socks" / "g.sock"
    probe = ("import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
             "try:\n s.connect(sys.argv[1]); print('ok')\nexcept PermissionError: print('denied')\n")

    def connect_as(user: str) -> str:
        pw = pwd.getpwnam(user)
        out = subprocess.run([SYSTEM_PYTHON, "-c", probe, str(sock)], user=pw.pw_uid, group=pw.pw_gid,
                             extra_groups=[], capture_output=True, text=True, timeout=20, cwd="/")
        return out.stdout.strip() or out.stderr

    assert connect_as(WEB_GROUP) == "ok"
    assert connect_as("daemon") == "denied"


def run_vassal(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "emperor.vassal", *args], capture_output=True, text=True,
                          timeout=30, env=env)


@pytest.mark.parametrize(("line", "key", "message"), [
    ("uid = no-such-user-xyz", "uid", "no such user 'no-such-user-xyz'"),
    ("gid = no-such-group-xyz", "gid", "no such group 'no-such-group-xyz'"),
    ("chown-socket = nobody:no-such-group-xyz", "chown-socket", "no such group 'no-such-group-xyz'"),
    ("add-gid = no-such-group-xyz", "add-gid", "no such group 'no-such-group-xyz'"),
])
def test_unknown_user_or_group_is_a_config_error_before_binding(world: Path, line: str, key: str,
                                                                  message: str) -> None:
    sock = world / "socks" / f"bad-{key}.sock"
    ini = world / f"bad-{key}.ini"
    ini.write_text(f"[uwsgi]\nsocket = {sock}\nmodule = app\n{line}\n")
    out = run_vassal(["--ini", str(ini)])
    assert out.returncode == 78, out.stderr
    assert f"{ini}:4: {key}: {message}" in out.stderr, out.stderr
    assert not sock.exists(), "a socket was bound before the configuration was checked"


def test_bad_input_under_the_emperor_affects_only_that_vassal(world: Path, procs: ProcGroup) -> None:
    (world / "emp3").mkdir()
    emp = Emperor(world / "emp3", procs)
    emp.write("baduser", vassal(world, "baduser", "uid = no-such-user-xyz\n"))
    emp.write("badgroup", vassal(world, "badgroup", "uid = nobody\ngid = no-such-group-xyz\n"))
    emp.write("good", vassal(world, "good", "uid = nobody\n"))
    emp.start()
    emp.wait_log(r"ready: 'good\.ini'")
    emp.wait_log(rf"{emp.vassals}/baduser.ini:8: uid: no such user 'no-such-user-xyz'")
    emp.wait_log(rf"{emp.vassals}/badgroup.ini:9: gid: no such group 'no-such-group-xyz'")
    assert not (world / "socks" / "baduser.sock").exists()
    assert get_json(world / "socks" / "good.sock")["uid"] == user_ids("nobody")[0]


def test_tyrant_wins_over_uid_zero_in_the_file(world: Path, procs: ProcGroup) -> None:
    """A vassal file owned by nobody that asks for uid = 0 runs as nobody (warned), never as root."""
    (world / "emp4").mkdir()
    emp = Emperor(world / "emp4", procs)
    uid, gid = user_ids("nobody")
    own = world / "socks-nobody"  # a tyrant-mode vassal never has root: it binds in its user's directory
    own.mkdir()
    os.chown(own, uid, gid)
    path = emp.write("t", vassal(world, "t", "uid = 0\ngid = 0\n").replace("/socks/", "/socks-nobody/"))
    os.chown(path, uid, gid)
    path.chmod(0o644)
    emp.start("emperor-tyrant = true")
    emp.wait_log(r"ready: 't\.ini'")
    emp.wait_log(r"uid/gid 0:0 ignored: emperor-tyrant runs this vassal as its file's owner")
    master = emp.master("t")
    for pid in (master, *children(master)):
        assert ids(pid)[0] == (uid,) * 4
    assert get_json(own / "t.sock")["uid"] == uid


def test_standalone_reload_keeps_root_owned_log_and_pidfile(world: Path, procs: ProcGroup) -> None:
    """logto and pidfile in root-owned places: opened as root, kept across a SIGHUP reload (the
    re-executed master runs as the user and neither re-opens the log nor re-binds a socket)."""
    log = world / "run" / "st.log"
    ini = world / "st.ini"
    ini.write_text(vassal(world, "st", f"uid = nobody\nlogto = {log}\npidfile = {world}/run/st.pid\n"
                                       f"stats = {world}/socks/st-stats.sock\n"))
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="st")
    wait_for(lambda: log.exists() and "ready:" in log.read_text(), 20, what="standalone vassal ready")
    master = int((world / "run" / "st.pid").read_text())
    assert master == proc.pid  # the re-exec into the venv's python keeps the pid
    assert_runs_as(master, "nobody")
    assert log.stat().st_uid == 0 and stat.S_IMODE(log.stat().st_mode) == 0o640
    os.kill(master, 1)
    wait_for(lambda: "master pid" in log.read_text().split("reloading:")[-1], 20, what="reloaded master")
    wait_for(lambda: log.read_text().count("ready:") == 2, 20, what="ready after the reload")
    text = log.read_text()
    assert "error" not in text.lower() and "disabled" not in text, text
    assert int((world / "run" / "st.pid").read_text()) == master
    for pid in (master, *children(master)):
        assert_runs_as(pid, "nobody")
    assert get_json(world / "socks" / "st.sock")["uid"] == user_ids("nobody")[0]


def test_zerg_runs_as_its_vassals_user(world: Path, procs: ProcGroup) -> None:
    """A zerg started as root with no uid of its own drops to the owner of the zerg server, which
    the vassal bound and handed to its user: the lent workers never run as root."""
    zsock = world / "socks" / "zv-zerg.sock"
    ini = world / "zv.ini"
    ini.write_text(vassal(world, "zv", f"uid = nobody\nzerg-server = {zsock}\n") +
                   f"\n[zerg]\nzerg = {zsock}\nchdir = {world}\nmodule = app\nhome = {world}/venv\n"
                   f"processes = 2\nenv = ROOT_FILE={world}/root-only.txt\n")
    parent = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="zv")
    wait_for(lambda: "ready:" in parent.log_text(), 20, what="vassal ready", proc=parent)
    uid, gid = user_ids("nobody")
    assert (zsock.stat().st_uid, zsock.stat().st_gid) == (uid, gid)
    zerg = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", f"{ini}:zerg"], name="zerg")
    wait_for(lambda: len(children(zerg.pid)) == 2, 20, what="zerg workers", proc=zerg)
    for pid in (zerg.pid, *children(zerg.pid)):
        assert_runs_as(pid, "nobody")
    assert "handed 1 socket(s)" in parent.log_text()


def test_emperor_uid_drops_the_emperor_itself(world: Path, procs: ProcGroup) -> None:
    """uid/gid in the emperor's ini: the emperor binds what it needs, then runs as that user, and
    so do the vassals it starts (which need no uid of their own)."""
    (world / "emp5").mkdir()
    emp = Emperor(world / "emp5", procs)
    uid, gid = user_ids("nobody")
    own = world / "socks-emp5"
    own.mkdir()
    os.chown(own, uid, gid)
    emp.write("e", vassal(world, "e").replace("/socks/", "/socks-emp5/"))
    stats = world / "socks" / "emp5-stats.sock"
    proc = emp.start(f"uid = nobody\ngid = nogroup\nemperor-stats = {stats}")
    emp.wait_log(r"ready: 'e\.ini'")
    assert_runs_as(proc.pid, "nobody")
    master = emp.master("e")
    for pid in (master, *children(master)):
        assert_runs_as(pid, "nobody")
    assert get_json(own / "e.sock")["uid"] == uid
    assert stats.exists()  # bound as root, before the drop
    assert "runs as root" not in emp.log


def test_emperor_uid_with_tyrant_is_refused(world: Path) -> None:
    ini = world / "tyrant-uid.ini"
    ini.write_text(f"[uwsgi]\nemperor = {world}\nemperor-tyrant = true\nuid = nobody\n")
    out = subprocess.run([sys.executable, "-m", "emperor", "--ini", str(ini)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 78, out.stderr
    assert f"{ini}:3: emperor-tyrant: emperor-tyrant needs the emperor to stay root" in out.stderr


def test_reload_cannot_change_the_user(world: Path, procs: ProcGroup) -> None:
    """After the drop a reload cannot become another user: refused, the old configuration keeps
    serving as its user."""
    ini = world / "chg.ini"
    ini.write_text(vassal(world, "chg", "uid = nobody\n"))
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="chg")
    sock = world / "socks" / "chg.sock"
    wait_for(lambda: get_json(sock), 20, what="chg serving", ignore=(OSError,), proc=proc)
    ini.write_text(vassal(world, "chg", "uid = daemon\n"))
    os.kill(proc.pid, 1)
    wait_for(lambda: "a reload cannot change the user" in proc.log_text(), 20, what="refusal", proc=proc)
    assert get_json(sock)["uid"] == user_ids("nobody")[0]


def test_vassal_set_gives_uid_to_every_vassal() -> None:
    from emperor.empire.spawn import vassal_set_args

    assert vassal_set_args(["uid=nobody", "gid = nogroup", "chown-socket=nobody:www-data"]) == [
        "--uid", "nobody", "--gid", "nogroup", "--chown-socket", "nobody:www-data"]


def test_numeric_uid_without_passwd_entry_needs_gid(world: Path) -> None:
    ini = world / "numeric.ini"
    ini.write_text(f"[uwsgi]\nsocket = {world}/socks/numeric.sock\nmodule = app\nuid = 54321\n")
    out = run_vassal(["--ini", str(ini)])
    assert out.returncode == 78, out.stderr
    assert f"{ini}:4: uid: uid 54321 has no passwd entry" in out.stderr, out.stderr


def test_not_root_cannot_switch_user(world: Path) -> None:
    """A vassal started as nobody that asks for daemon: a configuration error (uWSGI ignores it)."""
    ini = world / "notroot.ini"
    ini.write_text(vassal(world, "notroot", "uid = daemon"))
    uid, gid = user_ids("nobody")
    boot = Path(__file__).resolve().parent.parent / "emperor" / "_boot.py"
    out = subprocess.run([f"{world}/venv/bin/python", str(boot), "--ini", str(ini)], capture_output=True,
                         text=True, timeout=30, user=uid, group=gid, extra_groups=[], cwd="/")
    assert out.returncode == 78, out.stderr
    want = f"{ini}:8: uid: cannot switch to uid 1 gid 1: not running as root (uid 65534, gid 65534)"
    assert want in out.stderr, out.stderr
    assert not (world / "socks" / "notroot.sock").exists()


def test_dropped_vassal_dies_with_its_emperor(world: Path, procs: ProcGroup) -> None:
    """The drop clears the parent-death signal (a credential change does); it is set again, so a
    SIGKILLed emperor still takes its dropped vassals and their workers with it."""
    (world / "emp6").mkdir()
    emp = Emperor(world / "emp6", procs)
    emp.write("k", vassal(world, "k", "uid = nobody\n"))
    proc = emp.start()
    emp.wait_log(r"ready: 'k\.ini'")
    master = emp.master("k")
    family = {master, *children(master)}
    assert len(family) == 3
    os.kill(master, 19)  # SIGSTOP: the master cannot notice the closed channel; only the kernel acts
    os.kill(proc.pid, 9)
    try:
        wait_for(lambda: not any(Path(f"/proc/{p}").exists() for p in family), 10, what="vassal gone")
    finally:
        for p in family:  # never leave a stopped orphan behind, even when the test fails
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, 9)


def test_reload_with_a_new_add_gid_says_it_is_not_applied(world: Path, procs: ProcGroup) -> None:
    ini = world / "addgid.ini"
    ini.write_text(vassal(world, "addgid", "uid = nobody\n"))
    proc = procs.start([sys.executable, "-m", "emperor.vassal", "--ini", str(ini)], name="addgid")
    sock = world / "socks" / "addgid.sock"
    wait_for(lambda: get_json(sock), 20, what="serving", ignore=(OSError,), proc=proc)
    ini.write_text(vassal(world, "addgid", f"uid = nobody\nadd-gid = {WEB_GROUP}\n"))
    os.kill(proc.pid, 1)
    wait_for(lambda: "supplementary groups" in proc.log_text() and "not applied" in proc.log_text(), 20,
             what="the warning", proc=proc)
    wait_for(lambda: "ready:" in proc.log_text().partition("(reload 1)")[2], 20, what="reloaded", proc=proc)
    assert_runs_as(proc.pid, "nobody")
