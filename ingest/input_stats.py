"""What inputs report about their sources beyond positions: plain data read by
`ingest.metrics`, the log line of each batch and the lag warning.

Source packages fill these in (the direct Kafka stream its lag, receiver
streams their write-ahead log); the core reads them without importing them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ingest.latency import LatencySnapshot


@dataclass(frozen=True)
class PartitionLag:
    """One partition as the newest planned batch saw it: the batch reads up to
    `until_offset`, the partition ended at `latest_offset`, so `lag` records
    were left for later batches."""

    topic: str
    partition: int
    until_offset: int
    """Where the newest planned batch ends, so where the next one starts."""
    latest_offset: int
    """The end of the partition's log (high watermark) when that batch was planned."""
    lag: int
    """Records between the two: left for later batches."""
    from_offset: int | None = None
    """Where the newest planned batch starts."""
    lag_seconds: float = 0.0
    """How long ago the log's end was at `until_offset` (0 when nothing is left to read)."""
    observed_at: float | None = None
    """Wall-clock time (time.time()) of the watermarks."""

    @classmethod
    def of(cls, topic: str, partition: int, until_offset: int, latest_offset: int) -> "PartitionLag":
        return cls(topic, partition, until_offset, latest_offset, max(0, latest_offset - until_offset))


@dataclass(frozen=True)
class WalStats:
    """A receiver stream's write-ahead log, counted since this process opened it."""

    bytes_written: int
    records_written: int
    fsyncs: int
    fsync_latency: LatencySnapshot
    disk_bytes: int
    segments: int


class Counters:
    """Named counts of one input in this process, safe to add to from partition
    tasks on any thread (with a process pool, counts made in the workers stay
    there)."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = dict.fromkeys(names, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] = self.values.get(name, 0) + n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)
