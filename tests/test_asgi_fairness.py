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
