"""Tyrant mode: can a vassal's user run the interpreter at all? Asked before the spawn.

The vassal is ``sys.executable -m emperor.vassal`` exec'd after dropping to the file owner's
uid and gid with no supplementary groups. If that user cannot reach the interpreter (a pyenv
under ``/root``, mode 0700) or cannot read the ``emperor`` package, the exec or the import
fails with EACCES on every attempt; without this check the vassal is throttled forever with
a bare "Permission denied". The answer is computed from the mode bits of every directory on
the way and of the files themselves (ACLs and capabilities are not consulted), and cached per
(uid, gid) for one scan.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import emperor

if TYPE_CHECKING:
    from emperor.empire.scan import Found


def _allows(st: os.stat_result, uid: int, gid: int, bits: int) -> bool:
    """The classic permission check: owner class, else group class, else others (no ACLs)."""
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & bits == bits


def _walk(path: str, uid: int, gid: int, last: int) -> str | None:
    """The first component of ``path`` (each of its directories needs x, the last ``last``) that
    ``uid``:``gid`` may not use, described, or None. Symlinks are followed, their targets checked too."""
    seen: set[str] = set()
    todo = [os.path.abspath(path), os.path.realpath(path)]
    for target in todo:
        if target in seen:
            continue
        seen.add(target)
        parts = target.split("/")[1:]
        current = ""
        for i, part in enumerate(parts):
            current += "/" + part
            is_last = i == len(parts) - 1
            try:
                st = os.stat(current)
            except OSError as exc:
                return f"{current}: {exc.strerror}"
            want = last if is_last else 0o1
            if not _allows(st, uid, gid, want):
                what = {0o1: "search", 0o5: "read and search", 0o4: "read"}.get(want, "use")
                return (f"{current} is mode {stat.S_IMODE(st.st_mode):04o}, owner {st.st_uid}, group "
                        f"{st.st_gid}: no {what} permission")
    return None


def interpreter_problem(uid: int, gid: int, exe: str = "") -> str | None:
    """Why ``uid``:``gid`` could not start a vassal (``exe``: this interpreter), or None (it can)."""
    if uid == 0:
        return None
    exe = exe or sys.executable
    problem = _walk(exe, uid, gid, 0o1)
    if problem:
        return f"uid {uid} (gid {gid}) cannot execute the interpreter {exe}: {problem}"
    needed = [("the emperor package", os.path.dirname(emperor.__file__))]
    if exe == sys.executable:  # a venv's interpreter (``home``) brings its own standard library
        needed.insert(0, ("the standard library", os.path.dirname(os.__file__)))
    for what, directory in needed:
        problem = _walk(directory, uid, gid, 0o5)
        if problem:
            return f"uid {uid} (gid {gid}) cannot read {what} in {directory}: {problem}"
    return None


class Cache:
    """One answer per (uid, gid, interpreter), for one scan: a scan of many files of one owner stats once."""

    def __init__(self) -> None:
        self._answers: dict[tuple[int, int, str], str | None] = {}

    def problem(self, uid: int, gid: int, exe: str = "") -> str | None:
        key = (uid, gid, exe)
        if key not in self._answers:
            self._answers[key] = interpreter_problem(uid, gid, exe)
        return self._answers[key]


def refuse_unrunnable(found: dict[str, Found], refused: dict[str, str],
                      interpreter_of: Callable[[Found], str]) -> None:
    """Tyrant mode: move each file whose owner could not run its interpreter (its venv's python,
    else ours) from ``found`` to ``refused``, with the reason."""
    cache = Cache()
    for name, f in list(found.items()):
        if f.uid is None or f.gid is None:
            continue
        if why := cache.problem(f.uid, f.gid, interpreter_of(f)):
            refused[name] = f"tyrant mode would run it as its owner, but {why}"
            del found[name]
