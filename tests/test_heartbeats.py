"""One timer for every tunnel's heartbeats (spore.heartbeats)."""

from __future__ import annotations

from twisted.internet.task import Clock

from spore.heartbeats import FRAME, TICKS, Heartbeats


def recorder(clock: Clock, times: list[float]):
    def write(data: bytes) -> None:
        assert data == FRAME
        times.append(round(clock.seconds(), 6))
    return write


def test_each_writer_beats_at_once_and_then_every_interval_to_within_a_tick():
    clock = Clock()
    beats = Heartbeats(clock, 0.5)
    times = {n: [] for n in range(7)}
    for n in range(7):  # added at scattered moments
        clock.advance(0.013 * n + 0.02)
        beats.add(n, recorder(clock, times[n]))
    for _ in range(200):
        clock.advance(0.01)
    for n, seen in times.items():
        gaps = [b - a for a, b in zip(seen, seen[1:])]
        assert len(seen) >= 4
        step = 0.01  # what the clock's steps add to each gap
        assert all(abs(gap - 0.5) <= step + 1e-9 for gap in gaps[1:]), (n, gaps)
        assert 0.5 - 0.5 / TICKS - step <= gaps[0] <= 0.5 + step, (n, gaps)


def test_a_late_timer_gives_every_writer_its_missed_beat_once():
    clock = Clock()
    beats = Heartbeats(clock, 0.5)
    times = {n: [] for n in range(TICKS)}
    for n in range(TICKS):
        beats.add(n, recorder(clock, times[n]))
        clock.advance(0.05)
    clock.advance(3.0)  # one late tick for six intervals' worth
    assert all(len(seen) in (2, 3) for seen in times.values()), times


def test_removed_writers_get_nothing_and_no_timer_runs_for_none():
    clock = Clock()
    beats = Heartbeats(clock, 0.5)
    kept, gone = [], []
    beats.add("kept", recorder(clock, kept))
    beats.add("gone", recorder(clock, gone))
    clock.pump([0.05] * 10 + [0.001])
    beats.remove("gone")
    beats.remove("gone")  # twice is harmless
    clock.pump([0.05] * 20)
    assert (len(kept), len(gone)) == (4, 2)
    beats.remove("kept")
    assert len(beats) == 0 and not clock.getDelayedCalls()
    beats.add("again", recorder(clock, kept))
    clock.pump([0.05] * 10)
    assert len(kept) == 6
