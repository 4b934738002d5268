"""The classic double fork, for ``daemonize`` of the emperor (``emperor --daemonize``) and of a vassal.

Fork, ``setsid`` (a new session: no controlling terminal), fork again (the session leader
exits, so the daemon can never reacquire a terminal), stdin from /dev/null; stdout and
stderr are left to the caller, which redirects them to its log. Under an emperor or
systemd nothing daemonizes: the callers decide.

The emperor's caller waits for a one-byte report on a pipe (``started``), so that
``emperor --daemonize`` (and an init script) returns only once the pidfile is written, with
a failing status if the start failed. A vassal's caller just exits (``detach``).

Also the other end of a process's life: ``set_parent_death_signal``, which the vassal master,
its workers and its companion processes use to die with whoever started them.
"""

from __future__ import annotations

import ctypes
import os
import signal

_report_pipe: int | None = None  # in the caller of ``started``: the read end


def started() -> int | None:
    """Double fork; in the daemon return the fd to report start-up on (``b"0"`` ok, ``b"1"`` failed),
    in the caller None (then ``wait_for_report`` gives its exit status)."""
    global _report_pipe
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        _report_pipe = r
        return None
    os.close(r)
    _second_fork()
    return w


def wait_for_report() -> int:
    """In the caller of ``started``: 0 once the daemon reported success, 1 if it failed or died."""
    assert _report_pipe is not None
    with os.fdopen(_report_pipe, "rb") as f:
        answer = f.read(1)
    return 0 if answer == b"0" else 1


def detach() -> None:
    """Double fork without a report: the caller exits at once, the daemon returns."""
    if os.fork():
        os._exit(0)
    _second_fork()


def _second_fork() -> None:
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to kill this process when its parent (thread) dies; no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass
