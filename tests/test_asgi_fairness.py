"""Accept fairness between ASGI workers (emperor/vassal/aio.py, ``Worker._over_share``): pure logic.

The worker reads its siblings' open connections from the scoreboard; these tests give it a
real scoreboard and a controlled clock, and check when it steps aside and when it stops
stepping aside (a sibling that does not take the connections must not starve the queue).
"""

from __future__ import annotations

import pytest

from emperor.vassal import aio
from emperor.vassal import scoreboard as sb


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def worker(board: sb.Scoreboard, conns: int, sibling_conns: int, accepting: bool = True) -> aio.Worker:
    w = aio.Worker.__new__(aio.Worker)  # only the fields _over_share reads: no process, no loop
    w.ints = board.ints
    w.slot = board.base(0)
    w.conns = conns
    w.deferred_at = 0.0
    w.fair_off_until = 0.0
    sibling = board.base(1)
    board.ints[sibling + sb.PID] = 4242
    board.ints[sibling + sb.CONNS] = sibling_conns
    board.ints[sibling + sb.ACCEPTING] = int(accepting)
    w.siblings = [sibling]
    return w


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(aio.time, "monotonic", c)
    return c


def test_steps_aside_only_when_clearly_ahead(clock: Clock) -> None:
    board = sb.Scoreboard(4)
    assert worker(board, conns=30, sibling_conns=0)._over_share()
    assert not worker(board, conns=2, sibling_conns=0)._over_share()  # within FAIR_SLACK
    assert not worker(board, conns=36, sibling_conns=30)._over_share()  # within a quarter more
    assert worker(board, conns=45, sibling_conns=30)._over_share()


def test_a_sibling_that_does_not_accept_is_not_waited_for(clock: Clock) -> None:
    board = sb.Scoreboard(4)
    assert not worker(board, conns=30, sibling_conns=0, accepting=False)._over_share()


def test_a_sibling_that_does_not_take_them_is_waited_for_a_bounded_time(clock: Clock) -> None:
    board = sb.Scoreboard(4)
    w = worker(board, conns=30, sibling_conns=0)  # the sibling's loop is blocked, say
    assert w._over_share()
    clock.now += aio.FAIR_MAX_WAIT / 2
    assert w._over_share()
    clock.now += aio.FAIR_MAX_WAIT
    assert not w._over_share()  # waited long enough: accept
    for _ in range(5):  # and keep accepting for FAIR_BACKOFF, not one connection per wait
        clock.now += aio.FAIR_MAX_WAIT
        assert not w._over_share()
    clock.now += aio.FAIR_BACKOFF
    assert w._over_share()  # the back-off is over: fair again


def test_deferral_restarts_once_the_sibling_caught_up(clock: Clock) -> None:
    board = sb.Scoreboard(4)
    w = worker(board, conns=30, sibling_conns=0)
    assert w._over_share()
    board.ints[board.base(1) + sb.CONNS] = 29  # the sibling took its share
    clock.now += aio.FAIR_MAX_WAIT * 2
    assert not w._over_share() and w.deferred_at == 0.0
    board.ints[board.base(1) + sb.CONNS] = 0
    assert w._over_share()  # a new wait, from now


class RecordingLoop:
    """What ``_native_accepted`` asks of the loop: a callback after uvloop's accept callback."""

    def __init__(self) -> None:
        self.soon: list[object] = []

    def call_soon(self, callback: object, *args: object) -> None:
        if callback != self.tick:  # the turn counter (``_tick``) runs after every native accept
            self.soon.append(callback)

    def tick(self) -> None:
        pass


def native_worker(board: sb.Scoreboard, cap: int, sibling_conns: int) -> aio.Worker:
    import asyncio

    w = worker(board, conns=0, sibling_conns=sibling_conns)
    w.loop = RecordingLoop()  # type: ignore[assignment]
    w.loop.tick = w._tick  # type: ignore[attr-defined]
    w.native_at, w.turns = 0.0, 2
    w.cap, w.in_flight, w.idle = cap, 0, asyncio.Event()
    w.codec_for = lambda lst: (asyncio.Protocol, None)  # type: ignore[method-assign]
    return w


def test_native_accept_stops_before_the_next_connection_at_the_cap(clock: Clock) -> None:
    """uvloop accepts one connection per loop turn and calls ``_native_accepted``: the
    connection that reaches asgi-concurrency makes the worker stop accepting before the next
    turn (``_hold_back``), not in uvloop's callback (that would close the pending connection)."""
    board = sb.Scoreboard(4)
    w = native_worker(board, cap=2, sibling_conns=100)
    w._native_accepted(None)  # type: ignore[arg-type]
    assert w.loop.soon == []  # type: ignore[attr-defined]
    w._native_accepted(None)  # type: ignore[arg-type]
    assert w.loop.soon == [w._hold_back] and w.in_flight == 2 and w.conns == 2  # type: ignore[attr-defined]


def test_native_accept_steps_aside_over_its_share_and_the_check_has_no_side_effect(clock: Clock) -> None:
    board = sb.Scoreboard(4)
    w = native_worker(board, cap=1000, sibling_conns=0)
    for _ in range(aio.FAIR_MIN - 1):
        w._native_accepted(None)  # type: ignore[arg-type]
    assert w.loop.soon == []  # type: ignore[attr-defined]  # a worker with few connections always takes them
    w._native_accepted(None)  # type: ignore[arg-type]
    assert w.loop.soon == [w._hold_back]  # type: ignore[attr-defined]
    assert w.deferred_at == 0.0  # over_share_now only looks; _hold_back starts the bounded wait
    w.fair_off_until = clock.now + 1  # a sibling that did not take them: no stepping aside
    w._native_accepted(None)  # type: ignore[arg-type]
    assert len(w.loop.soon) == 1  # type: ignore[attr-defined]


def test_native_accept_drains_in_python_after_a_long_turn_only(clock: Clock) -> None:
    """libuv accepts one connection per loop turn: a connection accepted in the very next turn
    after the previous one, more than LONG_TURN s later, waited behind a long turn, and the
    Python accept loop takes the rest of the queue (``_drain``). Later connections (the queue
    was empty in between) and quick turns keep uvloop's accept."""
    board = sb.Scoreboard(4)
    w = native_worker(board, cap=1000, sibling_conns=100)
    soon = w.loop.soon  # type: ignore[attr-defined]
    w._native_accepted(None)  # type: ignore[arg-type]
    w._tick()  # the next loop turn
    clock.now += aio.LONG_TURN / 2
    w._native_accepted(None)  # type: ignore[arg-type]
    assert soon == []  # a quick turn: uvloop keeps accepting
    w._tick()
    clock.now += aio.LONG_TURN * 2
    w._native_accepted(None)  # type: ignore[arg-type]
    assert soon == [w._drain]  # queued behind a long turn
    soon.clear()
    w._tick()
    w._tick()  # two turns with no connection: the queue was empty
    clock.now += aio.LONG_TURN * 5
    w._native_accepted(None)  # type: ignore[arg-type]
    assert soon == []
