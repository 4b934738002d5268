"""A vassal's listening sockets: which to bind (uwsgi, HTTP, https, on-demand), reusing inherited ones.

The primitives (bind safely, hand across a re-exec, vacuum) live in emperor/listeners.py, which the
emperor also uses for on-demand sockets.

The master binds once and keeps the sockets for its whole life: worker restarts and graceful
reloads (a re-exec that inherits the fds) never close them, so connections wait in the
kernel queue instead of failing. Safety rules (docs/vassal.md, emperor/addresses.py): never
unlink a regular file or a socket some live process listens on; chmod before listen(); vacuum
only the inode we created.
"""

from __future__ import annotations

import logging
import os
import socket

from emperor import addresses
from emperor.config_view import ConfigView
from emperor.listeners import (  # noqa: F401 - the listening-socket primitives, shared with the emperor
    ENV_FDS,
    ENV_ON_DEMAND,
    Listener,
    adopt,
    bind,
    configure,
    export,
    vacuum,
)

log = logging.getLogger("emperor.sockets")



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
