"""The template process (``python -m emperor.vassal.template``): a vassal runtime already imported,
which forks vassals on the emperor's request, so a vassal does not pay a fresh interpreter and
its imports (docs/emperor.md#the-template).

The emperor starts it once (exec, its own pidfd) and talks to it over a SOCK_SEQPACKET pair:
one request (JSON: argv, env, cwd, uid/gid; fds with SCM_RIGHTS: the vassal's channel end,
the sealed ini memfd, its fd 0, the emperor's current stdout and stderr) and one answer
(``ok PID`` with a pidfd of the vassal, or ``err WHY``). Per request the template forks an
intermediate, which forks the vassal, opens its pidfd (race-free: the vassal is its child
and cannot be reaped meanwhile), passes it up and exits; the orphaned vassal is re-parented
to the emperor, a child subreaper, and the template answers only after the intermediate is
reaped, so the emperor gets a process that is already its own child.

The vassal then undoes what it inherited from the template (session, fds, environment, cwd,
signal mask, identity), waits until its parent is the emperor (the parent-death signal
must be armed against the emperor, not the intermediate), and runs the same
``run_vassal`` as ``python -m emperor.vassal``. The template stays single-threaded (a fork
from a threaded process is unsafe) and imports only what every vassal needs.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from emperor import channel, daemon, inifd
from emperor.config import parse_pairs
from emperor.options import Scope
from emperor.vassal import main as vassal_main

ENV_FD = "EMPEROR_TEMPLATE_FD"
MAX_REQUEST = 1 << 20  # argv + environment; the emperor refuses to send more
MAX_FDS = 8
REPARENT_WAIT = 5.0  # a vassal waits this long for its intermediate parent to exit
COMM = b"emperor-tpl"  # its kernel name (ps -o comm, psutil name()): how tools tell it from a vassal
PR_SET_NAME = 15


def set_comm(name: bytes) -> None:
    """The kernel's 15-byte process name; a forked vassal puts back the exec'd one."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def preload() -> None:
    """What every vassal imports anyway: the master, its workers and the WSGI path (the lazy
    imports of ``emperor.vassal`` stay lazy for what only some vassals use)."""
    import emperor.vassal.master
    import emperor.vassal.worker  # noqa: F401

    try:  # the master's process title (emperor/vassal/master.py), when installed next to us
        import setproctitle
    except ImportError:
        return
    # setproctitle finds the argv/environ area on its first call; made first in a forked
    # vassal, after its environment was replaced, it finds nothing and every title is lost
    # (ps showed forked vassals as "python -m emperor.vassal.template"). Made here, the area
    # is set up once and the forked vassals' titles work.
    setproctitle.setproctitle("emperor: template")


def main() -> int:
    raw = os.environ.pop(ENV_FD, "")
    if not raw.isdigit():
        print("emperor.vassal.template: started without its socket (only the emperor starts it)",
              file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(raw))
    daemon.set_parent_death_signal()  # die with the emperor (its main thread started us)
    preload()
    set_comm(COMM)  # after preload: setproctitle renames the process too
    try:
        sock.send(b"ready")
    except OSError:
        return 0
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, MAX_FDS)
        except OSError:
            return 0
        if not msg:
            return 0  # the emperor closed its end: it is gone or no longer wants us
        try:
            answer, pidfd = serve(sock, msg, fds)
        finally:
            for fd in fds:
                _close(fd)
        try:
            if pidfd >= 0:
                socket.send_fds(sock, [answer], [pidfd])
            else:
                sock.send(answer)
        except OSError:
            return 0
        finally:
            if pidfd >= 0:
                _close(pidfd)


