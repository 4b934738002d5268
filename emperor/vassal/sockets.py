"""Listening sockets: parse addresses, bind safely, hand them across a re-exec, vacuum.

The master binds once and keeps the sockets for its whole life: worker restarts and graceful
reloads (a re-exec that inherits the fds) never close them, so connections wait in the
kernel queue instead of failing. Safety rules (docs/vassal.md, emperor/addresses.py): never
unlink a regular file or a socket some live process listens on; chmod before listen(); vacuum
only the inode we created.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
from dataclasses import dataclass

from emperor import addresses
from emperor.config_view import ConfigView

log = logging.getLogger("emperor.sockets")

ENV_FDS = "EMPEROR_LISTEN_FDS"


@dataclass
class Listener:
    name: str  # the address as configured
    sock: socket.socket
    kind: str  # "unix", "abstract" or "tcp"
    path: str | None = None
    ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file we created
    proto: str = "uwsgi"  # what the workers speak on it: "uwsgi" or "http" (docs/http.md)

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({self.proto}, fd {self.sock.fileno()})"


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
            host = sockaddr[0]
            if not addresses.is_loopback(str(host)):
                log.warning("socket %s listens on a non-loopback address: anyone who can reach it "
                            "can send any CGI variable; firewall it or use a Unix socket", addr)
        elif kind == "abstract":
            log.warning("abstract socket %s has no file permissions: any local process can connect", addr)

        def bind() -> None:
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                raise addresses.AddressError(f"cannot bind {addr}: {exc.strerror}") from None

        listener = Listener(addr, sock, kind)
        if kind == "unix":  # chmod-socket, chown-socket: before listen(), nobody can connect yet
            listener.ident = addresses.bind_unix(addr, bind, mode=mode, owner=owner)
            listener.path = addr
        else:
            bind()
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
    data = []
    for lst in listeners:
        lst.sock.set_inheritable(True)
        data.append({"name": lst.name, "fd": lst.sock.fileno(), "kind": lst.kind, "path": lst.path,
                     "ident": list(lst.ident) if lst.ident else None, "proto": lst.proto})
    return json.dumps(data)


def adopt(raw: str | None) -> dict[str, Listener]:
    """Listeners inherited across a re-exec, by configured name."""
    if not raw:
        return {}
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
        out[item["name"]] = Listener(item["name"], sock, item["kind"], item.get("path"), ident,  # type: ignore[arg-type]
                                     item.get("proto", "uwsgi"))
    return out


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


def plan(uwsgi: list[str], http: list[str]) -> dict[str, str]:
    """Address -> protocol for every configured socket, in config order; an address given for both
    protocols is an error (one socket cannot speak both)."""
    out = dict.fromkeys(uwsgi, "uwsgi")
    for addr in http:
        if out.get(addr) == "uwsgi":
            raise addresses.AddressError(f"{addr} is configured both as a uwsgi socket and an HTTP "
                                         "socket: give each its own address")
        out[addr] = "http"
    return out


def configured(cfg: ConfigView, tls: list[str]) -> dict[str, str]:
    """Address -> protocol for every socket of a vassal's config: ``socket`` (uwsgi, or HTTP with
    ``protocol = http``), ``http-socket``/``http11-socket``/``http`` and the https addresses."""
    http_addrs = [*(cfg.http_socket or []), *(cfg.http or [])]
    if cfg.protocol == "http":
        wanted = plan([], [*(cfg.socket or []), *http_addrs])
    else:
        wanted = plan(cfg.socket or [], http_addrs)
    return with_tls(wanted, tls) if tls else wanted


def with_tls(wanted: dict[str, str], tls: list[str]) -> dict[str, str]:
    """Add the https listeners to a ``plan``; an address used twice is an error."""
    out = dict(wanted)
    for addr in tls:
        if addr in out:
            raise addresses.AddressError(f"{addr} is configured as an https-socket and as another socket")
        out[addr] = "https"
    return out


def open_all(addresses: list[str] | dict[str, str], backlog: int, mode: int | None, timeout: float,
             defer_accept: bool, inherited: dict[str, Listener],
             owner: tuple[int, int] | None = None) -> list[Listener]:
    """Bind each configured address once (duplicates ignored), reusing inherited sockets by name.

    ``addresses`` is a list (all uwsgi) or an address -> protocol map (``plan``).
    """
    out: list[Listener] = []
    wanted = addresses if isinstance(addresses, dict) else dict.fromkeys(addresses, "uwsgi")
    try:
        for addr, proto in wanted.items():
            old = inherited.pop(addr, None)
            if old is not None:
                if old.kind == "unix" and old.path:
                    _refresh_owner(old.path, mode, owner)
                configure(old, backlog, timeout, defer_accept)
                old.proto = proto
                out.append(old)
            else:
                lst = bind(addr, backlog, mode, timeout, defer_accept, owner)
                lst.proto = proto
                out.append(lst)
    except BaseException:
        for lst in out:
            lst.sock.close()
        raise
    for gone in inherited.values():  # removed from the config by a reload
        log.info("closing socket %s: no longer configured", gone.name)
        vacuum(gone)
        gone.sock.close()
    return out
