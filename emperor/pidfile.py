"""pidfiles: written atomically (temp + rename), removed only if they still hold our pid."""

from __future__ import annotations

import os


def write(path: str, pid: int | None = None) -> None:
    pid = os.getpid() if pid is None else pid
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, path)


def remove(path: str | None, pid: int | None = None) -> None:
    if not path:
        return
    pid = os.getpid() if pid is None else pid
    try:
        with open(path) as f:
            if f.read().strip() != str(pid):
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass
