"""pidfiles: locked while we run, written with our pid, removed only if they are still ours.

The lock (``flock`` on the pidfile itself) tells a second emperor that the first is still
alive, where a bare pid could belong to an unrelated process by now. A pidfile left by a
killed emperor is unlocked and simply taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class PidFileError(Exception):
    pass


class PidFile:
    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._fd: int | None = None
        self._ino = 0

    def acquire(self, pid: int | None = None) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise PidFileError(f"another emperor (pid {other}) holds {self.path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{pid or os.getpid()}\n".encode(), 0)
        self._fd, self._ino = fd, os.fstat(fd).st_ino

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            st = os.stat(self.path)
            if st.st_ino == self._ino and os.pread(self._fd, 32, 0).strip() == str(os.getpid()).encode():
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None
