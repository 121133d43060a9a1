"""Specification of `ReportThrottle`: the first N occurrences of a window are
reported one by one, the rest once as a count."""

from __future__ import annotations

import pytest

from ingest.errors import ConfigError
from receivers.report_throttle import ReportThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_n_occurrences_of_a_window_are_reported_and_the_rest_counted():
    throttle = ReportThrottle(3, 60.0, clock=Clock())
    assert [throttle.occurred() for _ in range(5)] == [True, True, True, False, False]
    assert (throttle.total, throttle.suppressed_total) == (5, 2)


def test_the_summary_is_due_once_the_window_passed_and_a_new_window_starts_after_it():
    clock = Clock()
    throttle = ReportThrottle(2, 60.0, clock=clock)
    for _ in range(6):
        throttle.occurred()
    clock.now += 59.0
    assert throttle.summary_due() == 0
    clock.now += 1.0
    assert throttle.summary_due() == 4
    assert throttle.summary_due() == 0
    assert [throttle.occurred() for _ in range(3)] == [True, True, False]
    assert (throttle.total, throttle.suppressed_total) == (9, 5)


def test_flush_returns_what_was_not_reported_whatever_the_window():
    throttle = ReportThrottle(1, 60.0, clock=Clock())
    for _ in range(4):
        throttle.occurred()
    assert throttle.flush() == 3
    assert throttle.flush() == 0
    assert throttle.occurred() is True  # a fresh window


@pytest.mark.parametrize("first,interval", [(-1, 60.0), (1.5, 60.0), (10, 0), (10, -3.0)])
def test_bad_settings_are_refused(first, interval):
    with pytest.raises(ConfigError):
        ReportThrottle(first, interval)
