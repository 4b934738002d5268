"""On-demand vassals (uWSGI's socket activation): the emperor holds the socket, the vassal starts
at the first connection and leaves when idle.

Where the address comes from (emperor options, uWSGI's names and order of precedence):

* ``emperor-on-demand-extension EXT``: the first line of the file ``<vassal file>EXT`` next to
  the vassal file (``app.ini.socket``); no such file (or an empty first line): an ordinary vassal;
* ``emperor-on-demand-directory DIR``: the Unix socket ``DIR/<name up to its last dot>.socket``;
* ``emperor-on-demand-exec CMD``: the first line ``CMD <vassal file>`` prints (none: ordinary).

The address is worked out once, when the vassal is first seen (as uWSGI does). The emperor binds
it and registers it in its selector; it never accepts a connection it means to serve, so the
first client waits in the kernel's queue and is answered by the vassal, which gets the socket as
fd 0 (``emperor/vassal/sockets.py`` ``take_on_demand``). While the vassal runs, the socket is out
of the selector; when it exits after its idle period (``idle`` + ``die-on-idle``, it says IDLE
first) the socket is watched again. While the vassal is throttled or failed, connections are
accepted and closed at once, so a client is told at once instead of waiting in the queue.

Everything here runs on the emperor's loop thread and never blocks it: the exec mode's command
runs while the loop goes on (its stdout is in the selector, its answer is due within
``EXEC_TIMEOUT``), and the vassal waits in the on-demand state meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import shlex
import signal
import stat
import subprocess
from dataclasses import dataclass, field

from emperor import listeners
from emperor.addresses import AddressError
from emperor.empire.scan import Found
from emperor.empire.vassals import State, Vassal

log = logging.getLogger("emperor")

EXEC_TIMEOUT = 2.0  # emperor-on-demand-exec: the command must print its line within this
BACKLOG = 100  # the emperor's listen(); the vassal re-applies its own `listen` once it runs
MODE = 0o666  # the Unix socket's mode, as uWSGI's on-demand socket (the web server must connect)
REJECT_BATCH = 64  # connections closed per wake-up while the vassal cannot start
MAX_LINE = 4096


class OnDemandError(Exception):
    """The address could not be worked out; the message names the file or command."""


@dataclass(frozen=True)
class Modes:
    """The three emperor options (None: unset)."""

    extension: str | None = None
    directory: str | None = None
    exec: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.extension or self.directory or self.exec)


def first_line(data: bytes) -> str | None:
    """uWSGI's rule: the address ends at the first control character; empty means none."""
    end = next((i for i, b in enumerate(data) if b < 32), len(data))
    text = data[:end].decode("utf-8", "replace").strip()
    return text or None


def address_for(modes: Modes, path: str, owner: int | None = None) -> str | None:
    """The on-demand address of the vassal file ``path`` (None: an ordinary vassal), for the
    extension and directory modes (the exec mode is asked without waiting: ``OnDemand._ask``).

    ``owner``: tyrant mode, the file's owner: the extension file must be a regular file of
    the same owner (the root emperor must not read a line of any file a user links to).
    """
    if modes.extension:
        ext = modes.extension if modes.extension.startswith(".") else f".{modes.extension}"
        return _from_file(path + ext, owner)
    if modes.directory:
        stem, dot, _ = os.path.basename(path).rpartition(".")
        return os.path.join(modes.directory, f"{stem}.socket") if dot and stem else None
    return None


