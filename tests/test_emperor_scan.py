"""Scanning real directories: names, symlinks, stamps, refusals, tyrant ownership.

Also the small OS pieces that need no vassal: the pidfile lock, sd_notify datagrams,
the vassal command line and environment.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from emperor import channel
from emperor.empire import spawn
from emperor.empire.notify import Notifier
from emperor.empire.scan import Refused, Source, examine, is_vassal_name, scan
from emperor.pidfile import PidFile, PidFileError

INI = "[uwsgi]\nsocket = /tmp/x.sock\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    avail, enabled = tmp_path / "apps-available", tmp_path / "apps-enabled"
    avail.mkdir()
    enabled.mkdir()
    return avail, enabled


def do_scan(enabled: Path, tyrant: bool = False) -> tuple[dict, dict]:
    return scan([Source.parse(str(enabled), "/")], tyrant)


@pytest.mark.parametrize(("name", "ok"), [
    ("app.ini", True), ("my app.ini", True), ("-rf.ini", True), (".hidden.ini", False), ("app.ini~", False),
    ("app.ini.swp", False), ("app.yaml", False), ("app.ini.dpkg-old", False), ("x" * 251 + ".ini", False),
    ("app", False), ("a\nb.ini", False),
])
def test_vassal_names(name: str, ok: bool) -> None:
    assert is_vassal_name(name) is ok


def test_files_and_links_are_found_by_link_name(layout: tuple[Path, Path]) -> None:
    avail, enabled = layout
    (avail / "hello.ini").write_text(INI)
    (enabled / "hello.ini").symlink_to("../apps-available/hello.ini")
    (enabled / "second.ini").symlink_to("../apps-available/hello.ini")  # the skel pattern: two vassals
    (enabled / "plain.ini").write_text(INI)
    (enabled / "notes.txt").write_text("x")
    found, refused = do_scan(enabled)
    assert sorted(found) == ["hello.ini", "plain.ini", "second.ini"] and refused == {}
    assert found["hello.ini"].path == str(enabled / "hello.ini")  # the link, not its target
    assert found["hello.ini"].target_dir == str(avail)
    assert found["plain.ini"].target_dir is None


def test_dangling_link_is_absent_and_a_loop_is_refused(layout: tuple[Path, Path]) -> None:
    _, enabled = layout
    (enabled / "gone.ini").symlink_to("../apps-available/nothing.ini")
    (enabled / "loop.ini").symlink_to("loop.ini")
    found, refused = do_scan(enabled)
    assert found == {}
    assert refused == {"loop.ini": "symlink loop"}


@pytest.mark.timeout(10)
def test_fifo_device_and_directory_are_refused_without_blocking(layout: tuple[Path, Path]) -> None:
    avail, enabled = layout
    os.mkfifo(avail / "fifo.ini")
    (avail / "dir.ini").mkdir()
    (enabled / "fifo.ini").symlink_to(avail / "fifo.ini")
    (enabled / "dev.ini").symlink_to("/dev/zero")
    (enabled / "dir.ini").symlink_to(avail / "dir.ini")
    found, refused = do_scan(enabled)
    assert found == {}
    assert "a FIFO" in refused["fifo.ini"]
    assert "a device" in refused["dev.ini"]
    assert "a directory" in refused["dir.ini"]


def test_stamp_sees_quick_edits_touch_h_atomic_save_and_relink(layout: tuple[Path, Path]) -> None:
    avail, enabled = layout
    target = avail / "app.ini"
    target.write_text(INI)
    link = enabled / "app.ini"
    link.symlink_to(target)
    stamps = [examine("app.ini", str(link), False).stamp]  # type: ignore[union-attr]

    def changed() -> bool:
        stamps.append(examine("app.ini", str(link), False).stamp)  # type: ignore[union-attr]
        return stamps[-1] != stamps[-2]

    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # one nanosecond later: uWSGI misses it
    assert changed()
    lst = link.lstat()
    os.utime(link, ns=(lst.st_atime_ns, lst.st_mtime_ns + 1000), follow_symlinks=False)  # touch -h
    assert changed()
    tmp = avail / ".app.ini.tmp"
    tmp.write_text(INI)
    st = target.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, new inode: an atomic save
    tmp.replace(target)
    assert changed()
    other = avail / "other.ini"
    other.write_text(INI)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    link.unlink()
    link.symlink_to(other)  # relinked
    assert changed()
    assert not changed()  # nothing happened: same stamp


def test_glob_source(layout: tuple[Path, Path]) -> None:
    avail, _ = layout
    (avail / "a.ini").write_text(INI)
    (avail / "b.ini").write_text(INI)
    src = Source.parse(str(avail / "*.ini"), "/")
    assert src.is_glob and src.watch_dirs() == {str(avail)}
    found, _ = scan([src], False)
    assert sorted(found) == [str(avail / "a.ini"), str(avail / "b.ini")]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory"):
        Source.parse(str(tmp_path / "nope"), "/")


def test_same_name_in_two_sources_first_wins(tmp_path: Path) -> None:
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "a.ini").write_text(INI)
    found, refused = scan([Source.parse(str(tmp_path / d), "/") for d in ("one", "two")], False)
    assert found["a.ini"].path == str(tmp_path / "one" / "a.ini")
    assert "already used" in refused[str(tmp_path / "two" / "a.ini")]


def test_tyrant_owner_comes_from_the_file_and_root_or_writable_is_refused(layout: tuple[Path, Path]) -> None:
    """Needs root (to chown), as tyrant mode does; CI runs the suite as root."""
    avail, enabled = layout
    for name, uid, mode in (("user.ini", 65534, 0o644), ("root.ini", 0, 0o644), ("open.ini", 65534, 0o666),
                            ("grp.ini", 65534, 0o664)):
        p = avail / name
        p.write_text(INI)
        os.chown(p, uid, uid)
        p.chmod(mode)
        (enabled / name).symlink_to(p)
    found, refused = do_scan(enabled, tyrant=True)
    assert list(found) == ["user.ini"] and found["user.ini"].uid == 65534 and found["user.ini"].gid == 65534
    assert "uid 0 (root)" in refused["root.ini"] and "chown" in refused["root.ini"]
    assert "mode 0666" in refused["open.ini"] and "chmod go-w" in refused["open.ini"]
    assert "mode 0664" in refused["grp.ini"]
    with pytest.raises(Refused):
        examine("root.ini", str(enabled / "root.ini"), True)


# ------------------------------------------------------------------ spawn pieces


def test_vassal_command_line_order() -> None:
    before = spawn.vassal_set_args(["processes=4", "base=/srv/app", "workers = 2"])
    assert before == ["--processes", "4", "--set-placeholder", "base=/srv/app", "--processes", "2"]
    argv = spawn.vassal_argv("/etc/e/-x.ini", before, ["/etc/e/common.ini"])
    assert argv[:3] == [sys.executable, "-m", "emperor.vassal"]
    assert argv[3:] == [*before, "--ini", "/etc/e/-x.ini", "--ini", "/etc/e/common.ini"]


def test_vassal_environment_drops_the_emperors_supervisor_variables() -> None:
    env = spawn.vassal_env({"PATH": "/bin", "NOTIFY_SOCKET": "@x", "LISTEN_FDS": "2", "LISTEN_PID": "1",
                            "WATCHDOG_USEC": "5"}, 7, "app.ini")
    assert env == {"PATH": "/bin", channel.ENV_FD: "7", channel.ENV_NAME: "app.ini"}


# ------------------------------------------------------------------ pidfile and sd_notify


def test_pidfile_is_locked_and_removed_only_if_ours(tmp_path: Path) -> None:
    path = tmp_path / "emperor.pid"
    first = PidFile(str(path))
    first.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(PidFileError, match=f"pid {os.getpid()}"):
        PidFile(str(path)).acquire()
    first.release()
    assert not path.exists()
    path.write_text("999999\n")  # stale, unlocked: taken over
    second = PidFile(str(path))
    second.acquire()
    path.unlink()
    path.write_text("12345\n")  # someone else's now
    second.release()
    assert path.read_text() == "12345\n"


def test_notify_sends_datagrams_to_path_and_abstract_sockets(tmp_path: Path) -> None:
    for addr, bind in ((str(tmp_path / "n.sock"), str(tmp_path / "n.sock")),
                       (f"@emperor-test-{os.getpid()}", f"\0emperor-test-{os.getpid()}")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(bind)
            listener.settimeout(5)
            n = Notifier({"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "2000000"})
            n.send("READY=1", "STATUS=hello")
            assert listener.recv(4096) == b"READY=1\nSTATUS=hello"
            assert n.watchdog_interval == 1.0
            n.close()
    silent = Notifier({})
    silent.send("READY=1")
    assert not silent.enabled