def serve(sock: socket.socket, msg: bytes, fds: list[int]) -> tuple[bytes, int]:
    """One request: fork the intermediate, take the vassal's pid and pidfd from it, reap it."""
    try:
        req = json.loads(msg)
        named = dict(zip(req["fds"], fds, strict=True))
    except (ValueError, KeyError, TypeError) as exc:
        return f"err malformed request: {exc}".encode(), -1
    up, down = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError as exc:
        up.close()
        down.close()
        return f"err fork: {exc.strerror}".encode(), -1
    if pid == 0:  # the intermediate
        status = 1
        try:
            up.close()
            intermediate = os.getpid()  # not os.getppid() in the vassal: we may be gone already
            vassal_pid = os.fork()
            if vassal_pid == 0:
                down.close()
                sock.close()
                become_vassal(req, named, intermediate)  # never returns
            pidfd = os.pidfd_open(vassal_pid)
            socket.send_fds(down, [str(vassal_pid).encode()], [pidfd])
            status = 0
        finally:
            os._exit(status)
    down.close()
    try:
        os.waitpid(pid, 0)
        answer, got, _flags, _addr = socket.recv_fds(up, 64, 1)
    except OSError as exc:
        return f"err intermediate: {exc.strerror}".encode(), -1
    finally:
        up.close()
    if not got:
        return b"err the intermediate could not fork the vassal", -1
    for extra in got[1:]:
        _close(extra)
    return b"ok " + answer, got[0]


def become_vassal(req: dict[str, Any], fds: dict[str, int], intermediate: int) -> None:
    """In the forked vassal: reset what came from the template, then run the vassal. Never returns."""
    code: object = 1
    try:
        os.setsid()  # its own session and process group, as start_new_session does for exec
        set_comm(os.path.basename(sys.executable).encode())
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        keep = _place_fds(fds)
        env = dict(req["env"])
        env[channel.ENV_FD] = str(keep["chan"])
        if "ini" in keep:
            env[inifd.ENV] = inifd.env_value(keep["ini"], req["ini_path"])
        os.environ.clear()
        os.environ.update(env)
        os.chdir(req["cwd"])
        if req.get("uid") is not None:  # tyrant mode: what Popen(user=, group=, extra_groups=[]) does
            os.setgroups([])
            os.setregid(req["gid"], req["gid"])
            os.setreuid(req["uid"], req["uid"])
        args = list(req["args"])
        sys.argv = [os.path.join(os.path.dirname(vassal_main.__file__), "__main__.py"), *args]
        sys.path[0] = os.getcwd()  # python -m puts the working directory first
        _wait_reparent(intermediate)
        code = vassal_main.run_vassal(parse_pairs(args, "python -m emperor.vassal", Scope.APP))
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _place_fds(fds: dict[str, int]) -> dict[str, int]:
    """fd 0 (the on-demand socket or /dev/null), 1 and 2 from the emperor; the channel and the ini
    memfd inheritable (a reload re-execs); every other fd of the template closed."""
    stdin = fds.get("stdin")
    if stdin is None:
        stdin = os.open(os.devnull, os.O_RDWR)
    os.dup2(stdin, 0)
    os.dup2(fds["stdout"], 1)
    os.dup2(fds["stderr"], 2)
    keep = {name: fd for name, fd in fds.items() if name in ("chan", "ini")}
    for fd in keep.values():
        os.set_inheritable(fd, True)
    wanted = {0, 1, 2, *keep.values()}
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd not in wanted:
            _close(fd)
    return keep


def _wait_reparent(intermediate: int) -> None:
    """Until the intermediate has exited and this process is the emperor's child (or the emperor is
    gone: the channel check in ``run_vassal`` then ends the vassal). Its parent-death signal must
    not be armed against the intermediate, so a vassal still its child after ``REPARENT_WAIT``
    exits (the emperor respawns it, throttled)."""
    deadline = time.monotonic() + REPARENT_WAIT
    while os.getppid() == intermediate:
        if time.monotonic() > deadline:
            print(f"emperor.vassal.template: the intermediate (pid {intermediate}) did not exit within "
                  f"{REPARENT_WAIT:g} s; this vassal gives up", file=sys.stderr)
            os._exit(1)
        time.sleep(0.0002)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
