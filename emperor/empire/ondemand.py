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

Everything here runs on the emperor's loop thread and never blocks it, except the exec mode's
command, which is bounded by ``EXEC_TIMEOUT`` and runs once per vassal name.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import stat
import subprocess
from dataclasses import dataclass

from emperor.addresses import AddressError
from emperor.empire.scan import Found
from emperor.empire.vassals import State, Vassal
from emperor.vassal import sockets

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
    """The on-demand address of the vassal file ``path`` (None: an ordinary vassal).

    ``owner``: tyrant mode, the file's owner: the extension file must be a regular file of
    the same owner (the root emperor must not read a line of any file a user links to).
    """
    if modes.extension:
        ext = modes.extension if modes.extension.startswith(".") else f".{modes.extension}"
        return _from_file(path + ext, owner)
    if modes.directory:
        stem, dot, _ = os.path.basename(path).rpartition(".")
        return os.path.join(modes.directory, f"{stem}.socket") if dot and stem else None
    if modes.exec:
        return _from_command(modes.exec, path)
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


def _from_command(command: str, path: str) -> str | None:
    try:
        argv = [*shlex.split(command), path]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=EXEC_TIMEOUT,
                              check=False, cwd=os.path.dirname(path) or None)
    except subprocess.TimeoutExpired:
        raise OnDemandError(f"emperor-on-demand-exec {command!r} {path}: no answer within "
                            f"{EXEC_TIMEOUT:g} s") from None
    except (OSError, ValueError) as exc:
        raise OnDemandError(f"emperor-on-demand-exec {command!r}: {exc}") from None
    if done.returncode != 0:
        raise OnDemandError(f"emperor-on-demand-exec {command!r} {path}: exited with status "
                            f"{done.returncode}")
    return first_line(done.stdout[:MAX_LINE])


class OnDemand:
    """The sockets the emperor holds, by vassal name, and their place in the emperor's selector."""

    def __init__(self, modes: Modes, sel: selectors.BaseSelector, tyrant: bool = False) -> None:
        self.modes = modes
        self.sel = sel
        self.tyrant = tyrant
        self.addresses: dict[str, str | None] = {}  # worked out once per name
        self.held: dict[str, sockets.Listener] = {}
        self.watched: set[str] = set()
        self.refused_log: dict[str, float] = {}

    def arm(self, v: Vassal, f: Found, now: float) -> bool:
        """Called instead of a spawn. False: not on-demand, spawn it. True: it waits for a
        connection (or, when its socket cannot be bound, it is throttled and retried later)."""
        if not self.modes.enabled:
            return False
        if v.name not in self.addresses:
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
                lst = sockets.bind(addr, BACKLOG, MODE, 0.0, False)
            except (AddressError, OSError) as exc:
                v.spawn_failed(now, f"on-demand socket {addr}: {exc}")
                return True
            lst.sock.setblocking(False)
            self.held[v.name] = lst
        v.waiting(f.stamp, "(on-demand)")
        return True

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

    def _refuse(self, name: str, lst: sockets.Listener, now: float, why: str) -> None:
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

    def sync(self, vassals: dict[str, Vassal]) -> None:
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

    def _unwatch(self, name: str) -> None:
        if name in self.watched:
            self.watched.discard(name)
            self.sel.unregister(self.held[name].sock)

    def _close(self, name: str) -> None:
        self._unwatch(name)
        lst = self.held.pop(name)
        self.refused_log.pop(name, None)
        sockets.vacuum(lst)
        lst.sock.close()
        log.info("on-demand: closed %s (%r is gone)", lst.name, name)

    def close(self) -> None:
        for name in list(self.held):
            self._close(name)
