"""`Batch`: what an output operation sees of one batch.

Besides the records, a batch carries its time and the typed position every
input read (`positions`, see `offsets.positions`), so that a sink can be idempotent (keyed by `batch.id`) or
transactional (writing `batch.offset_ranges` in the same transaction as the
results).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from ingest.dataset import Dataset
from offsets import OffsetRange, Position, offset_ranges_of

T = TypeVar("T")


@dataclass(frozen=True)
class Batch(Generic[T]):
    time: int
    """Batch time in milliseconds since the epoch (a multiple of the batch interval)."""
    data: Dataset[T]
    positions: Mapping[str, Position] = field(default_factory=dict)
    """What each input read in this batch, by input name (`KafkaRanges`,
    `ReceivedBlocks`, `QueueItems`, ...)."""
    attempt: int = 1
    """Runs of this batch in this process: 1 for the first, 2 and more for retries
    (`max_batch_retries`). A batch re-run after a restart starts at 1 again, with
    `recovered` set: it may have run, in part, before the crash."""
    recovered: bool = False
    """True when the batch is being re-run from the intent log after a restart."""

    @property
    def id(self) -> str:
        """A stable identifier of the batch, the same on every re-run."""
        return str(self.time)

    @property
    def timestamp(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.time / 1000.0, tz=_dt.timezone.utc)

    @property
    def offset_ranges(self) -> list[OffsetRange]:
        """Kafka offset ranges read by this batch, over all direct inputs."""
        return offset_ranges_of(self.positions.values())

    def collect(self) -> list[T]:
        return self.data.collect()

    def count(self) -> int:
        return self.data.count()

    def is_empty(self) -> bool:
        return self.data.is_empty()

    def take(self, n: int) -> list[T]:
        return self.data.take(n)

    def partitions(self) -> list[list[T]]:
        return self.data.glom()

    def foreach_partition(self, fn: Callable[[Iterator[T]], None]) -> None:
        """Run `fn` on every partition as a task of the context's executor."""
        self.data.foreach_partition(fn)
