"""The emperor's side of the template process (``emperor-template``, on by default): start it, ask
it for vassals, fall back to exec whenever it cannot answer (docs/emperor.md#the-template).

The template (emperor/vassal/template.py) is exec'd like any child, with its own pidfd, and
forks vassals through an intermediate so that each vassal ends up the emperor's child: the
emperor is a child subreaper (``PR_SET_CHILD_SUBREAPER``), which also makes it adopt every
orphaned descendant (emperor/empire/orphans.py reaps those). The emperor never forks.

A spawn goes through the template only when the template is ready and the vassal would run
our own interpreter (``argv`` is ``sys.executable -m emperor.vassal ...``; a ``home`` venv
with another python is exec'd). The request is sent without blocking and its answer is
awaited at most ``REPLY_TIMEOUT``: a template that is late is killed (so it cannot fork a
vassal afterwards) and the spawn is exec'd; a dead template is reaped and started again,
throttled (``RESTART_MIN`` doubling to ``RESTART_MAX``).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from emperor import channel, inifd
from emperor.empire import spawn

log = logging.getLogger("emperor")

ENV_FD = "EMPEROR_TEMPLATE_FD"  # emperor/vassal/template.py reads it
MODULE = "emperor.vassal.template"
REPLY_TIMEOUT = 1.0  # a fork takes milliseconds; a template this late is considered stuck
READY_TIMEOUT = 2.0  # at start, the emperor waits this long for the template before its first scan
RESTART_MIN, RESTART_MAX = 1.0, 60.0
PR_SET_CHILD_SUBREAPER = 36
OUR_VASSAL = [sys.executable, "-m", "emperor.vassal"]


def _readable(sock: socket.socket, timeout: float) -> bool:
    """poll, not select: an emperor with many vassals has fds above select's 1024."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def become_subreaper() -> bool:
    """Orphaned descendants (the template's vassals among them) become our children. False: not Linux
    or refused; the template is not used then."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class Template:
    """One template process; calling it is a ``spawn.Spawner`` that uses it when it can."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.popen: subprocess.Popen[bytes] | None = None
        self.pidfd = -1
        self.sock: socket.socket | None = None
        self.ready = False
        self.restart_at = 0.0
        self.backoff = RESTART_MIN
        self.forked = 0  # vassals started through the template (stats, tests)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    # ---- its life

    def start(self) -> None:
        """Exec the template, unless one runs or the restart throttle says not yet."""
        now = self.clock()
        if self.popen is not None or now < self.restart_at:
            return
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_MAX)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k not in spawn.STRIPPED_ENV}
        env[ENV_FD] = str(theirs.fileno())
        try:
            popen = subprocess.Popen([sys.executable, "-m", MODULE], pass_fds=[theirs.fileno()], env=env,
                                     stdin=subprocess.DEVNULL, cwd="/", start_new_session=True)
        except OSError as exc:
            ours.close()
            log.error("template: cannot start it (vassals are exec'd meanwhile): %s", exc)
            return
        finally:
            theirs.close()
        try:
            self.pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:
            popen.kill()
            popen.wait()
            ours.close()
            log.error("template: cannot watch it (vassals are exec'd): %s", exc.strerror)
            return
        self.popen, self.sock, self.ready = popen, ours, False
        log.info("template: started (pid %d)", popen.pid)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Block up to ``timeout`` for the template's ``ready`` (only before the loop runs)."""
        deadline = self.clock() + timeout
        while not self.ready and self.sock is not None:
            left = deadline - self.clock()
            if left <= 0 or not _readable(self.sock, left):
                return False
            self._take_ready()
        return self.ready

    def _take_ready(self) -> None:
        if self.ready or self.sock is None:
            return
        try:
            msg = self.sock.recv(64, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            msg = b""
        if msg == b"ready":
            self.ready = True
            self.backoff = RESTART_MIN
            log.debug("template: ready (pid %s)", self.pid)
        else:
            self._lost("it closed its socket before it was ready")

    def deadline(self) -> float | None:
        """When the emperor's loop must call :meth:`check` to start a lost template again."""
        return self.restart_at if self.popen is None else None

    def check(self) -> None:
        """Reap the template if it died (SIGCHLD, or before a spawn), and start another when due."""
        if self.popen is not None and self.popen.poll() is not None:
            self._lost(f"it exited with status {self.popen.returncode}")
        if self.popen is None:
            self.start()

    def _lost(self, why: str, kill: bool = False) -> None:
        popen = self.popen
        if popen is None:
            return
        log.error("template: lost (pid %d): %s; vassals are exec'd until it is back", popen.pid, why)
        if kill:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        self.close_fds()
        if kill:
            popen.wait()  # SIGKILL: at once
        else:
            popen.poll()  # reaped now if it is gone; else when it exits (orphans.reap knows its pid)
            if popen.returncode is None:
                with contextlib.suppress(OSError):
                    os.kill(popen.pid, signal.SIGKILL)  # still ours (not reaped): the pid is its own
                popen.wait()
        self.popen = None

    def close_fds(self) -> None:
        self.ready = False
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = -1

    def stop(self, wait: float = 2.0) -> None:
        """At the emperor's exit: close its socket (it exits on EOF), SIGKILL it after ``wait``."""
        popen = self.popen
        if popen is None:
            return
        pidfd = self.pidfd
        self.pidfd = -1
        self.close_fds()
        try:
            popen.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            popen.wait()
        finally:
            with contextlib.suppress(OSError):
                os.close(pidfd)
        self.popen = None

    # ---- spawning through it

    def __call__(self, name: str, path: str, argv: list[str], uid: int | None, gid: int | None,
              content: bytes | None = None, on_demand: tuple[str, int] | None = None) -> spawn.Process:
        """A ``spawn.Spawner``: through the template when it can, else ``spawn.spawn`` (exec)."""
        proc = None
        if argv[:3] == OUR_VASSAL:
            self.check()
            self._take_ready()
            if self.ready:
                proc = self._fork(name, path, argv[3:], uid, gid, content, on_demand)
        return proc if proc is not None else spawn.spawn(name, path, argv, uid, gid, content, on_demand)

    def _fork(self, name: str, path: str, args: list[str], uid: int | None, gid: int | None,
              content: bytes | None, on_demand: tuple[str, int] | None) -> spawn.Process | None:
        """Ask the template for one vassal. None: it could not (the caller execs instead)."""
        assert self.sock is not None
        env = spawn.vassal_env(os.environ, -1, name)
        env.pop(channel.ENV_FD)
        env.update(spawn.identity_env(uid, on_demand))
        ours, theirs = channel.pair()
        names, fds, ini_fd = ["chan"], [theirs.fileno()], -1
        try:
            if content is not None:
                ini_fd = inifd.seal(content)
                names.append("ini")
                fds.append(ini_fd)
            if on_demand is not None:
                names.append("stdin")
                fds.append(on_demand[1])
            names += ["stdout", "stderr"]
            fds += [1, 2]  # the emperor's current log (a SIGUSR1 reopen changes them)
            request = json.dumps({"args": args, "env": env, "cwd": os.path.dirname(path) or "/",
                                  "uid": uid, "gid": gid, "fds": names,
                                  "ini_path": os.path.abspath(path)}).encode()
            socket.send_fds(self.sock, [request], fds, socket.MSG_DONTWAIT)
        except OSError as exc:
            ours.close()
            if isinstance(exc, BlockingIOError) or exc.errno in (errno.EPIPE, errno.ECONNRESET):
                self._lost(f"cannot send a request: {exc}", kill=True)
            return None
        finally:
            theirs.close()
            if ini_fd >= 0:
                os.close(ini_fd)
        answer = self._answer()
        if answer is None:
            ours.close()
            return None
        pid, pidfd = answer
        ours.setblocking(False)
        self.forked += 1
        return spawn.Process(spawn.Adopted(pid), pidfd, ours)

    def _answer(self) -> tuple[int, int] | None:
        """The template's answer within ``REPLY_TIMEOUT``: (pid, pidfd), else None."""
        assert self.sock is not None
        if not _readable(self.sock, REPLY_TIMEOUT):
            self._lost(f"no answer within {REPLY_TIMEOUT:g} s", kill=True)
            return None
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.sock, 4096, 1, socket.MSG_DONTWAIT)
        except OSError as exc:
            self._lost(f"cannot read its answer: {exc}", kill=True)
            return None
        if msg.startswith(b"ok ") and fds and msg[3:].isdigit():
            return int(msg[3:]), fds[0]
        for fd in fds:
            os.close(fd)
        if not msg:
            self._lost("it closed its socket")
        else:
            log.error("template: %s (this vassal is exec'd)", msg.decode(errors="replace"))
        return None
