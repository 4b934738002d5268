"""Hostile input and races against the emperor (issue 8: items 1, 2, 3, 8, 10, 11 and 16).

Each test names its item. The live ones run a real emperor over a temporary
apps-available/apps-enabled tree (``test_emperor_rig.Rig``); the others use real files,
real processes and real descriptors, never mocks. Several need root (chown), as the suite
does on the CI machine.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import ProcGroup, wait_for
from test_emperor_rig import Rig

from emperor import ini, inifd
from emperor.empire import access, spawn
from emperor.empire.scan import Refused, Source, examine, scan
from emperor.empire.vassals import State, Vassal

pytestmark = pytest.mark.live  # starts real processes (README: Tests)

NOBODY = 65534


@pytest.fixture
def rig(tmp_path: Path, sock_dir: Path, procs: ProcGroup) -> Rig:
    return Rig(tmp_path / "vassals", sock_dir, procs)


def _link(enabled: Path, name: bytes | str, target: str) -> None:
    """A symlink whose name may be any bytes (``Path`` cannot hold undecodable ones)."""
    raw = name if isinstance(name, bytes) else name.encode()
    os.symlink(target.encode(), os.path.join(bytes(enabled), raw))


# ------------------------------------------------------------------ item 1: file names


def test_bad_names_are_refused_by_the_scan_not_raised(tmp_path: Path) -> None:
    """Item 1: a name that is not UTF-8 made the scan raise UnicodeEncodeError (emperor exit 1)."""
    (tmp_path / "x.ini").write_text("[uwsgi]\n")
    enabled = tmp_path / "enabled"
    enabled.mkdir()
    for name in (b"caf\xe9.ini", b"cr\rname.ini", b"esc\x1b[31mred.ini", b"bidi\xe2\x80\xaeini.ini",
                 b"ok.ini"):
        _link(enabled, name, "../x.ini")
    found, refused = scan([Source.parse(str(enabled), "/")], False)
    assert list(found) == ["ok.ini"]
    assert refused[os.fsdecode(b"caf\xe9.ini")] == "the file name is not valid UTF-8; rename it"
    for name in ("cr\rname.ini", "esc\x1b[31mred.ini", "bidi\u202eini.ini"):
        assert "control characters" in refused[name]


def test_bad_names_cannot_take_the_emperor_down_and_a_colon_works(rig: Rig) -> None:
    """Item 1 (live): undecodable and control-character names are refused with one escaped
    line each, the emperor keeps governing, and ``app:v2.ini`` runs (not read as file:section).
    Item 3 (live): a link to /etc/shadow is refused, naming the file."""
    rig.write("bad")
    for name in (b"caf\xe9.ini", b"cr\rname.ini", b"esc\x1b[31mred.ini"):
        _link(rig.enabled, name, "../apps-available/bad.ini")
    rig.write("colon", tag="colon")
    _link(rig.enabled, "app:v2.ini", "../apps-available/colon.ini")
    _link(rig.enabled, "shadow.ini", "/etc/shadow")
    rig.enable("app")
    stats = rig.socks / "stats.sock"
    rig.start(f"emperor-stats = {stats}")
    rig.wait_log(r"refused: b'caf\\xe9\.ini': the file name is not valid UTF-8")
    rig.wait_log(r"refused: 'cr\\rname\.ini': the file name holds control characters")
    rig.wait_log(r"refused: 'esc\\x1b\[31mred\.ini': the file name holds control characters")
    rig.wait_log(r"refused: 'shadow\.ini': it leads to '/etc/shadow', which is not an \.ini file")
    rig.serving("app")
    assert rig.serving("colon", tag="colon")
    rig.wait_log(r"spawned: 'app:v2\.ini' \(pid \d+\)")
    assert rig.proc is not None and rig.proc.alive()
    raw = rig.proc.log_path.read_bytes()
    assert b"\xe9" not in raw and b"\x1b" not in raw and b"cr\rname" not in raw
    assert rig.count(r"refused: b'caf") == 1  # once, not at every rescan
    assert not rig.sock("bad").exists()
    with socket.socket(socket.AF_UNIX) as c:  # the stats document lists them, as valid UTF-8 JSON
        c.settimeout(5)
        c.connect(str(stats))
        data = b"".join(iter(lambda: c.recv(65536), b""))
    ids = {r["id"] for r in json.loads(data.decode("utf-8"))["refused"]}
    assert {"caf\\xe9.ini", "cr\rname.ini", "esc\x1b[31mred.ini", "shadow.ini"} <= ids, ids
    assert b"\\udc" not in data


# ------------------------------------------------------------------ item 2: the vassal reads what was checked


def test_examine_takes_owner_and_content_from_one_descriptor_under_a_swap_race(tmp_path: Path) -> None:
    """Item 2: owner (the vassal's uid in tyrant mode) and the bytes the vassal gets must come
    from the same open file, whatever a concurrent link swap does. Needs root (chown)."""
    files = {}
    for name, uid in (("victim", NOBODY), ("attacker", 1)):
        p = tmp_path / f"{name}.ini"
        p.write_text(f"[uwsgi]\n; {name}\n")
        os.chown(p, uid, uid)
        files[uid] = p.read_bytes()
    link = tmp_path / "enabled.ini"
    link.symlink_to(tmp_path / "victim.ini")
    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            tmp = tmp_path / f".swap{i % 2}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(tmp_path / ("victim.ini" if i % 2 else "attacker.ini"))
            os.replace(tmp, link)

    t = threading.Thread(target=swap)
    t.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline or len(seen) < 2:
            f = examine("enabled.ini", str(link), True)
            if f is None:
                continue
            assert f.uid is not None
            assert f.content == files[f.uid], f"uid {f.uid} with the other file's content"
            seen.add(f.uid)
    finally:
        stop.set()
        t.join()


def test_vassal_never_runs_a_file_other_than_the_one_checked_under_a_swap_race(rig: Rig,
                                                                               sock_dir: Path) -> None:
    """Item 2 (live): the link flips between a file the emperor accepts and one it refuses
    (owned by another user: item 3's rule) while the emperor spawns, reloads and stops the
    vassal. The vassal gets the checked bytes in a memfd, so the refused file's socket never
    appears; with a vassal that re-opens the path it appears within a few flips. Needs root."""
    good = rig.write("good", tag="good", extra="reload-mercy = 2")  # bounds a stop during a start (item 7)
    evil = rig.avail / "evil.ini"
    evil.write_text(rig.vassal_text("evil", tag="evil"))
    os.chown(evil, NOBODY, NOBODY)
    link = rig.enabled / "app.ini"
    link.symlink_to(good)
    rig.start()
    rig.serving("good", tag="good")
    evil_sock = rig.sock("evil")
    deadline = time.monotonic() + 6
    i = 0
    while time.monotonic() < deadline:
        i += 1
        tmp = rig.enabled / ".flip"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(good if i % 2 else evil)
        os.replace(tmp, link)  # one rename: the link always exists
        os.utime(good, ns=(time.time_ns(), time.time_ns()))  # and its target changed: a reload
        assert not evil_sock.exists(), f"the refused file was run (flip {i})"
        time.sleep(0.07)  # the pace of the flips, not a wait for a result
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(good)
    mark = rig.mark()
    os.replace(tmp, link)
    rig.wait_log(r"(ready|reloaded): 'app.ini'", after=mark, timeout=20)
    rig.serving("good", tag="good")
    log = rig.log
    assert "refused: 'app.ini': owned by uid 65534" in log
    assert rig.count(r"(spawned|reloading): 'app.ini'") >= 3, "the race was not exercised"
    assert str(evil_sock) not in log and not evil_sock.exists()


def test_pinned_ini_is_read_instead_of_the_path(tmp_path: Path) -> None:
    """Item 2: what the vassal's entry does with EMPEROR_INI_FD: the path is not opened again."""
    path = tmp_path / "app.ini"
    path.write_text("[uwsgi]\nprocesses = 7\n")
    fd = inifd.seal(b"[uwsgi]\nprocesses = 3\n")
    old = os.environ.get(inifd.ENV)
    try:
        os.environ[inifd.ENV] = inifd.env_value(fd, str(path))
        assert inifd.adopt() == str(path)
        path.unlink()  # gone, or swapped: it does not matter any more
        assert [(e.key, e.value) for e in ini.load(str(path))] == [("processes", "3")]
        new = inifd.seal(b"[uwsgi]\nprocesses = 4\n")
        inifd.replace(new)  # a RELOAD brought new bytes
        assert [(e.key, e.value) for e in ini.load(str(path))] == [("processes", "4")]
        assert os.environ[inifd.ENV] == f"{new}:{path}" and os.get_inheritable(new)
        with pytest.raises(OSError):
            os.fstat(fd)  # the old memfd is closed
        with pytest.raises(OSError):
            os.write(new, b"x")  # sealed
    finally:
        ini._PINNED.pop(str(path), None)
        current = os.environ.pop(inifd.ENV, "").partition(":")[0]
        if current.isdigit():
            os.close(int(current))
        if old is not None:
            os.environ[inifd.ENV] = old


# ------------------------------------------------------------------ item 3: what a link may lead to


def test_link_targets_must_be_ini_files_of_a_trusted_owner(tmp_path: Path) -> None:
    """Item 3: a link to any readable file was spawned (a link to /etc/shadow parsed as a root
    vassal). Needs root (chown, lchown)."""
    avail, enabled = tmp_path / "avail", tmp_path / "enabled"
    avail.mkdir()
    enabled.mkdir()
    ini_text = "[uwsgi]\nsocket = /tmp/x.sock\n"
    cases = {"mine": (0, 0, 0o644), "private": (0, 0, 0o664), "theirs": (NOBODY, NOBODY, 0o644),
             "groupw": (0, NOBODY, 0o664), "worldw": (0, 0, 0o646)}
    for name, (uid, gid, mode) in cases.items():
        p = avail / f"{name}.ini"
        p.write_text(ini_text)
        os.chown(p, uid, gid)
        p.chmod(mode)
        (enabled / f"{name}.ini").symlink_to(p)
    (avail / "notes.txt").write_text(ini_text)
    (enabled / "notes.ini").symlink_to(avail / "notes.txt")
    (enabled / "shadow.ini").symlink_to("/etc/shadow")
    found, refused = scan([Source.parse(str(enabled), "/")], False)
    assert sorted(found) == ["mine.ini", "private.ini"]  # root:root 0664: group root holds only root
    assert "not an .ini file" in refused["shadow.ini"] and "/etc/shadow" in refused["shadow.ini"]
    assert "not an .ini file" in refused["notes.ini"]
    assert "owned by uid 65534" in refused["theirs.ini"] and "must belong to root" in refused["theirs.ini"]
    assert "mode 0664" in refused["groupw.ini"] and "mode 0646" in refused["worldw.ini"]

    # tyrant: a link may enable only a file of its own owner (or be root's)
    (avail / "victim.ini").write_text(ini_text)
    os.chown(avail / "victim.ini", NOBODY, NOBODY)
    for name, link_owner in (("stolen.ini", 1), ("own.ini", NOBODY), ("admin.ini", 0)):
        (enabled / name).symlink_to(avail / "victim.ini")
        os.lchown(enabled / name, link_owner, link_owner)
    with pytest.raises(Refused, match="the link belongs to uid 1 but its target to uid 65534"):
        examine("stolen.ini", str(enabled / "stolen.ini"), True)
    for name in ("own.ini", "admin.ini"):
        f = examine(name, str(enabled / name), True)
        assert f is not None and f.uid == NOBODY


# ---------------------------------------------------------- item 8: removal during a reload, the pidfd


def test_removal_during_a_reload_stops_cleanly(rig: Rig) -> None:
    """Item 8: removing the ini while its reload is in flight left the socket file behind and
    logged "keeps its previous configuration" (the re-exec'd master read the removed file)."""
    # reload-mercy = 2: the vassal's own bound on its workers' stop. A STOP that arrives while
    # the re-exec'd master forks its workers can still be missed by those workers (item 7, the
    # vassal's side); the bound makes the master kill them and remove its socket itself.
    target = rig.write("app", extra="reload-mercy = 2")
    link = rig.enable("app")
    rig.start()
    rig.serving("app")
    for attempt in range(3):
        mark = rig.mark()
        os.utime(target, ns=(time.time_ns(), time.time_ns()))
        rig.wait_log(r"reloading: 'app.ini'", after=mark)
        link.unlink()
        rig.wait_log(r"stopped: 'app.ini'", after=mark, timeout=20)
        wait_for(lambda: not rig.sock("app").exists(), 5, what="the socket file removed")
        assert "keeps its previous configuration" not in rig.proc.log_text(mark)  # type: ignore[union-attr]
        if attempt < 2:
            mark = rig.mark()
            rig.enable("app")
            rig.wait_log(r"ready: 'app.ini'", after=mark, timeout=20)


def test_failed_first_boot_does_not_claim_a_previous_configuration(caplog: pytest.LogCaptureFixture) -> None:
    """Item 8 / 16: CONFIG_ERROR while starting or stopping has no previous configuration."""
    for state in (State.STARTING, State.STOPPING):
        v = Vassal("a.ini", "/x/a.ini", state=state, pid=1)
        with caplog.at_level(logging.INFO, logger="emperor"):
            assert v.config_error("bad key") is False
        assert v.state == state and v.last_error == "bad key"
    assert "keeps its previous configuration" not in caplog.text
    v = Vassal("a.ini", "/x/a.ini", state=State.RELOADING, pid=1)
    v.config_error("bad key")
    assert v.state == State.READY and "keeps its previous configuration" in caplog.text


def test_a_closed_process_never_signals_through_a_reused_pidfd_number(tmp_path: Path) -> None:
    """Item 8: the emperor closed a vassal's pidfd and then sent the final SIGKILL through that
    number (and by pid). Here the number is reused by another child's pidfd, as any next
    spawn may do: the late kill must not reach that child."""
    (tmp_path / "x.ini").write_text("[uwsgi]\n")
    first = spawn.spawn("first", str(tmp_path / "x.ini"), ["sleep", "60"], None, None)
    second = spawn.spawn("second", str(tmp_path / "x.ini"), ["sleep", "60"], None, None)
    try:
        number = first.pidfd
        first.popen.kill()
        assert first.popen.wait(5) == -signal.SIGKILL
        first.close()
        os.dup2(second.pidfd, number)  # the next pidfd gets the freed number
        first.kill_group()
        exited, _, _ = select.select([second.pidfd], [], [], 0.5)  # readable once second is dead
        assert not exited and second.poll() is None, "the late kill of the first reached the second"
    finally:
        second.kill_group()
        second.popen.wait(5)
        second.close()
        if number != second.pidfd:
            os.close(number)


def test_reap_kills_the_group_before_the_master_is_reaped(tmp_path: Path) -> None:
    """Item 8: a stray grandchild in the vassal's group is killed while the dead master still
    holds the group's id (after the reap the id could name a newcomer's group)."""
    pidfile = tmp_path / "child.pid"
    (tmp_path / "x.ini").write_text("[uwsgi]\n")
    proc = spawn.spawn("x", str(tmp_path / "x.ini"),
                       ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; exit 3"], None, None)
    wait_for(proc.exited, 5, what="the master exited")
    stray = int(pidfile.read_text())
    assert psutil.Process(stray).status() != psutil.STATUS_ZOMBIE
    assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE  # not reaped yet
    assert proc.reap() == 3
    wait_for(lambda: not psutil.pid_exists(stray) or psutil.Process(stray).status() == psutil.STATUS_ZOMBIE,
             5, what="the stray grandchild killed", ignore=(psutil.Error,))
    proc.close()


# ------------------------------------------------------------------ item 10: attribute-only changes


def test_attribute_only_touch_reloads_without_waiting_for_the_rescan(rig: Rig) -> None:
    """Item 10: os.utime (Path.touch, Ansible's state=touch) and touch -h on the link produce only
    IN_ATTRIB, which watchdog 7 reports as FileAttribEvent; the monitor dropped it, so with a
    long emperor-freq the change was never seen."""
    target = rig.write("app")
    link = rig.enable("app")
    rig.start("emperor-freq = 3600")
    rig.serving("app")
    mark = rig.mark()
    target.touch()  # Path.touch on an existing file: utimensat only
    rig.wait_log(r"reloading: 'app.ini'", after=mark, timeout=10)
    rig.wait_log(r"reloaded: 'app.ini'", after=mark, timeout=20)
    mark = rig.mark()
    os.utime(link, ns=(time.time_ns(), time.time_ns()), follow_symlinks=False)  # touch -h
    rig.wait_log(r"reloading: 'app.ini'", after=mark, timeout=10)
    rig.wait_log(r"reloaded: 'app.ini'", after=mark, timeout=20)


# ------------------------------------------------------------------ item 11: two emperors, one directory


def test_second_emperor_on_the_same_directory_is_refused(rig: Rig, tmp_path: Path, procs: ProcGroup) -> None:
    """Item 11: without a pidfile the second emperor throttled its copy of every vassal forever
    on "address in use". It now refuses to start, naming the directory and the first emperor,
    also when it reaches the directory by another path (a symlink)."""
    rig.enable("app")
    first = rig.start()
    rig.serving("app")
    alias = tmp_path / "alias"
    alias.symlink_to(rig.enabled)
    for where in (rig.enabled, alias):
        second = procs.start([sys.executable, "-m", "emperor", "--emperor", str(where)], name="second")
        assert second.wait(20) == 1
        text = second.log_text()
        assert f"another emperor (pid {first.pid}) already governs" in text, text
        assert "spawned:" not in text
    assert first.alive()
    rig.serving("app")


# ------------------------------------------------------------------ item 16: tyrant, the interpreter


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A 0755 directory in /tmp (pytest's tmp_path is under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="emp-access-", dir="/tmp"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tyrant_interpreter_check_names_the_path_that_blocks(open_dir: Path) -> None:
    """Item 16: the vassal's user must reach and execute the interpreter; the answer names the
    directory or file in the way, so the operator knows what to chmod."""
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    exe = private / "python"
    exe.write_bytes(b"")
    exe.chmod(0o755)
    problem = access.interpreter_problem(NOBODY, NOBODY, str(exe))
    assert problem is not None
    assert f"cannot execute the interpreter {exe}" in problem and f"{private} is mode 0700" in problem
    private.chmod(0o755)
    exe.chmod(0o744)
    problem = access.interpreter_problem(NOBODY, NOBODY, str(exe))
    assert problem is not None and f"{exe} is mode 0744" in problem
    exe.chmod(0o750)
    os.chown(exe, 0, NOBODY)  # the group may execute it
    assert "cannot execute" not in (access.interpreter_problem(NOBODY, NOBODY, str(exe)) or "")
    assert access.interpreter_problem(0, 0, str(exe)) is None
    assert stat.S_IMODE(exe.stat().st_mode) == 0o750
