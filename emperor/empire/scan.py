"""List the vassal files of the configured sources and look at each one safely.

A source is a directory (every ``*.ini`` at its top level) or a glob. For each candidate
the scan records a *stamp*: nanosecond mtimes, inodes and size of both the link and its
target, so a quick second edit, a ``touch -h`` on the link, an editor's atomic save (new
inode) or a relinked target all count as changes (uWSGI compares whole seconds).

Files are opened with ``O_NONBLOCK`` only after ``stat`` says they are regular, so a
symlink to a FIFO or a device never blocks the emperor; the owner used in tyrant mode
comes from ``fstat`` of the opened file, not from the path.
"""

from __future__ import annotations

import errno
import glob
import os
import stat
from dataclasses import dataclass

from emperor.empire.vassals import Stamp

EXTENSIONS = (".ini",)
MAX_NAME = 254
MAX_SIZE = 1 << 20  # a vassal ini larger than 1 MiB is refused: it is not a config file
DEBRIS = ("~", ".swp", ".swx", ".tmp", ".bak", ".dpkg-old", ".dpkg-dist", ".dpkg-new", ".rpmnew", ".rpmsave")


@dataclass(frozen=True)
class Found:
    """A vassal file that may run: its name (the vassal id), absolute path and stamp."""

    name: str
    path: str
    stamp: Stamp
    uid: int | None = None
    gid: int | None = None
    target_dir: str | None = None  # where a symlink points, to watch that directory too


@dataclass(frozen=True)
class Source:
    """One ``emperor`` value: a directory or a glob, resolved at start-up."""

    spec: str
    path: str  # absolute directory, or absolute glob pattern
    is_glob: bool

    @classmethod
    def parse(cls, spec: str, cwd: str) -> Source:
        path = os.path.normpath(os.path.join(cwd, os.path.expanduser(spec)))
        if glob.has_magic(spec):
            return cls(spec, path, True)
        if not os.path.isdir(path):
            raise ValueError(f"{spec!r} is not a directory (give a directory or a glob such as dir/*.ini)")
        return cls(spec, path, False)

    def watch_dirs(self) -> set[str]:
        if not self.is_glob:
            return {self.path}
        head = self.path
        while glob.has_magic(head):
            head = os.path.dirname(head)
        return {head} if os.path.isdir(head) else set()

    def candidates(self) -> list[tuple[str, str]]:
        """(vassal name, absolute path) for every name that looks like a vassal file."""
        if self.is_glob:
            paths = sorted(glob.glob(self.path))
            return [(p, p) for p in paths if is_vassal_name(os.path.basename(p))]
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return []
        return [(n, os.path.join(self.path, n)) for n in names if is_vassal_name(n)]


def is_vassal_name(name: str) -> bool:
    """``*.ini``, not hidden, not editor or packaging debris, short enough."""
    return (name.endswith(EXTENSIONS) and not name.startswith(".") and len(name.encode()) <= MAX_NAME
            and not name.endswith(DEBRIS) and "\n" not in name)


class Refused(Exception):
    """This file cannot be a vassal; the message says why and what to do."""


def examine(name: str, path: str, tyrant: bool) -> Found | None:
    """Look at one candidate. None: it vanished (or is a dangling link). Refused: unusable."""
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # a dangling symlink is a removed vassal
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("symlink loop") from None
        raise Refused(f"cannot stat: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"not a regular file ({_kind(st.st_mode)}); only regular ini files are vassals")
    if st.st_size > MAX_SIZE:
        raise Refused(f"{st.st_size} bytes is too large for a vassal ini (limit {MAX_SIZE})")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise Refused(f"cannot open: {exc.strerror}") from None
    try:
        fst = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
        return None  # replaced while we looked: the next scan sees the new file
    uid = gid = None
    if tyrant:
        uid, gid = fst.st_uid, fst.st_gid
        check_tyrant_owner(fst)
    target_dir = os.path.dirname(os.path.realpath(path)) if stat.S_ISLNK(lst.st_mode) else None
    stamp = (lst.st_ino, lst.st_mtime_ns, fst.st_dev, fst.st_ino, fst.st_mtime_ns, fst.st_size)
    return Found(name, path, stamp, uid, gid, target_dir)


def check_tyrant_owner(st: os.stat_result) -> None:
    """Tyrant mode runs a vassal as its file's owner: never as root, never from a file others can edit."""
    if st.st_uid == 0 or st.st_gid == 0:
        which = "uid" if st.st_uid == 0 else "gid"
        raise Refused(f"owned by {which} 0 (root): in tyrant mode a vassal runs as its file's owner and "
                      f"never as root; chown the file to the user and group that should run it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise Refused(f"mode {stat.S_IMODE(st.st_mode):04o} lets other users edit it, and the vassal runs "
                      f"as uid {st.st_uid}; chmod go-w the file")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def scan(sources: list[Source], tyrant: bool) -> tuple[dict[str, Found], dict[str, str]]:
    """Every usable vassal file by name, and every refused one with the reason.

    The first source that provides a name wins; a later duplicate is refused.
    """
    found: dict[str, Found] = {}
    refused: dict[str, str] = {}
    for source in sources:
        for name, path in source.candidates():
            if name in found or name in refused:
                if path != (found[name].path if name in found else ""):
                    refused.setdefault(f"{path}", f"the name {name!r} is already used by another source")
                continue
            try:
                f = examine(name, path, tyrant)
            except Refused as exc:
                refused[name] = str(exc)
                continue
            if f is not None:
                found[name] = f
    return found, refused
