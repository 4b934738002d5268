"""Listening addresses, and the safety rules for Unix socket files.

Shared by the vassal's uwsgi sockets, the stats servers and the emperor's control socket,
so a socket path is treated the same way everywhere: a regular file (or anything that is not
a socket) is never replaced, a socket some live process listens on is never taken over, and
only a stale socket (nobody answers) is removed. ``bind_unix`` applies those rules and the
file's mode and owner around any bind (a Python socket's, or a ZMQ socket's), so each
server says only what differs: a private 0600 file (stats, control) or the configured
``chmod-socket``/``chown-socket`` (the vassal's uwsgi sockets).
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from collections.abc import Callable

log = logging.getLogger("emperor")

SUN_PATH_MAX = 107

SockAddr = str | tuple[str, int]  # a Unix path (or "\0abstract"), or (host, port)


class AddressError(ValueError):
    """An address that cannot be used; the message names it and says why."""


def parse(addr: str) -> tuple[socket.AddressFamily, SockAddr, str]:
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


def bind_unix(path: str, bind: Callable[[], object], *, private: bool = False, mode: int | None = None,
              owner: tuple[int, int] | None = None) -> tuple[int, int]:
    """Bind a Unix socket file at ``path`` with the safety rules; return its (st_dev, st_ino).

    ``bind`` does the bind itself (``sock.bind(path)``, or a ZMQ ``bind``). First a stale file
    is removed and a live socket or a non-socket refused (``clear_stale``). ``private``: the
    umask is 0177 during the bind, so the file is 0600 from its creation, with no window
    before a chmod (bind runs in this thread). ``mode``/``owner`` are applied after the bind
    and before the caller's ``listen()``, so nobody can connect with the wrong permissions.
    The identity lets the caller remove only its own file later (``vacuum``).
    """
    clear_stale(path)
    if private:
        old = os.umask(0o177)
        try:
            bind()
        finally:
            os.umask(old)
    else:
        bind()
    if mode is not None:
        os.chmod(path, mode)
    if owner is not None:
        try:
            os.chown(path, *owner)
        except OSError as exc:
            raise AddressError(f"chown-socket {path}: {exc.strerror}") from None
    st = os.lstat(path)
    return st.st_dev, st.st_ino
