"""Listening addresses, and the safety rules for Unix socket files.

Shared by the vassal's uwsgi sockets, the stats servers and the emperor's control socket,
so a socket path is treated the same way everywhere: a regular file (or anything that is not
a socket) is never replaced, a socket some live process listens on is never taken over, and
only a stale socket (nobody answers) is removed.
"""

from __future__ import annotations

import logging
import os
import socket
import stat

log = logging.getLogger("emperor")

SUN_PATH_MAX = 107


class AddressError(ValueError):
    """An address that cannot be used; the message names it and says why."""


def parse(addr: str) -> tuple[socket.AddressFamily, object, str]:
    """(family, sockaddr, kind) for ``/path``, ``@abstract``, ``host:port``, ``:port``, ``[v6]:port``.

    ``kind`` is "unix", "abstract" or "tcp"; ``:port`` means every interface, as in uWSGI.
    """
    if not addr:
        raise AddressError("empty address")
    if addr.startswith("@"):
        return socket.AF_UNIX, "\0" + addr[1:], "abstract"
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep or not port.isdigit():
            raise AddressError(f"{addr}: expected [ipv6]:port")
        return socket.AF_INET6, (host, _port(addr, port)), "tcp"
    host, sep, port = addr.rpartition(":")
    if sep and port.isdigit() and "/" not in addr:
        return socket.AF_INET, (host or "0.0.0.0", _port(addr, port)), "tcp"
    if len(os.fsencode(addr)) > SUN_PATH_MAX:
        raise AddressError(f"{addr}: Unix socket path is {len(os.fsencode(addr))} bytes; "
                           f"the limit is {SUN_PATH_MAX}")
    return socket.AF_UNIX, addr, "unix"


def _port(addr: str, port: str) -> int:
    if not 0 < int(port) < 65536:
        raise AddressError(f"{addr}: port out of range (1-65535)")
    return int(port)


def is_loopback(host: str) -> bool:
    return host.startswith(("127.", "::1", "localhost"))


def clear_stale(path: str) -> None:
    """Remove a stale socket file at ``path``; refuse a non-socket or a live socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressError(f"{path} exists and is not a socket: refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)
            log.info("removed the stale socket file %s (no server listened on it)", path)
        except FileNotFoundError:
            pass
        return
    except BlockingIOError:
        pass  # a full accept queue: somebody is listening
    finally:
        probe.close()
    raise AddressError(f"{path} is in use by a live server: refusing to take it over")
