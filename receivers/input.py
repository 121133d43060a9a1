"""`ReceiverInputDStream`: the input stream of a receiver.

Planning batch `t` reserves every block received so far for it; its position
is `ReceivedBlocks` (the block references, plain data for the intent log), or
another kind that names the blocks (`position_of` / `blocks_of`).
With the write-ahead log, the allocation is journalled once the intent is
durable (`on_intent_written`), never before (see `receivers.block_log`). Materializing reads the
blocks' records from the block store. After the batch commits, the tracker
marks it processed (an acknowledgement); its blocks are removed later, by
`clean_up`, once the retention point has passed the batch.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

from ingest.dataset import Dataset, ListSource, Partition
from ingest.dstream import InputDStream
from ingest.errors import ConfigError
from ingest.executor import DaskExecutor
from ingest.input_stats import WalStats
from offsets import BlockRef, Position, ReceivedBlocks
from receivers.block import Block, BlockInfo, MemoryBlockStore
from receivers.block_log import BlockLog
from receivers.cluster_blocks import ClusterBlockStore
from receivers.cluster_supervisor import ClusterReceiverSupervisor
from receivers.shared_checkpoint import check_shared_checkpoint
from receivers.supervisor import ReceiverSupervisor
from receivers.worker_blocks import WorkerBlockSource
from receivers.tracker import ReceivedBlockTracker

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from receivers.receiver import Receiver

log = logging.getLogger("receivers.input")

T = TypeVar("T")


class ReceiverInputDStream(InputDStream[T]):
    def __init__(self, ssc: "StreamingContext", receiver: "Receiver[T]", *, max_rate: float | None = None,
                 name: str | None = None, kind: str = "receiver", max_buffered_records: int = 10_000,
                 max_queued_blocks: int = 10, max_unprocessed_records: int = 200_000, restart_delay: float = 2.0,
                 max_restart_delay: float = 30.0, max_consecutive_failures: int = 5,
                 replication: int | None = None) -> None:
        from receivers.receiver import Receiver

        if not isinstance(receiver, Receiver):
            raise ConfigError(f"receiver_stream() needs a receivers.Receiver, got {type(receiver).__name__}")
        if receiver._supervisor is not None:
            raise ConfigError(f"receiver {receiver.name} is already used by another stream")
        for label, value in (("max_buffered_records", max_buffered_records), ("max_queued_blocks", max_queued_blocks),
                             ("max_unprocessed_records", max_unprocessed_records)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        if replication is not None and (isinstance(replication, bool) or not isinstance(replication, int)
                                        or replication < 1):
            raise ConfigError(f"replication must be a positive number of workers that keep each block (or None: "
                              f"2 on a Dask cluster, 1 in one process), got {replication!r}")
        self.kind = kind
        super().__init__(ssc, name)
        self.receiver = receiver
        self.store: Any = MemoryBlockStore()
        self.tracker: Any = ReceivedBlockTracker()
        self.block_log: BlockLog | None = None
        options = dict(max_rate=max_rate, max_buffered_records=max_buffered_records,
                       max_queued_blocks=max_queued_blocks, restart_delay=restart_delay,
                       max_restart_delay=max_restart_delay, max_consecutive_failures=max_consecutive_failures)
        self.on_cluster = isinstance(ssc.executor, DaskExecutor)
        self.replication = (replication or 2) if self.on_cluster else 1
        self.blocks_lost = 0
        self.records_lost = 0
        self._lost_ids: set[str] = set()
        self.supervisor: Any
        self.worker_blocks: ClusterBlockStore | None = None
        if self.on_cluster:
            # The receiver runs on a Dask worker and its blocks stay in workers' memory;
            # only their references come here (receivers.cluster_supervisor).
            executor = ssc.executor
            self.worker_blocks = ClusterBlockStore(lambda: executor.client)
            self.supervisor = ClusterReceiverSupervisor(
                ssc, self.name, receiver, executor, replication=self.replication, on_block=self._track_remote,
                on_workers_left=self._count_lost, hosting=self._other_receivers_workers,
                recovered=self.recovered_metadata, options=options, wal=bool(ssc.write_ahead_log),
                max_unprocessed_records=max_unprocessed_records, counts=self.backpressure_counts)
        else:
            self.supervisor = ReceiverSupervisor(ssc, self.name, receiver, self._store_block, owner=self,
                                                 **options)
        self.records_received = 0
        self.max_unprocessed_records = max_unprocessed_records
        self._unprocessed = 0  # records stored and not yet in a committed batch
        self._peak_unprocessed = 0
        self._last_committed_ms: int | None = None
        self._progress = threading.Condition()

    def _store_block(self, block: Block) -> BlockInfo:
        # Backpressure from batch progress: while too many received records wait
        # for their batch to commit, storing (and so the receiver) waits too.
        with self._progress:
            while (self._unprocessed >= self.max_unprocessed_records and not self.supervisor.stopping
                   and self.ssc.state == "active"):
                self._progress.wait(0.1)
        if self.block_log is not None:
            # Append and track as one step: a clean-up in between would delete
            # the segment of a block that is durable (and maybe acknowledged)
            # but not yet tracked.
            info = self.block_log.store_block(self.name, block)
        else:
            info = self.store.put(self.name, block)
            self.tracker.add_block(info)
        self._count_stored(info.num_records)
        return info

    def _count_stored(self, records: int) -> None:
        with self._progress:
            self._unprocessed += records
            self.records_received += records
            self._peak_unprocessed = max(self._peak_unprocessed, self._unprocessed)

    @property
    def unprocessed_records(self) -> int:
        """Records stored and not yet in a committed batch (what
        `max_unprocessed_records` bounds)."""
        with self._progress:
            return self._unprocessed

    @property
    def peak_unprocessed_records(self) -> int:
        """The most `unprocessed_records` has been since the stream started:
        with backpressure working, at most `max_unprocessed_records` plus one block."""
        with self._progress:
            return self._peak_unprocessed

    def backpressure_counts(self) -> tuple[int, int]:
        """(records stored, records no longer unprocessed): both only grow, and
        their difference is `unprocessed_records`. A receiver on a Dask worker
        throttles itself on them (`receivers.worker_backpressure`)."""
        with self._progress:
            return self.records_received, self.records_received - self._unprocessed

    # on a Dask cluster -------------------------------------------------------

    def _track_remote(self, info: BlockInfo, records: list[Any] | None) -> None:
        """A block stored on workers: track its reference (the records stay
        there). With the write-ahead log on, its records came too, to be
        logged here, its one writer, before the receiver's store_batch returns."""
        if records is not None and self.block_log is not None:
            info = self.block_log.store_block(self.name, Block(info.block_id, records, info.metadata),
                                              info.locations)
        else:
            self.tracker.add_block(info)
        self._count_stored(info.num_records)

    def _other_receivers_workers(self) -> list[str]:
        return [w for inp in self.ssc._graph.inputs if inp is not self
                for w in [getattr(getattr(inp, "supervisor", None), "worker", None)] if isinstance(w, str)]

    def _count_lost(self, dead: str, live: set[str]) -> None:
        """Worker `dead` left: count the blocks not yet processed that no live
        worker holds any more (replication 1, or every copy's worker died)."""
        lost = [b for b in self.tracker.pending() if self._newly_lost(b, live)]
        if lost:
            self._lost(lost, f"Dask worker {dead} left the cluster")

    def _newly_lost(self, info: BlockInfo, live: set[str]) -> bool:
        return (bool(info.locations) and info.wal_handle is None and not live.intersection(info.locations)
                and info.block_id not in self._lost_ids)

    def _lost(self, blocks: list[BlockInfo], why: str) -> None:
        records = sum(b.num_records for b in blocks)
        with self._progress:
            self._lost_ids.update(b.block_id for b in blocks)
            self.blocks_lost += len(blocks)
            self.records_lost += records
        log.warning("stream %s: %s with %d received block(s) (%d records) that no live worker holds: they are "
                    "lost (replication=%d, write-ahead log %s). replication=2 keeps a copy on a second worker; "
                    "write_ahead_log=True keeps every block", self.name, why, len(blocks), records,
                    self.replication, "on" if self.reliable else "off")

    def health(self) -> dict[str, Any]:
        """Where the receiver runs and what a worker's death cost (plain data for the status)."""
        return {"worker": getattr(self.supervisor, "worker", None), "replication": self.replication,
                "blocks_lost": self.blocks_lost, "records_lost": self.records_lost}

    # lifecycle ---------------------------------------------------------------

    @property
    def reliable(self) -> bool:
        """True when received blocks go to the write-ahead log before store_batch returns."""
        return self.block_log is not None

    def _open_block_log(self) -> BlockLog | None:
        if self.block_log is None and self.ssc.write_ahead_log:
            assert self.ssc.checkpoint_dir is not None, "the context checks this at start()"
            # The checkpoint's own storage: a remote one carries its options (endpoint,
            # credentials), which the directory's URL does not.
            storage = getattr(self.ssc._log, "storage", None)
            self.block_log = BlockLog(storage if storage is not None else self.ssc.checkpoint_dir, self.name)
            self.store = self.tracker = self.block_log
            self._recovered = False
        return self.block_log

    def on_recovery(self, last_committed_ms: int | None, pending_times: list[int]) -> None:
        block_log = self._open_block_log()
        if block_log is not None:
            block_log.recover(last_committed_ms, pending_times)
            self._recovered = True

    def start(self) -> None:
        if self.on_cluster and self.ssc.write_ahead_log:
            check_shared_checkpoint(self.name, self.ssc.checkpoint_dir, self.supervisor.live_workers())
        block_log = self._open_block_log()
        if block_log is not None and not self._recovered:
            block_log.recover(None, [])
            self._recovered = True
        self.supervisor.start()

    def stop_input(self, graceful: bool, timeout: float | None) -> None:
        self.supervisor.stop(graceful, timeout)

    def records_lost_on_stop(self) -> int:
        """After the last batch: received records that no batch processed and
        that nothing keeps. With the write-ahead log they stay in it for the
        next start, so only records that never reached it count."""
        dropped = self.supervisor.records_dropped
        with self._progress:
            return dropped if self.reliable else dropped + self._unprocessed

    def has_unplanned_data(self) -> bool:
        return self.tracker.has_unallocated()

    def close(self) -> None:
        if self.worker_blocks is not None:  # the job is over: free the workers' copies
            self.worker_blocks.remove(self.tracker.tracked())
        self.store.close()

    def wal_stats(self) -> WalStats | None:
        if self.block_log is None:
            return None
        wal = self.block_log.wal
        segments, disk_bytes = wal.usage()  # lock-free: a monitor never waits behind an fsync
        return WalStats(wal.bytes_written, wal.records_written, wal.fsyncs, wal.fsync_latency.snapshot(),
                        disk_bytes, segments)

    def recovered_metadata(self) -> list[Any]:
        """Source positions already durable, for a reliable receiver to resume
        after: the metadata of the blocks found in the write-ahead log at start,
        and of those logged since and still tracked. The latter matter to a
        receiver started again during the job (after its Dask worker died, or
        after its own failure): a block it stored may be in the log while its
        source never got the acknowledgement, and is sent again."""
        if self.block_log is None:
            return []
        known = list(self.block_log.recovered_metadata)
        found = {b.block_id for b in self.block_log.recovered}
        return known + [b.metadata for b in self.block_log.tracked() if b.metadata and b.block_id not in found]

    # batch lifecycle -----------------------------------------------------------

    def position_of(self, blocks: Sequence[BlockRef]) -> Position:
        """The position of a batch of `blocks`: `ReceivedBlocks`. A receiver
        stream whose blocks are source batches with their own identity (the
        Flume pull stream's sequence numbers) returns its own kind, and reads
        it back with `blocks_of`."""
        return ReceivedBlocks(tuple(blocks))

    def blocks_of(self, position: Position) -> tuple[BlockRef, ...]:
        """The blocks a planned position names (also one read back from the
        intent log after a restart)."""
        return position.blocks if isinstance(position, ReceivedBlocks) else ()

    def plan(self, time_ms: int) -> Position:
        return self.position_of(self.tracker.reserve(time_ms))

    def on_intent_written(self, time_ms: int, position: Position) -> None:
        """Journal the allocation of the batch's blocks, now that its intent is
        durable. For a batch re-run after a crash between its intent and this
        call, the blocks the intent names are taken out of the unallocated ones."""
        if self.block_log is not None:
            self.block_log.confirm(time_ms, self.blocks_of(position))

    def materialize(self, time_ms: int, position: Position) -> Dataset[T]:
        parts = []
        lost = []
        blocks = self.blocks_of(position)
        live = self.supervisor.live_workers() if self.on_cluster and any(b.locations for b in blocks) else set()
        gone = [b for b in blocks if self._newly_lost(b, live)]
        if gone:
            self._lost(gone, f"batch {time_ms} found {len(gone)} block(s) on no live worker")
        for info in blocks:
            if info.locations:
                # Read where the block is: the task goes to a live location, or fetches from one.
                holders = tuple(w for w in info.locations if w in live)
                if holders:
                    parts.append(Partition(WorkerBlockSource(self.name, info.block_id, holders)))
                    continue
            records = self.store.get(info)
            if records is None:
                lost.append(info)
                continue
            parts.append(Partition(ListSource(records)))
        lost = [b for b in lost if not b.locations]  # those on dead workers were counted above
        if lost:
            log.warning("stream %s, batch %d: %d block(s) with %d records are gone (received before a restart "
                        "without write-ahead log: StreamingContext(write_ahead_log=True) keeps them); the batch "
                        "runs without them",
                        self.name, time_ms, len(lost), sum(i.num_records for i in lost))
        return Dataset(parts, self.ssc.executor)

    def on_batch_committed(self, time_ms: int, position: Position) -> None:
        """Acknowledge only: the tracker marks the batch processed and the
        backpressure count goes down. Its blocks stay until `clean_up`."""
        self.tracker.mark_processed(time_ms)
        self._last_committed_ms = time_ms
        done = sum(b.num_records for b in self.blocks_of(position))
        with self._progress:
            self._unprocessed = max(0, self._unprocessed - done)
            self._progress.notify_all()

    def clean_up(self, retain_from_ms: int) -> None:
        """Forget the blocks of batches before `retain_from_ms` (blocks not yet
        allocated to a batch are in flight and stay)."""
        if not self.reliable and self._last_committed_ms is not None:
            # Without the write-ahead log no block outlives the process, so none
            # can be replayed after a restart: keeping blocks of committed
            # batches in memory for a checkpoint's state fallback would only cost memory.
            retain_from_ms = max(retain_from_ms, self._last_committed_ms + 1)
        forgotten = self.tracker.clean_up(retain_from_ms)
        self.store.remove(forgotten)
        if self.worker_blocks is not None:
            self.worker_blocks.remove(forgotten)
