"""Exec a vassal or a zerg: its command line, its environment, the only OS calls that touch it,
and the emperor's table of children (``Children``: channel, pidfd, drain, close, kill).

A vassal is a fresh interpreter (``python -m emperor.vassal --ini FILE``) or, through the
template (emperor/empire/template.py), a fork of a pre-imported one; never a fork of the
emperor, whose watchdog thread must not cross a ``fork()``. It inherits exactly two
extra fds, its end of the channel and a sealed memfd holding the ini bytes the emperor
checked (``emperor/inifd.py``), and runs in its own session so that the emperor can
signal its whole process group. Spawning must happen on the main thread: the vassal's
parent-death signal fires when the *thread* that forked it exits.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from emperor import channel, config, ini, inifd, logs, venv
from emperor.channel import Msg, decode
from emperor.listeners import ENV_ON_DEMAND
from emperor.options import Scope, lookup
from emperor.privileges import ENV_TYRANT

log = logging.getLogger("emperor")

# Variables that belong to the emperor's own supervisor and must not leak into a vassal.
STRIPPED_ENV = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC",
                "WATCHDOG_PID", channel.ENV_FD, channel.ENV_NAME, inifd.ENV, ENV_ON_DEMAND)


def vassal_set_args(assignments: Sequence[str]) -> list[str]:
    """``vassal-set = k=v`` -> ``--k v`` for a vassal option, else ``--set-placeholder k=v``.

    uWSGI's ``--set`` both sets an option and defines a placeholder; emperor keeps the two
    apart, so an unknown key is only a placeholder and never silently ignored.
    """
    args: list[str] = []
    for item in assignments:
        key, _, value = item.partition("=")
        key = key.strip()
        opt = lookup(key)
        if opt is not None and opt.scope & Scope.VASSAL and opt.name not in ("ini", "set-placeholder"):
            args += [f"--{opt.name}", value.strip()]
        else:
            args += ["--set-placeholder", f"{key}={value.strip()}"]
    return args


def ini_spec(path: str) -> str:
    """``--ini`` reads ``file.ini:section``; a ``:`` in the file's own name gets an empty section
    after it (the default one, ``%x`` empty), so ``app:v2.ini`` is not read as section ``v2.ini``."""
    return f"{path}:" if ":" in os.path.basename(path) else path


def vassal_argv(path: str, before: Sequence[str], includes: Sequence[str], tyrant: bool = False,
                content: bytes | None = None) -> list[str]:
    """uWSGI's order: ``vassal-set`` values first, then the vassal's own file, then ``vassals-include``."""
    tail = [*before, "--ini", ini_spec(path)]
    for inc in includes:
        tail += ["--ini", inc]
    return [*interpreter(tail, path, content, tyrant), *tail]


# Keys that make the ini reader touch other paths (includes, if-exists ...): in a tyrant-mode file
# the root emperor does not evaluate them (the vassal does, as its user).
_READS_OTHER_PATHS = re.compile(rb"^[ \t]*(ini|include|if-[a-z-]+|for[a-z-]*)[ \t]*=", re.MULTILINE)


def interpreter(args: Sequence[str], path: str, content: bytes | None, tyrant: bool = False) -> list[str]:
    """Start the vassal with its ``home`` venv's python when the venv is usable, else with ours.

    Reading ``home`` here saves the vassal a re-exec (and lets a tyrant-mode vassal run
    although the emperor's own interpreter is not readable by its user). Any problem with
    the file or the venv is left to the vassal, which reports it with file, line and key.
    ``content`` is what the scan checked: the file is never opened again by path, so a swap
    after the check cannot choose the interpreter a tyrant-mode vassal runs as its owner.
    A tyrant-mode file is another user's: the emperor (root) reads it only when it does not
    make the reader look at other paths, so it cannot learn anything about root-only files.
    """
    default = [sys.executable, "-m", "emperor.vassal"]
    if tyrant and (content is None or _READS_OTHER_PATHS.search(content)):
        return default
    pairs = [(k.removeprefix("--"), v) for k, v in zip(args[::2], args[1::2], strict=False)]
    pinned = os.path.abspath(path)
    if content is not None:
        ini.pin(pinned, content)
    try:
        home = config.from_args(pairs, Scope.ZERG if args[-1].endswith(":zerg") else Scope.VASSAL).home
        if home:
            return venv.command(venv.check(home))
    except (config.ConfigError, ini.IniError, venv.VenvError, OSError):
        pass
    finally:
        if content is not None:
            ini.pin(pinned, None)
    return default


def zerg_argv(path: str, tyrant: bool = False, content: bytes | None = None) -> list[str]:
    """A zerg runs the ``[zerg]`` section of its vassal's file alone, as uWSGI's ``file.ini:zerg``.

    Neither ``vassal-set`` nor ``vassals-include`` apply: they are written for vassals and
    may set options (a socket, a zerg-server) that a zerg must not have.
    """
    tail = ["--ini", f"{path}:zerg"]
    return [*interpreter(tail, path, content, tyrant), *tail]


def config_problem(path: str, content: bytes | None) -> str | None:
    """Why the vassal's ini is invalid, in the emperor's words (None: no config error found), read
    from the bytes the vassal was given (``content``), not from the path again."""
    pinned = os.path.abspath(path)
    ini.pin(pinned, content)
    try:
        config.from_args([("ini", ini_spec(path))], Scope.VASSAL)
    except config.ConfigError as exc:
        return str(exc)
    except Exception:  # the vassal's own message is in the log already
        return None
    finally:
        ini.pin(pinned, None)
    return None


def vassal_env(environ: Mapping[str, str], fd: int, name: str) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in STRIPPED_ENV}
    env[channel.ENV_FD] = str(fd)
    env[channel.ENV_NAME] = name
    return env


class Child(Protocol):
    """What :class:`Process` needs of the process: a ``subprocess.Popen`` (exec'd) or a
    :class:`Adopted` (forked by the template, then re-parented to the emperor)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self) -> int: ...


class Adopted:
    """A vassal forked by the template (emperor/vassal/template.py): the emperor's child by
    re-parenting (the emperor is a child subreaper), so it is waited for by pid like a Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def _waitpid(self, options: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, options)
            except ChildProcessError:  # reaped elsewhere: the status is lost
                self.returncode = 255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._waitpid(os.WNOHANG)

    def wait(self) -> int:
        code = self._waitpid(0)
        assert code is not None
        return code


@dataclass
class Process:
    """A running vassal as the emperor holds it: the process, a pidfd and the channel."""

    popen: Child
    pidfd: int
    channel: socket.socket

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send(self, msg: Msg, payload: str = "") -> bool:
        return channel.send(self.channel, msg, payload)

    def send_ini(self, msg: Msg, content: bytes) -> bool:
        """``msg`` (a RELOAD) with a sealed memfd of the ini bytes the emperor just checked."""
        try:
            fd = inifd.seal(content)
        except OSError:
            return False
        try:
            socket.send_fds(self.channel, [channel.encode(msg)], [fd], socket.MSG_DONTWAIT)
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def poll(self) -> int | None:
        return self.popen.poll()

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal the master through its pidfd, then its process group, while the master is not reaped.

        Until it is reaped the master (alive or a zombie) holds its pid, so neither the pid
        nor the group id can name another process. After :meth:`reap` or :meth:`close` this
        does nothing: the pidfd's number may by then belong to another vassal's pidfd.
        """
        if self.pidfd < 0 or self.popen.returncode is not None:
            return
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self.pidfd, sig)
        with contextlib.suppress(OSError):
            os.killpg(self.popen.pid, sig)

    def exited(self) -> bool:
        """The master has exited (its pidfd is readable); it is not reaped yet."""
        if self.pidfd < 0:
            return self.popen.returncode is not None
        try:
            return os.waitid(os.P_PIDFD, self.pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def reap(self) -> int | None:
        """The master has exited: SIGKILL what is left of its group (the zombie still holds the
        group's id, so this cannot hit a newcomer), then reap it. Returns the exit status."""
        if not self.exited():
            return None
        self.kill_group()
        return self.popen.wait()

    def close(self) -> None:
        fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.channel.close()


def spawn(name: str, path: str, argv: list[str], uid: int | None, gid: int | None,
          content: bytes | None = None, on_demand: tuple[str, int] | None = None) -> Process:
    """Start one vassal. Raises OSError (EMFILE, ENOMEM, EAGAIN ...) for the caller to throttle.

    ``content``: the bytes of ``path`` the emperor checked; the vassal reads them from an
    inherited memfd instead of opening ``path`` again (``emperor/inifd.py``).
    ``on_demand``: (address, fd) of the socket the emperor bound for an on-demand vassal; the
    vassal gets it as fd 0, as uWSGI's do (``emperor/empire/ondemand.py``).
    """
    assert threading.current_thread() is threading.main_thread(), "vassals are spawned on the main thread"
    ours, theirs = channel.pair()
    ini_fd = -1
    try:
        env = vassal_env(os.environ, theirs.fileno(), name)
        fds = [theirs.fileno()]
        if content is not None:
            ini_fd = inifd.seal(content)
            fds.append(ini_fd)
            env[inifd.ENV] = inifd.env_value(ini_fd, os.path.abspath(path))
        kwargs: dict[str, object] = {}
        stdin: int = subprocess.DEVNULL
        env.update(identity_env(uid, on_demand))
        if on_demand is not None:
            stdin = on_demand[1]
        if uid is not None:
            kwargs.update(user=uid, group=gid, extra_groups=[])
        popen = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=stdin,
                                 cwd=os.path.dirname(path), start_new_session=True, **kwargs)  # type: ignore[call-overload]
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        if ini_fd >= 0:
            os.close(ini_fd)
    return watch(popen.pid, popen, ours)


