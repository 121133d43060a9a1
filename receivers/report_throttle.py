"""Throttled reporting of a problem that can repeat without bound.

A source that sends garbage (say, binary data on a text socket) produces one
problem per line: reporting each would turn 100 MB of input into 100 MB of
log. `ReportThrottle` lets the first `first` occurrences of a window of
`interval` seconds through one by one; the rest are only counted, and the
count is reported once as a summary when the window has passed (or when the
caller flushes it, e.g. at the end of a connection). Totals are kept for
metrics; nothing is ever dropped from the counts.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ingest.errors import ConfigError


class ReportThrottle:
    def __init__(self, first: int = 10, interval: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise ConfigError(f"the number of problems reported one by one must be an integer >= 0, got {first!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
            raise ConfigError(f"the reporting interval must be a positive number of seconds, got {interval!r}")
        self.first = first
        self.interval = float(interval)
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start: float | None = None
        self._in_window = 0
        self._suppressed = 0
        self.total = 0
        self.suppressed_total = 0

    def occurred(self) -> bool:
        """Count one occurrence; True if it should be reported on its own."""
        with self._lock:
            now = self._clock()
            if self._window_start is None or now - self._window_start >= self.interval:
                if self._suppressed:  # the summary is due first: see summary_due()
                    self._suppressed += 1
                    self.suppressed_total += 1
                    self.total += 1
                    return False
                self._window_start, self._in_window = now, 0
            self.total += 1
            self._in_window += 1
            if self._in_window <= self.first:
                return True
            self._suppressed += 1
            self.suppressed_total += 1
            return False

    def summary_due(self) -> int:
        """The number of occurrences not reported one by one, if their window
        has passed (the count is then reset and a new window starts); else 0."""
        with self._lock:
            if not self._suppressed or self._window_start is None \
                    or self._clock() - self._window_start < self.interval:
                return 0
            return self._take()

    def flush(self) -> int:
        """The number of occurrences not yet reported, whatever the window; resets it."""
        with self._lock:
            return self._take()

    def _take(self) -> int:
        count, self._suppressed = self._suppressed, 0
        self._window_start, self._in_window = None, 0
        return count
