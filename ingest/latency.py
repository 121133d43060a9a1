"""A latency histogram in plain Python, for durations measured where no metrics
library is loaded (the WAL's fsyncs, checkpoint commits, batch delays).

Thread-safe: `observe` may run on any thread and `snapshot` returns frozen,
cumulative counts that `ingest.metrics` turns into a Prometheus histogram.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

# Seconds; from sub-millisecond fsyncs on fast disks to batches minutes late.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0)


@dataclass(frozen=True)
class LatencySnapshot:
    """Cumulative counts: `buckets[i]` is (upper bound in seconds, observations
    <= it); the last bound is +Inf and its count equals `count`."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"histogram buckets must be distinct and ascending, got {buckets!r}")
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[i] += 1
            self._sum += seconds

    def snapshot(self) -> LatencySnapshot:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, running = [], 0
        for bound, n in zip(self._bounds + (float("inf"),), counts):
            running += n
            cumulative.append((bound, running))
        return LatencySnapshot(tuple(cumulative), running, total)
