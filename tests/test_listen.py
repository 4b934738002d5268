"""``addresses.bind_unix``: the safety rules every Unix listener of ours is bound with.

The vassal's sockets, both stats servers and the control socket use it; their own tests
(test_vassal_bad_input, test_stats, test_control) check the rules through each server, this
file checks the helper itself with plain sockets in this process.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from emperor import addresses

pytestmark = pytest.mark.live  # real socket files (README: Tests)


def _unix() -> socket.socket:
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def test_private_is_0600_from_creation_and_returns_the_inode(sock_dir: Path) -> None:
    path = str(sock_dir / "s.sock")
    sock = _unix()
    modes = []

    def bind() -> None:
        sock.bind(path)
        modes.append(stat.S_IMODE(os.lstat(path).st_mode))  # before any chmod

    before = os.umask(0o022)
    os.umask(before)
    try:
        ident = addresses.bind_unix(path, bind, private=True)
        st = os.lstat(path)
        assert modes == [0o600] and ident == (st.st_dev, st.st_ino)
        after = os.umask(before)
        assert after == before  # the process umask is restored
    finally:
        sock.close()


def test_mode_applies_before_listen_without_private(sock_dir: Path) -> None:
    path = str(sock_dir / "m.sock")
    sock = _unix()
    try:
        addresses.bind_unix(path, lambda: sock.bind(path), mode=0o660)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o660
    finally:
        sock.close()


def test_stale_socket_is_replaced_live_one_and_file_refused(sock_dir: Path) -> None:
    stale = str(sock_dir / "stale.sock")
    dead = _unix()
    dead.bind(stale)
    dead.close()  # the file stays, nobody listens
    fresh = _unix()
    live = _unix()
    try:
        addresses.bind_unix(stale, lambda: fresh.bind(stale))
        fresh.listen(1)
        with pytest.raises(addresses.AddressError, match="in use by a live server"):
            addresses.bind_unix(stale, lambda: live.bind(stale))
        plain = sock_dir / "plain"
        plain.write_text("data")
        with pytest.raises(addresses.AddressError, match="not a socket"):
            addresses.bind_unix(str(plain), lambda: live.bind(str(plain)))
        assert plain.read_text() == "data"
    finally:
        fresh.close()
        live.close()
