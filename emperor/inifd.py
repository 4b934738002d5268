"""The vassal's ini as the bytes the emperor checked, handed over in a sealed memfd.

The emperor decides whether a file may run, and in tyrant mode as whom, from ``fstat`` of
the descriptor it opened. If the vassal then opened the path again, a link swapped in
between would make it run another file (in tyrant mode: the attacker's ini as the victim).
So the vassal never re-opens its own file: the emperor copies what it read from that
descriptor into a sealed memfd, the vassal inherits it and finds it in ``EMPEROR_INI_FD``
(``FD:PATH``), and :func:`adopt` pins those bytes to PATH in the ini reader. A master that
re-execs itself on reload keeps the memfd (and the variable); a RELOAD from the emperor
carries a new memfd with the new content (:func:`replace`). Files the ini includes are
read from disk by the vassal, after it has dropped to its user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from emperor import ini

ENV = "EMPEROR_INI_FD"
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def seal(data: bytes, name: str = "vassal.ini") -> int:
    """A read-only (sealed) memfd holding ``data``; close-on-exec, so pass it with ``pass_fds``."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def env_value(fd: int, path: str) -> str:
    return f"{fd}:{path}"


def _read(fd: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= ini.MAX_FILE_SIZE:
        chunk = os.pread(fd, ini.MAX_FILE_SIZE + 1 - size, size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def adopt() -> str | None:
    """In the vassal, before the ini is read: pin the inherited content. Returns the path, or None.

    The variable and the descriptor stay, so a master that re-execs itself reads the same
    bytes again. A variable that names no open descriptor is an error, not a reason to fall
    back to the path (that would reopen the race this module closes).
    """
    raw = os.environ.get(ENV)
    if not raw:
        return None
    fd_text, _, path = raw.partition(":")
    if not fd_text.isdigit() or not path:
        raise ini.IniError(f"malformed {ENV}={raw!r}")
    try:
        data = _read(int(fd_text))
    except OSError as exc:
        raise ini.IniError(f"cannot read the ini the emperor passed on fd {fd_text}: {exc.strerror}",
                           path) from None
    ini.pin(path, data)
    return path


def replace(fd: int) -> None:
    """A RELOAD brought a new memfd: pin its content, and keep it (inheritable) for the re-exec."""
    raw = os.environ.get(ENV, "")
    old, _, path = raw.partition(":")
    if not path:
        os.close(fd)  # not started with one: nothing to replace
        return
    try:
        data = _read(fd)
    except OSError:
        os.close(fd)
        raise
    os.set_inheritable(fd, True)
    os.environ[ENV] = env_value(fd, path)
    ini.pin(path, data)
    if old.isdigit() and int(old) != fd:
        with contextlib.suppress(OSError):
            os.close(int(old))
