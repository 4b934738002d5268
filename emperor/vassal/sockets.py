"""Listening sockets: parse addresses, bind safely, hand them across a re-exec, vacuum.

The master binds once and keeps the sockets for its whole life: worker restarts and graceful
reloads (a re-exec that inherits the fds) never close them, so connections wait in the
kernel queue instead of failing. Safety rules (docs/vassal.md, emperor/addresses.py): never
unlink a regular file or a socket some live process listens on; chmod before listen(); vacuum
only the inode we created.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from dataclasses import dataclass

from emperor import addresses

log = logging.getLogger("emperor.sockets")

ENV_FDS = "EMPEROR_LISTEN_FDS"
# On-demand vassals (docs/emperor.md): the emperor passes the listening socket it bound as fd 0, as
# uWSGI does, and names its address here so the vassal never mistakes an ordinary stdin for a socket.
ENV_ON_DEMAND = "EMPEROR_ON_DEMAND"


@dataclass
class Listener:
    name: str  # the address as configured
    sock: socket.socket
    kind: str  # "unix", "abstract" or "tcp"
    path: str | None = None
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we created

    def describe(self) -> str:
        return f"{self.kind} {self.name} (fd {self.sock.fileno()})"


def _somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _set_timeouts(sock: socket.socket, timeout: float) -> None:
    """SO_RCVTIMEO/SO_SNDTIMEO on the listener: accepted TCP sockets inherit them (Unix ones don't)."""
    tv = struct.pack("ll", int(timeout), int((timeout % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def bind(addr: str, backlog: int, mode: int | None, timeout: float, defer_accept: bool,
         owner: tuple[int, int] | None = None) -> Listener:
    family, sockaddr, kind = addresses.parse(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            host = sockaddr[0]  # type: ignore[index]
            if not addresses.is_loopback(str(host)):
                log.warning("socket %s listens on a non-loopback address: anyone who can reach it "
                            "can send any CGI variable; firewall it or use a Unix socket", addr)
        elif kind == "abstract":
            log.warning("abstract socket %s has no file permissions: any local process can connect", addr)
        else:
            addresses.clear_stale(addr)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            raise addresses.AddressError(f"cannot bind {addr}: {exc.strerror}") from None
        listener = Listener(addr, sock, kind)
        if kind == "unix":
            if mode is not None:
                os.chmod(addr, mode)  # before listen(): nobody can connect yet
            if owner is not None:
                try:
                    os.chown(addr, *owner)  # chown-socket, also before listen()
                except OSError as exc:
                    raise addresses.AddressError(f"chown-socket {addr}: {exc.strerror}") from None
            st = os.lstat(addr)
            listener.path, listener.ident = addr, (st.st_dev, st.st_ino)
        configure(listener, backlog, timeout, defer_accept)
        return listener
    except BaseException:
        sock.close()
        raise


def configure(listener: Listener, backlog: int, timeout: float, defer_accept: bool) -> None:
    """listen() with the configured backlog (also re-applied to inherited sockets) and timeouts."""
    sock = listener.sock
    if listener.kind == "tcp" and defer_accept:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, max(1, int(timeout)))
    _set_timeouts(sock, timeout)
    cap = _somaxconn()
    if cap is not None and backlog > cap:
        log.warning("listen %d for %s is above net.core.somaxconn (%d): the kernel caps it at %d",
                    backlog, listener.name, cap, cap)
    sock.listen(backlog)


def export(listeners: list[Listener]) -> str:
    """Describe listeners for the next image after a re-exec; makes their fds inheritable."""
    import json  # only at a reload: kept off the cold-start path (docs/emperor.md#cold-start)

    data = []
    for lst in listeners:
        lst.sock.set_inheritable(True)
        data.append({"name": lst.name, "fd": lst.sock.fileno(), "kind": lst.kind, "path": lst.path,
                     "ident": list(lst.ident) if lst.ident else None})
    return json.dumps(data)


def adopt(raw: str | None) -> dict[str, Listener]:
    """Listeners inherited across a re-exec, by configured name."""
    if not raw:
        return {}
    import json  # only after a reload

    out: dict[str, Listener] = {}
    try:
        items = json.loads(raw)
    except ValueError:
        log.error("ignoring malformed %s", ENV_FDS)
        return {}
    for item in items:
        try:
            sock = socket.socket(fileno=int(item["fd"]))
        except OSError as exc:
            log.error("inherited socket %s (fd %s) is gone: %s", item.get("name"), item.get("fd"), exc)
            continue
        sock.set_inheritable(False)
        ident = tuple(item["ident"]) if item.get("ident") else None
        out[item["name"]] = Listener(item["name"], sock, item["kind"], item.get("path"), ident)  # type: ignore[arg-type]
    return out


def take_on_demand(inherited: dict[str, Listener]) -> Listener | None:
    """The socket the emperor bound for an on-demand vassal (``EMPEROR_ON_DEMAND`` names it), or None.

    At the first start it is fd 0 (uWSGI's convention): it is moved to a new fd and fd 0 is
    pointed at /dev/null, so the app never reads a socket as stdin and a reload, which hands
    every listener over by name (``export``), finds it in ``inherited``. It has no path nor
    inode: the emperor owns the file and the vassal never removes it (``vacuum``).
    """
    addr = os.environ.get(ENV_ON_DEMAND)
    if not addr:
        return None
    if addr in inherited:
        return inherited.pop(addr)
    kind = addresses.parse(addr)[2]
    fd = os.dup(0)
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        os.close(fd)
        why = f"fd 0 is not a socket ({exc.strerror})"
        raise addresses.AddressError(f"on-demand socket {addr}: {why}") from None
    try:
        listening = sock.type == socket.SOCK_STREAM and bool(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        listening = False
    if not listening:
        sock.close()
        raise addresses.AddressError(f"on-demand socket {addr}: fd 0 is not a listening stream socket")
    sock.set_inheritable(False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log.info("on-demand socket %s adopted from the emperor (fd 0)", addr)
    return Listener(addr, sock, kind)


def vacuum(listener: Listener) -> None:
    """Unlink our Unix socket file, only if it is still the inode we created."""
    if listener.kind != "unix" or not listener.path or not listener.ident:
        return
    try:
        st = os.lstat(listener.path)
        if (st.st_dev, st.st_ino) == listener.ident:
            os.unlink(listener.path)
        else:
            log.warning("not removing %s: it is no longer our socket", listener.path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove %s: %s", listener.path, exc)


def _refresh_owner(path: str, mode: int | None, owner: tuple[int, int] | None) -> None:
    """Re-apply chmod/chown-socket to an inherited socket, only where it changed.

    After a privilege drop the master may no longer own the socket file (chown-socket gave it
    away), and a reload must not fail for what is already right; a change it cannot make is
    logged, and needs a restart of the vassal.
    """
    try:
        st = os.lstat(path)
        if mode is not None and st.st_mode & 0o7777 != mode:
            os.chmod(path, mode)
        have = (st.st_uid, st.st_gid)
        if owner is not None and any(w not in (-1, h) for w, h in zip(owner, have, strict=True)):
            os.chown(path, *owner)
    except OSError as exc:
        log.warning("socket %s: cannot apply the new chmod-socket/chown-socket after the privilege drop "
                    "(%s): restart the vassal to apply it", path, exc.strerror)


def open_all(addresses: list[str], backlog: int, mode: int | None, timeout: float,
             defer_accept: bool, inherited: dict[str, Listener],
             owner: tuple[int, int] | None = None) -> list[Listener]:
    """Bind each configured address once (duplicates ignored), reusing inherited sockets by name."""
    out: list[Listener] = []
    try:
        for addr in dict.fromkeys(addresses):
            old = inherited.pop(addr, None)
            if old is not None:
                if old.kind == "unix" and old.path:
                    _refresh_owner(old.path, mode, owner)
                configure(old, backlog, timeout, defer_accept)
                out.append(old)
            else:
                out.append(bind(addr, backlog, mode, timeout, defer_accept, owner))
    except BaseException:
        for lst in out:
            lst.sock.close()
        raise
    for gone in inherited.values():  # removed from the config by a reload
        log.info("closing socket %s: no longer configured", gone.name)
        vacuum(gone)
        gone.sock.close()
    return out
