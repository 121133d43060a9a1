"""When a sink has already applied a batch: the one rule every exactly-once
sink uses (`SqlSink`, `DedupeSink`, `KafkaTransactionalSink`).

A sink stores, in the same transaction as a batch's results, what identifies
the data it wrote, under its identity (`name=`, or derived from what it writes
to; see `ingest.sinks.identity`). One sink instance is one output operation
(registering it twice is refused, and so are two sinks with one identity), so
the stored state is keyed by (sink, output operation). When a batch runs again
(a retry, or a re-run after a crash), the sink reads that state in the write's
transaction and decides:

1. The batch's evidence is every non-empty Kafka offset range and, for sinks
   that track them, every received block id and Flume sequence number. Empty
   ranges identify no data and are not evidence.
2. With evidence, positions decide, whatever the batch times: the batch is
   applied when the stored positions cover ALL of it (a stored next offset
   >= the range's end; a block id or sequence number stored), and new when they
   cover NONE of it (no stored offset, or one <= the range's start; ids not
   stored). Anything in between (a stored offset inside a range, or evidence
   partly covered) is refused with a `SourceError`: the store and the stream
   disagree, and writing or skipping would both be wrong.
3. Without evidence (only empty ranges, or an input without positions such as
   a queue stream), time decides: the batch is applied when the sink's stored
   batch time is not older than the batch's time. Such a batch can still have
   output (a window, state), which is why neither "always written" nor "never
   written" is right.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from ingest.errors import SourceError
from offsets import KafkaRanges, OffsetRange, ReceivedBlocks, SequenceNumbers

if TYPE_CHECKING:
    from ingest.batch import Batch

RangeKey = tuple[str, str, int]
"""(input name, topic, partition)."""


@dataclass(frozen=True)
class Evidence:
    """What identifies one batch's data for one sink."""

    ranges: tuple[tuple[str, OffsetRange], ...] = ()
    """(input name, range) for every NON-empty Kafka range."""
    items: tuple[str, ...] = ()
    """Stable keys of received blocks and Flume batches (see `item_keys`)."""

    def __bool__(self) -> bool:
        return bool(self.ranges or self.items)


@dataclass(frozen=True)
class Stored:
    """What a sink read back from its store for this batch, in the write's transaction."""

    batch_time: int | None = None
    """The newest batch time the sink stored, or None (none, or not known)."""
    offsets: Mapping[RangeKey, int] = field(default_factory=dict)
    """Stored next offset per (input, topic, partition)."""
    items: frozenset[str] = frozenset()
    """Those of the batch's item keys that are stored as applied."""


def evidence_of(batch: "Batch[Any]", *, items: bool = False) -> Evidence:
    """The batch's evidence; `items=True` adds block ids and sequence numbers.

    Reads the typed positions of `batch.positions` only (never an input's plan)."""
    ranges: list[tuple[str, OffsetRange]] = []
    keys: list[str] = []
    for input_name, position in batch.positions.items():
        if isinstance(position, KafkaRanges):
            ranges.extend((input_name, r) for r in position.ranges if r.count > 0)
        elif items:
            keys.extend(item_keys(position))
    return Evidence(tuple(ranges), tuple(keys))


def item_keys(position: Any) -> list[str]:
    """Keys of the received data a position holds: `block:<block id>` (block ids
    are unique per stream and name it) and `flume:<source>#<sequence>`."""
    if isinstance(position, ReceivedBlocks):
        return [f"block:{b.block_id}" for b in position.blocks]
    if isinstance(position, SequenceNumbers):
        return [f"flume:{b.source}#{b.sequence}" for b in position.batches]
    return []


def already_applied(sink: str, batch_time: int, evidence: Evidence, stored: Stored, *,
                    store: str = "the sink's store") -> bool:
    """The rule of this module. `store` names where `stored` came from, for errors."""
    if not evidence:
        return stored.batch_time is not None and stored.batch_time >= batch_time
    done: list[str] = []
    fresh: list[str] = []
    for input_name, r in evidence.ranges:
        at = stored.offsets.get((input_name, r.topic, r.partition))
        if at is not None and at >= r.until_offset:
            done.append(f"range {r}")
        elif at is None or at <= r.from_offset:
            fresh.append(f"range {r}")
        else:
            raise SourceError(
                f"sink {sink}: batch {batch_time}: the offset {at} stored in {store} for {r.topic}[{r.partition}] "
                f"(input {input_name}) falls inside the batch's range {r}: the store and the stream disagree. "
                "Start the stream from the sink's offsets (offset_store=sink), or give the sink a new name= "
                "to write from scratch")
    for key in evidence.items:
        (done if key in stored.items else fresh).append(key)
    if done and fresh:
        raise SourceError(
            f"sink {sink}: batch {batch_time} is applied in {store} for {done[0]} but not for {fresh[0]} "
            f"({len(done)} applied, {len(fresh)} new); its results cannot be split, so it is neither written nor "
            "skipped. Another writer uses this sink's identity (give each sink and job its own name=), or the "
            "batch was planned again differently after its plan was lost")
    return bool(done)


__all__ = ["Evidence", "RangeKey", "Stored", "already_applied", "evidence_of", "item_keys"]
