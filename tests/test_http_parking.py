"""The master's parking lot (emperor/vassal/parking.py) with real sockets, no vassal: a parked
connection goes back to the workers when a request arrives, is closed when its client leaves
or when it stays idle too long, and is received close-on-exec."""

from __future__ import annotations

import fcntl
import selectors
import socket
import time
from collections.abc import Iterator

import pytest
from harness import wait_for

from emperor.vassal import parking
from emperor.vassal.parking import ParkingLot

Lot = tuple[ParkingLot, selectors.BaseSelector]


@pytest.fixture
def lot() -> Iterator[Lot]:
    sel = selectors.DefaultSelector()
    lot = ParkingLot(keepalive=0.5, sel=sel)
    try:
        yield lot, sel
    finally:
        lot.close()
        sel.close()


def pump(sel: selectors.BaseSelector, lot: ParkingLot, seconds: float = 0.05) -> None:
    for key, _ in sel.select(seconds):
        key.data()
    lot.tick()


def park(lot: ParkingLot, served: int = 3, index: int = 1) -> socket.socket:
    """A connected pair: the server end is parked (as a worker does), the client end returned."""
    client, server = socket.socketpair()
    parking.send_conn(lot.worker_end, server.fileno(), served, index)
    server.close()
    return client


def test_request_on_a_parked_connection_goes_back_to_the_workers(lot: Lot) -> None:
    lt, sel = lot
    client = park(lt)
    wait_for(lambda: (pump(sel, lt), len(lt.parked))[1] == 1, timeout=2)
    lt.worker_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        parking.recv_conn(lt.worker_end)  # nothing yet: no request arrived
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    got = None

    def handed_back() -> bool:
        nonlocal got
        pump(sel, lt)
        try:
            got = parking.recv_conn(lt.worker_end)
        except BlockingIOError:
            return False
        return got is not None

    wait_for(handed_back, timeout=2)
    assert got is not None
    fd, served, index = got
    assert (served, index) == (3, 1) and not lt.parked
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # a re-exec never carries it along
    with socket.socket(fileno=fd) as s:
        assert s.recv(100) == b"GET / HTTP/1.1\r\n\r\n"  # the request was peeked, not consumed
    client.close()


def test_client_leaving_and_idle_timeout_close(lot: Lot) -> None:
    lt, sel = lot
    leaving, staying = park(lt), park(lt)
    wait_for(lambda: (pump(sel, lt), len(lt.parked))[1] == 2, timeout=2)
    leaving.close()
    wait_for(lambda: (pump(sel, lt), len(lt.parked))[1] == 1, timeout=2)
    t0 = time.monotonic()
    staying.settimeout(3)
    wait_for(lambda: (pump(sel, lt), len(lt.parked))[1] == 0, timeout=3)
    assert staying.recv(10) == b""  # closed by the lot after keepalive (0.5 s)
    assert time.monotonic() - t0 >= 0.3
    staying.close()


def test_malformed_datagram_is_ignored(lot: Lot) -> None:
    lt, sel = lot
    lt.worker_end.send(b"junk")
    pump(sel, lt)
    assert not lt.parked and not lt.ready


def test_export_and_adopt_across_a_reload() -> None:
    """What a re-exec hands over: the same socketpair and every parked connection."""
    sel = selectors.DefaultSelector()
    old = ParkingLot(keepalive=5, sel=sel)
    client = park(old, served=7, index=2)
    wait_for(lambda: (pump(sel, old), len(old.parked))[1] == 1, timeout=2)
    raw = old.export()
    # the exec: the old image's objects vanish, the fds stay open
    for sock, _meta, _until in old.parked.values():
        sock.detach()
    old.master_end.detach()
    old.worker_end.detach()
    sel.close()
    sel2 = selectors.DefaultSelector()
    new = ParkingLot(keepalive=5, sel=sel2, inherited=raw)
    try:
        assert len(new.parked) == 1
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        new.worker_end.setblocking(False)
        got = None

        def handed_back() -> bool:
            nonlocal got
            pump(sel2, new)
            try:
                got = parking.recv_conn(new.worker_end)
            except BlockingIOError:
                return False
            return got is not None

        wait_for(handed_back, timeout=2)
        assert got is not None and got[1:] == (7, 2)
        socket.socket(fileno=got[0]).close()
    finally:
        new.close()
        sel2.close()
        client.close()
