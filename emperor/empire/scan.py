"""List the vassal files of the configured sources and look at each one safely.

A source is a directory (every ``*.ini`` at its top level) or a glob. For each candidate
the scan records a *stamp*: nanosecond mtimes, inodes and size of both the link and its
target, so a quick second edit, a ``touch -h`` on the link, an editor's atomic save (new
inode) or a relinked target all count as changes (uWSGI compares whole seconds).

Files are opened with ``O_NONBLOCK`` only after ``stat`` says they are regular, so a
symlink to a FIFO or a device never blocks the emperor. The owner used in tyrant mode, the
rule on what a link may lead to (:func:`check_target`) and the content handed to the vassal
all come from the one opened descriptor, not from the path. Names come from ``os.listdir``
with undecodable bytes as surrogate escapes; :func:`name_problem` refuses those and names
with control characters, and :func:`shown` is how a refused name is logged.
"""

from __future__ import annotations

import errno
import glob
import grp
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from emperor.empire.vassals import Stamp
from emperor.ini import read_at_most

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
    content: bytes = b""  # the bytes read from the descriptor the checks were made on: the vassal gets these


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
            return [(p, p) for p in paths if looks_like_vassal(os.path.basename(p))]
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return []
        return [(n, os.path.join(self.path, n)) for n in names if looks_like_vassal(n)]


def looks_like_vassal(name: str) -> bool:
    """``*.ini``, not hidden, not editor or packaging debris: anything else is silently not a vassal."""
    return name.endswith(EXTENSIONS) and not name.startswith(".") and not name.endswith(DEBRIS)


def name_problem(name: str) -> str | None:
    """Why a name that looks like a vassal file cannot be one, or None.

    The name is the vassal's id: it is logged, sent in events and stats, put in the
    environment and in ``%n``. A name that is not UTF-8 (``os.listdir`` hands it over with
    surrogate escapes) or holds control characters (CR, ESC, bidi overrides: anything
    ``str.isprintable`` rejects) is refused rather than escaped everywhere it goes.
    """
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8; rename it"
    if not name.isprintable():
        return "the file name holds control characters; rename it"
    if len(raw) > MAX_NAME:
        return f"the file name is longer than {MAX_NAME} bytes"
    return None


def is_vassal_name(name: str) -> bool:
    """``*.ini``, not hidden, not editor or packaging debris, printable UTF-8, short enough."""
    return looks_like_vassal(name) and name_problem(name) is None