def identity_env(uid: int | None, on_demand: tuple[str, int] | None) -> dict[str, str]:
    """The variables that tell a vassal how it was started, for the exec and the template path."""
    env: dict[str, str] = {}
    if on_demand is not None:
        env[ENV_ON_DEMAND] = on_demand[0]  # its socket is fd 0
    if uid is not None:
        env[ENV_TYRANT] = "1"  # the file's own uid/gid lose (emperor/privileges.py)
    return env


def watch(pid: int, child: Child, ours: socket.socket) -> Process:
    """The emperor's handle on a started child; without a pidfd it is killed, not left unsupervised."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        os.killpg(pid, signal.SIGKILL)
        child.wait()
        ours.close()
        raise OSError(exc.errno or errno.EMFILE, f"pidfd_open: {exc.strerror}") from None
    ours.setblocking(False)
    return Process(child, pidfd, ours)


class Spawner(Protocol):
    """How the emperor starts a child (``spawn`` below; a fake in tests/test_emperor_unit.py)."""

    def __call__(self, name: str, path: str, argv: list[str], uid: int | None, gid: int | None,
                 content: bytes | None = None, on_demand: tuple[str, int] | None = None) -> Process: ...


class Children:
    """Every child of the emperor, vassal or zerg, by name: its channel and pidfd on the loop's
    selector, draining its messages, signalling, reaping and closing it. One table, so a SIGUSR1
    log reopen, a shutdown and the final close reach every child alike."""

    def __init__(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        self.procs: dict[str, Process] = {}

    def add(self, name: str, proc: Process, kind: str) -> None:
        """Watch ``proc``: its channel reports as ``kind``, its exit as ``kind + "-exit"``
        (``channel``/``exit`` for a vassal, ``zerg``/``zerg-exit`` for a zerg)."""
        self.procs[name] = proc
        self.sel.register(proc.channel, selectors.EVENT_READ, (kind, name))
        self.sel.register(proc.pidfd, selectors.EVENT_READ, ("exit" if kind == "channel" else f"{kind}-exit",
                                                             name))

    def get(self, name: str) -> Process | None:
        return self.procs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self.procs

    def __len__(self) -> int:
        return len(self.procs)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.procs))

    def messages(self, name: str) -> Iterator[tuple[Msg, str]]:
        """The messages waiting on a child's channel, at most 64 per call so a chatty child cannot
        starve the others. EOF means the process is exiting: the channel leaves the selector and
        its pidfd says when it is gone."""
        proc = self.procs.get(name)
        if proc is None:
            return
        for _ in range(64):
            try:
                packet = proc.channel.recv(1024)
            except BlockingIOError:
                return
            except OSError:
                packet = b""
            if not packet:
                with contextlib.suppress(KeyError, ValueError):
                    self.sel.unregister(proc.channel)
                return
            message = decode(packet)
            if message is None:
                log.debug("channel: %r sent an unknown message %r", name, packet[:16])
                continue
            yield message

    def send(self, name: str, msg: Msg, content: bytes | None = None, payload: str = "") -> bool | None:
        """``msg`` with its payload, or with the checked ini bytes (a RELOAD); None: no such child."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        return proc.send(msg, payload) if content is None else proc.send_ini(msg, content)

    def kill(self, name: str) -> bool:
        """SIGKILL the child's process group (False: no such child)."""
        proc = self.procs.get(name)
        if proc is None:
            return False
        proc.kill_group()
        return True

    def reap(self, name: str) -> int | None:
        """The child's exit status once it is gone (its entry is closed then), else None."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        returncode = proc.reap()  # kills leftovers of its group (a stray grandchild) before reaping
        if returncode is not None:
            self.close(name)
        return returncode

    def close(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        for obj in (proc.channel, proc.pidfd):
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(obj)
        proc.close()

    def reopen_log(self, logto: str | None, why: str) -> None:
        """Reopen our log (logrotate) and pass it to every vassal and zerg: they write to it too."""
        try:
            if not logs.reopen(logto):
                return
        except OSError as exc:
            log.error("log: cannot reopen %s (%s): %s", logto, why, exc.strerror)
            return
        log.info("log: reopened %s (%s)", logto, why)
        self.pass_log()

    def pass_log(self) -> None:
        """Our reopened log (fd 2) to every child: they write to it too."""
        for proc in self.procs.values():
            channel.send_fd(proc.channel, Msg.LOGREOPEN, 2)
