"""The bad-request log limiter (issue #8 item 5), driven by a fake clock.

Before: the "once per peer" set was keyed by ip:port (every TCP probe logged a line) and
after 1024 entries a worker stopped logging bad requests for good.
"""

from __future__ import annotations

from emperor.vassal.peerlog import PeerLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: object) -> tuple[PeerLog, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return PeerLog(lines.append, clock=clock, **kw), lines, clock  # type: ignore[arg-type]


def test_first_of_each_kind_per_address_then_a_summary() -> None:
    pl, lines, clock = make(period=60)
    assert pl.first("10.0.0.5", "bad")
    assert not any(pl.first("10.0.0.5", "bad") for _ in range(299))  # 300 probes: one line
    assert pl.first("10.0.0.5", "other kind")  # another kind of trouble is news
    assert pl.first("10.0.0.6", "bad")  # another address too
    clock.now += 59
    pl.tick()
    assert lines == []
    clock.now += 1
    pl.tick()
    assert lines == ["299 more 'bad' from 10.0.0.5 suppressed in the last 60 s"]  # quiet windows: no line
    assert pl.windows == {}
    assert pl.first("10.0.0.5", "bad")  # a new window: logged again


def test_summary_is_emitted_by_the_next_event_too() -> None:
    pl, lines, clock = make(period=10)
    pl.first("a", "k")
    pl.first("a", "k")
    clock.now += 11
    assert pl.first("b", "k")
    assert lines == ["1 more 'k' from a suppressed in the last 11 s"]


def test_the_table_is_bounded_and_logging_never_stops_for_good() -> None:
    pl, lines, clock = make(period=60, max_keys=1024)
    assert all(pl.first(f"10.1.{i // 256}.{i % 256}", "bad") for i in range(1024))
    assert pl.first("10.9.9.9", "bad")  # the first overflow event is logged ...
    assert not any(pl.first(f"10.8.0.{i}", "bad") for i in range(200))  # ... the rest share its window
    assert len(pl.windows) == 1025
    clock.now += 60
    assert pl.first("10.7.7.7", "bad")  # windows expired: logging resumes
    assert "200 more 'any trouble' from other peers suppressed in the last 60 s" in lines
    assert len(pl.windows) == 1
    for _ in range(5):  # and keeps working, period after period
        clock.now += 61
        assert pl.first("10.7.7.7", "bad")
