"""What inputs report about their sources beyond positions: plain data read by
`ingest.metrics`, the log line of each batch and the lag warning.

Source packages fill these in (the direct Kafka stream its lag, receiver
streams their write-ahead log); the core reads them without importing them.
"""

from __future__ import annotations

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