def _from_file(path: str, owner: int | None) -> str | None:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if owner is not None else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise OnDemandError(f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OnDemandError(f"{path}: not a regular file")
        if owner is not None and st.st_uid != owner:
            raise OnDemandError(f"{path}: owned by uid {st.st_uid}, not by the vassal's owner {owner} "
                                "(tyrant mode)")
        return first_line(os.read(fd, MAX_LINE))
    finally:
        os.close(fd)


@dataclass
class _Asking:
    """emperor-on-demand-exec's command while it runs: its output so far and its deadline."""

    proc: subprocess.Popen[bytes]
    deadline: float
    out: bytearray = field(default_factory=bytearray)


class OnDemand:
    """The sockets the emperor holds, by vassal name, and their place in the emperor's selector."""

    def __init__(self, modes: Modes, sel: selectors.BaseSelector, tyrant: bool = False) -> None:
        self.modes = modes
        self.sel = sel
        self.tyrant = tyrant
        self.addresses: dict[str, str | None] = {}  # worked out once per name
        self.held: dict[str, listeners.Listener] = {}
        self.watched: set[str] = set()
        self.refused_log: dict[str, float] = {}
        self.asking: dict[str, _Asking] = {}  # exec mode: commands still running, by vassal name

    def arm(self, v: Vassal, f: Found, now: float) -> bool:
        """Called instead of a spawn. False: not on-demand, spawn it. True: it waits for a
        connection (or for the exec mode's answer; or, when its socket cannot be bound, it is
        throttled and retried later)."""
        if not self.modes.enabled:
            return False
        if v.name not in self.addresses:
            if v.name in self.asking:
                v.waiting(f.stamp, f"asks {self.modes.exec} for its address")
                return True
            if not (self.modes.extension or self.modes.directory):
                return self._ask(v, f, now)
            try:
                self.addresses[v.name] = address_for(self.modes, f.path, f.uid if self.tyrant else None)
            except OnDemandError as exc:
                v.spawn_failed(now, f"on-demand: {exc}")
                return True
        addr = self.addresses[v.name]
        if addr is None:
            return False
        v.on_demand = addr
        if v.name not in self.held:
            try:
                lst = listeners.bind(addr, BACKLOG, MODE, 0.0, False)
            except (AddressError, OSError) as exc:
                v.spawn_failed(now, f"on-demand socket {addr}: {exc}")
                return True
            lst.sock.setblocking(False)
            self.held[v.name] = lst
        v.waiting(f.stamp, f"waits for a connection on {addr}")
        return True

    # ---- the exec mode: ask without waiting

    def _ask(self, v: Vassal, f: Found, now: float) -> bool:
        command = self.modes.exec or ""
        try:
            argv = [*shlex.split(command), f.path]
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    cwd=os.path.dirname(f.path) or None, start_new_session=True)
        except (OSError, ValueError) as exc:
            v.spawn_failed(now, f"on-demand: emperor-on-demand-exec {command!r}: {exc}")
            return True
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        self.asking[v.name] = _Asking(proc, now + EXEC_TIMEOUT)
        self.sel.register(proc.stdout, selectors.EVENT_READ, ("ondemand-exec", v.name))
        v.waiting(f.stamp, f"asks {command} for its address")
        return True

    def answer(self, name: str, v: Vassal | None, f: Found | None, now: float) -> bool:
        """The command's stdout is readable. True: it named no address, spawn the vassal now as an
        ordinary one. Otherwise the vassal now waits on its socket (or is throttled)."""
        asking = self.asking.get(name)
        if asking is None or asking.proc.stdout is None:
            return False
        try:
            chunk = os.read(asking.proc.stdout.fileno(), MAX_LINE)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        asking.out += chunk
        line_done = b"\n" in asking.out or len(asking.out) >= MAX_LINE
        if chunk and not line_done:
            return False  # more to come
        returncode = self._finish(name)
        if v is None or f is None:
            return False
        command = self.modes.exec
        if not line_done and returncode != 0:
            v.spawn_failed(now, f"on-demand: emperor-on-demand-exec {command!r} {f.path}: "
                           f"exited with status {returncode}")
            return False
        self.addresses[name] = first_line(bytes(asking.out))
        if self.addresses[name] is None:
            log.info("on-demand: %r: %s named no address: an ordinary vassal", name, command)
            return True
        self.arm(v, f, now)
        return False

    def _finish(self, name: str) -> int:
        """Stop watching the command, end it if it still runs (it has said what we need), reap it."""
        asking = self.asking.pop(name)
        assert asking.proc.stdout is not None
        self.sel.unregister(asking.proc.stdout)
        asking.proc.stdout.close()
        if asking.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(asking.proc.pid, signal.SIGKILL)
        return asking.proc.wait()  # at once: it has exited or was just killed

    def deadline(self) -> float | None:
        """When the oldest running command's answer is overdue (for the emperor's select)."""
        return min((a.deadline for a in self.asking.values()), default=None)

    def handoff(self, name: str) -> tuple[str, int] | None:
        """(address, fd) for the spawn: the vassal gets the socket as fd 0."""
        lst = self.held.get(name)
        return (lst.name, lst.sock.fileno()) if lst is not None else None

    def connection(self, name: str, v: Vassal | None, now: float) -> bool:
        """The socket is readable. True: spawn the vassal now (the connection stays queued for it).

        ``v`` None: its file is gone (the record goes at the next reconcile): closed at once."""
        lst = self.held.get(name)
        if lst is None:
            return False
        if v is None:
            self._refuse(name, lst, now, "its file is gone")
            return False
        due = v.state == State.THROTTLED and now >= v.respawn_at
        if v.state == State.ON_DEMAND or due:
            self._unwatch(name)
            log.info("woken: %r: a connection on %s", name, lst.name)
            return True
        if v.state in (State.THROTTLED, State.FAILED):
            self._refuse(name, lst, now, f"it is {v.state.value} ({v.last_error})")
            return False
        self._unwatch(name)  # running: its workers accept
        return False

    def _refuse(self, name: str, lst: listeners.Listener, now: float, why: str) -> None:
        """Accept and close what is queued: a client learns at once that nothing serves it."""
        lst.sock.setblocking(False)  # the flag is shared with the vassal's copy; it sets its own
        closed = 0
        for _ in range(REJECT_BATCH):
            try:
                conn, _ = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.error("on-demand socket %s: accept: %s", lst.name, exc.strerror)
                break
            conn.close()
            closed += 1
        if closed and now - self.refused_log.get(name, -60.0) >= 1.0:
            self.refused_log[name] = now
            log.warning("refused: %d connection(s) to %r on %s: %s", closed, name, lst.name, why)

    def sync(self, vassals: dict[str, Vassal], now: float) -> None:
        """Once per loop iteration: watch the socket of each vassal without a process, stop watching
        the others, close the sockets of records that are gone (or moved to another address)."""
        for name, lst in list(self.held.items()):
            v = vassals.get(name)
            if v is None or v.on_demand != lst.name:
                self._close(name)
                continue
            if v.state in (State.ON_DEMAND, State.THROTTLED, State.FAILED):
                if name not in self.watched:
                    self.sel.register(lst.sock, selectors.EVENT_READ, ("ondemand", name))
                    self.watched.add(name)
            else:
                self._unwatch(name)
        for name in list(self.addresses):
            if name not in vassals:
                del self.addresses[name]  # seen anew (a new file of that name): asked again
        for name, asking in list(self.asking.items()):
            v = vassals.get(name)
            if v is None:
                self._finish(name)
            elif now >= asking.deadline:
                self._finish(name)
                v.spawn_failed(now, f"on-demand: emperor-on-demand-exec {self.modes.exec!r} {v.path}: no "
                               f"answer within {EXEC_TIMEOUT:g} s")

    def _unwatch(self, name: str) -> None:
        if name in self.watched:
            self.watched.discard(name)
            self.sel.unregister(self.held[name].sock)

    def _close(self, name: str) -> None:
        self._unwatch(name)
        lst = self.held.pop(name)
        self.refused_log.pop(name, None)
        listeners.vacuum(lst)
        lst.sock.close()
        log.info("on-demand: closed %s (%r is gone)", lst.name, name)

    def close(self) -> None:
        for name in list(self.held):
            self._close(name)
        for name in list(self.asking):
            self._finish(name)
