"""Specification of `direct.lag.LagTracker`: the direct stream's lag per
partition, in records and in time, from the log ends planning saw."""

from __future__ import annotations

from direct.lag import LagTracker
from offsets import KafkaRanges, OffsetRange


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plan(tracker: LagTracker, ranges: list[tuple[int, int, int]], ends: dict[int, int]) -> None:
    tracker.observe(KafkaRanges(tuple(OffsetRange("t", p, a, b) for p, a, b in ranges)),
                    {("t", p): e for p, e in ends.items()})


def test_nothing_is_known_before_the_first_plan():
    assert LagTracker().snapshot() == ()


def test_a_stream_that_keeps_up_has_no_lag():
    tracker = LagTracker(clock=Clock())
    plan(tracker, [(0, 0, 10)], {0: 10})
    (p,) = tracker.snapshot()
    assert (p.from_offset, p.until_offset, p.latest_offset, p.lag, p.lag_seconds) == (0, 10, 10, 0, 0.0)


def test_the_lag_in_time_is_how_long_ago_the_log_end_passed_the_position():
    clock = Clock()
    tracker = LagTracker(clock=clock)
    plan(tracker, [(0, 0, 10)], {0: 50})       # t=1000: the log ends at 50, the stream reads to 10
    clock.now += 1
    plan(tracker, [(0, 10, 20)], {0: 90})      # t=1001: the log ends at 90
    clock.now += 1
    plan(tracker, [(0, 20, 30)], {0: 130})     # t=1002
    (p,) = tracker.snapshot()
    assert p.lag == 100
    assert p.lag_seconds == 2.0                 # offset 30 was in the log already at t=1000
    clock.now += 1
    plan(tracker, [(0, 30, 100)], {0: 140})    # t=1003: offset 100 arrived between t=1001 and t=1002
    (p,) = tracker.snapshot()
    assert (p.lag, p.lag_seconds, p.observed_at) == (40, 1.0, 1003.0)


def test_partitions_that_leave_the_subscription_are_forgotten():
    tracker = LagTracker(clock=Clock())
    plan(tracker, [(0, 0, 1), (1, 0, 1)], {0: 5, 1: 5})
    plan(tracker, [(1, 1, 2)], {1: 5})
    assert [p.partition for p in tracker.snapshot()] == [1]
