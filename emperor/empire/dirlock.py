"""One emperor per vassal directory: an ``flock`` on each watched directory.

Two emperors on one directory would each spawn every vassal; the second copy fails to bind
("address in use") and is throttled forever, with nothing saying why. A pidfile catches this
only when both emperors name the same one. So each emperor locks every directory it
watches (an ``flock`` on a descriptor of the directory itself: no file to create, released
by the kernel when the emperor dies, and the same lock whatever path or symlink reached the
directory) and refuses to start if another process holds one. A glob source locks nothing:
two globs over one directory may select different files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class DirLockError(Exception):
    """Another emperor governs this directory; the message names it and its pid when known."""


def _holder(st: os.stat_result) -> str:
    """The pid holding an flock on this inode, from /proc/locks (best effort, '' if unknown)."""
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError), open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == want and fields[4].isdigit():
                return fields[4]
    return ""


class DirLocks:
    def __init__(self) -> None:
        self._fds: list[int] = []

    def acquire(self, directories: list[str]) -> None:
        """Lock each directory, or release all and raise DirLockError."""
        for d in directories:
            try:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                self.release()
                raise DirLockError(f"cannot open {d} to lock it: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder(os.fstat(fd))
                os.close(fd)
                self.release()
                who = f"another emperor (pid {pid})" if pid else "another emperor"
                raise DirLockError(f"{who} already governs {d} (it holds the lock on the directory); "
                                   "stop it, or give this emperor another directory") from None
            self._fds.append(fd)

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []
