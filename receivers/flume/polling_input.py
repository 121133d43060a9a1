"""The Flume pull stream's input: its positions are the agents' sequence numbers.

Every batch the pull receiver polls from an agent is stored as one block whose
metadata names the agent ("host:port") and the sequence number its pull sink
gave the batch. A batch of the stream therefore plans as `SequenceNumbers`:
per agent, the sequence numbers whose events it contains, each with its block
(and so its place in the write-ahead log). That plan is what the intent log
keeps; a batch re-run after a restart reads exactly those blocks again, and a
deduplicating sink recognizes the Flume batches by their sequence numbers.

The resume point stored with each commit is also a `SequenceNumbers`: the newest
batch committed from each agent (without blocks). The agents, not we, decide
what comes next (a batch not acked is delivered again under a new sequence
number), so a restart does not ask for anything from it; it says, in the
checkpoint and the logs, how far every agent's stream was taken.

Intents written by releases whose pull stream planned `ReceivedBlocks` are
still read and re-run as they were.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from ingest.errors import StateError
from offsets import BlockRef, Position, ReceivedBlocks, SequenceNumbers, SequenceRef
from receivers.input import ReceiverInputDStream

log = logging.getLogger("receivers.flume")


def sequence_ref_of(stream: str, block: BlockRef) -> SequenceRef:
    """The Flume batch a stored block holds, from the metadata the pull receiver
    stored with it; the block is kept without that metadata (the entry says it)."""
    meta = block.metadata or {}
    source, sequence = meta.get("source"), meta.get("sequence")
    if not isinstance(source, str) or not isinstance(sequence, str):
        raise StateError(f"stream {stream}: block {block.block_id} carries no Flume batch (metadata {meta!r}); "
                         "only the Flume pull receiver may store blocks into a flume_polling_stream")
    return SequenceRef(source, sequence, block.num_records, dataclasses.replace(block, metadata=None))


def newest_per_agent(*positions: Position | None) -> SequenceNumbers | None:
    """The newest batch of each agent over `positions` (oldest first), without
    blocks: a resume point. None when none of them names a Flume batch."""
    newest: dict[str, SequenceRef] = {}
    for position in positions:
        if isinstance(position, SequenceNumbers):
            for ref in position.batches:
                newest[ref.source] = SequenceRef(ref.source, ref.sequence, ref.events)
    return SequenceNumbers(tuple(newest[s] for s in sorted(newest))) if newest else None


class FlumePollingInputDStream(ReceiverInputDStream[Any]):
    """A `ReceiverInputDStream` of a `FlumePollingReceiver` whose positions are
    `SequenceNumbers`; see the module documentation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume: SequenceNumbers | None = None
        """The resume point of the newest committed batch (or restored)."""

    @property
    def resume(self) -> SequenceNumbers | None:
        """The newest batch committed from each agent, as far as this run knows."""
        return self._resume

    def position_of(self, blocks: Sequence[BlockRef]) -> SequenceNumbers:
        return SequenceNumbers(tuple(sequence_ref_of(self.name, b) for b in blocks))

    def blocks_of(self, position: Position) -> tuple[BlockRef, ...]:
        if isinstance(position, SequenceNumbers):
            missing = [f"{r.source}#{r.sequence}" for r in position.batches if r.block is None]
            if missing:
                raise StateError(f"stream {self.name}: the position names Flume batch(es) {', '.join(missing[:3])} "
                                 "without the blocks holding their events, so they cannot be read; a batch's plan "
                                 "names its blocks (a resume point does not and is never read as a batch)")
            return position.blocks
        if isinstance(position, ReceivedBlocks):  # an intent of a release that planned blocks
            return position.blocks
        return ()

    def next_position(self, position: Position) -> SequenceNumbers | None:
        return newest_per_agent(self._resume, position)

    def resume_point(self, committed: Position | None, pending: list[Position]) -> SequenceNumbers | None:
        return newest_per_agent(committed, *pending)

    def restore(self, position: Position) -> None:
        if isinstance(position, SequenceNumbers):
            self._resume = newest_per_agent(position)
            log.info("stream %s resumes after %s; the agents deliver again what was not acknowledged",
                     self.name, position.describe())

    def on_batch_committed(self, time_ms: int, position: Position) -> None:
        super().on_batch_committed(time_ms, position)
        self._resume = newest_per_agent(self._resume, position)