def shown(name: str) -> str:
    """A file name safe in one log line: quoted, control characters and undecodable bytes escaped."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return repr(os.fsencode(name))  # b'caf\xe9.ini'
    return repr(name)


class Refused(Exception):
    """This file cannot be a vassal; the message says why and what to do."""


def examine(name: str, path: str, tyrant: bool) -> Found | None:
    """Look at one candidate. None: it vanished (or is a dangling link). Refused: unusable.

    Everything that decides whether and as whom the vassal runs (owner, mode, real name)
    and the content the vassal will be given come from one open file descriptor, so a path
    swapped between the checks and the read cannot slip another file in.
    """
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
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            return None  # replaced while we looked: the next scan sees the new file
        check_target(fd, fst, lst, tyrant)
        content = _read(fd)
    finally:
        os.close(fd)
    uid = gid = None
    if tyrant:
        uid, gid = fst.st_uid, fst.st_gid
    target_dir = os.path.dirname(os.path.realpath(path)) if stat.S_ISLNK(lst.st_mode) else None
    stamp = (lst.st_ino, lst.st_mtime_ns, fst.st_dev, fst.st_ino, fst.st_mtime_ns, fst.st_size)
    return Found(name, path, stamp, uid, gid, target_dir, content)


def _read(fd: int) -> bytes:
    data = read_at_most(fd, MAX_SIZE)
    if data is None:
        raise Refused(f"grew past {MAX_SIZE} bytes while read; too large for a vassal ini")
    return data


def check_target(fd: int, fst: os.stat_result, lst: os.stat_result, tyrant: bool) -> None:
    """The rule that keeps a link in the vassal directory from turning any readable file into a vassal.

    The opened file must be named ``*.ini`` (its real name, read from ``/proc/self/fd``, so
    ``/etc/shadow`` or a key file never parses as a config), must not be writable by group or
    others, and must be owned by someone who may decide what the vassal runs: root or the
    emperor's own user; in tyrant mode its owner (who the vassal runs as, never root), and a
    link to it must belong to that owner or to root, so nobody can enable someone else's file.
    """
    try:
        real = os.readlink(f"/proc/self/fd/{fd}").removesuffix(" (deleted)")
    except OSError:
        real = ""
    if real and not real.endswith(EXTENSIONS):
        raise Refused(f"it leads to {shown(real)}, which is not an .ini file; a vassal file (or the "
                      "target of its link) must be named *.ini")
    if tyrant:
        check_tyrant_owner(fst)
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, fst.st_uid):
            raise Refused(f"the link belongs to uid {lst.st_uid} but its target to uid {fst.st_uid}; "
                          "in tyrant mode only the target's owner (or root) may enable it")
        return
    euid = os.geteuid()
    if fst.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or uid {euid} (the emperor's user)"
        raise Refused(f"owned by uid {fst.st_uid}, but the vassal would run with the emperor's rights; "
                      f"the file must belong to {owners} (or use emperor-tyrant)")
    writable = fst.st_mode & stat.S_IWOTH or (fst.st_mode & stat.S_IWGRP
                                               and not _private_group(fst.st_uid, fst.st_gid))
    if writable:
        raise Refused(f"mode {stat.S_IMODE(fst.st_mode):04o} lets other users edit it, and the vassal runs "
                      f"with the emperor's rights; chmod go-w the file")


def _private_group(uid: int, gid: int) -> bool:
    """The owner's own group (same name, the owner's primary group, nobody else listed): group
    write then adds no writer, as with Debian's user private groups and their umask 002."""
    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


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


def scan(sources: Sequence[Source | Any], tyrant: bool) -> tuple[dict[str, Found], dict[str, str]]:
    """Every usable vassal file by name, and every refused one with the reason.

    The first source that provides a name wins; a later duplicate is refused.
    """
    found: dict[str, Found] = {}
    refused: dict[str, str] = {}
    for source in sources:
        if not isinstance(source, Source):  # an etcd prefix (emperor/empire/etcdsource.py)
            keyed, bad = source.scan(tyrant)
            refused.update(bad)
            for name, f in keyed.items():
                if name in found or name in refused:
                    refused.setdefault(f"{source.spec} {name}", f"the name {name!r} is already used by "
                                       "another source")
                else:
                    found[name] = f
            continue
        for name, path in source.candidates():
            if name in found or name in refused:
                if path != (found[name].path if name in found else ""):
                    refused.setdefault(f"{path}", f"the name {name!r} is already used by another source")
                continue
            problem = name_problem(os.path.basename(name))
            if problem is not None:
                refused[name] = problem
                continue
            try:
                f = examine(name, path, tyrant)
            except Refused as exc:
                refused[name] = str(exc)
                continue
            if f is not None:
                found[name] = f
    return found, refused


class Watched(Protocol):
    """A vassal source as the monitor sees it: the directories to watch (none for an etcd prefix)."""

    def watch_dirs(self) -> set[str]: ...


def watch_dirs(sources: Sequence[Watched], found: dict[str, Found]) -> set[str]:
    """What the monitor watches: the sources' directories and those the found links point into."""
    dirs: set[str] = set()
    for src in sources:
        dirs |= src.watch_dirs()
    for f in found.values():
        if f.target_dir and os.path.isdir(f.target_dir):
            dirs.add(f.target_dir)
    return dirs
