"""How far a direct Kafka stream is behind its topics, from what planning saw.

Planning a batch reads every partition's watermarks anyway; `LagTracker`
keeps the newest of them with the stream's position, and a bounded history of
the log ends, so that the lag in records and in time is known without another
broker call (the web UI and the metrics read it from other threads: the
tracker publishes an immutable snapshot, replaced whole after each plan).

Lag in time: how long ago the end of the partition's log was where the stream
now is, i.e. roughly how old the oldest unread record is, judged from the log
ends seen by earlier plans (a lower bound when the history does not reach back
far enough).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Mapping

from ingest.input_stats import PartitionLag
from offsets import KafkaRanges

TP = tuple[str, int]


class LagTracker:
    """Fed by the scheduler's thread (`observe`), read by any thread (`snapshot`)."""

    def __init__(self, history: int = 600, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ends: dict[TP, deque[tuple[float, int]]] = {}
        self._history = history
        self._snapshot: tuple[PartitionLag, ...] = ()

    def observe(self, ranges: KafkaRanges, latest: Mapping[TP, int]) -> None:
        """After planning: the planned ranges and each partition's log end."""
        now = self._clock()
        out = []
        for r in ranges.ranges:
            tp = (r.topic, r.partition)
            end = max(latest.get(tp, r.until_offset), r.until_offset)
            ends = self._ends.setdefault(tp, deque(maxlen=self._history))
            if not ends or ends[-1][1] != end:
                ends.append((now, end))
            lag = end - r.until_offset
            out.append(PartitionLag(r.topic, r.partition, r.until_offset, end, lag, r.from_offset,
                                    self._age(ends, r.until_offset, now) if lag else 0.0, now))
        for tp in [tp for tp in self._ends if tp not in {(r.topic, r.partition) for r in ranges.ranges}]:
            del self._ends[tp]  # a partition that left the subscription
        self._snapshot = tuple(out)

    @staticmethod
    def _age(ends: deque[tuple[float, int]], offset: int, now: float) -> float:
        """Seconds since the log's end first reached past `offset`."""
        for seen_at, end in ends:
            if end > offset:
                return round(now - seen_at, 3)
        return 0.0

    def snapshot(self) -> tuple[PartitionLag, ...]:
        return self._snapshot
