"""Received blocks and their bookkeeping in one write-ahead log per stream.

With `write_ahead_log=True`, each receiver stream keeps a `WriteAheadLog`
under `<checkpoint>/receivers/<stream>/`. Its records are events, written
before they are applied (write-then-apply):

    BLOCK      a received block: its id, metadata (source positions) and records
    ALLOCATED  batch time -> the ids of the blocks it reads
    CLEANED    batch times whose blocks are processed and can go, with the
               blocks' metadata (their source positions outlive them)
    RELEASED   a batch time whose allocation never reached the intent log
               (crash in between): its blocks go back to the next batch

A BLOCK record is appended and fsynced before `store_batch` returns, so a
receiver that acknowledges its source after that call loses nothing. On
restart the log is replayed: blocks of committed batches are cleaned, blocks
of batches with an intent are re-run with exactly those blocks, the others go
to the next batch. Whole segments are deleted once every record in them
belongs to cleaned batches (logical clean-up, never wall-clock time).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Iterable

from ingest.errors import ConfigError
from receivers.block import Block, BlockInfo
from receivers.codec import decode_block, encode_block, records_payload
from receivers.tracker import ReceivedBlockTracker
from receivers.wal import RecordHandle, WriteAheadLog

log = logging.getLogger("receivers.block_log")

BLOCK, ALLOCATED, CLEANED, RELEASED = 1, 2, 3, 4


class BlockLog:
    """The store and the tracker of one receiver stream, durable."""

    def __init__(self, directory: str, stream: str, **wal_options: Any) -> None:
        if "://" in directory:
            raise ConfigError(f"write_ahead_log needs a checkpoint directory on local disk for now, not {directory}")
        self.stream = stream
        self.wal = WriteAheadLog(os.path.join(directory, "receivers", stream), name="blocks", **wal_options)
        self.tracker = ReceivedBlockTracker(journal=self)
        self._lock = threading.Lock()
        self._memory: dict[str, list[Any]] = {}
        self._alloc_handles: dict[int, RecordHandle] = {}
        self.recovered: list[BlockInfo] = []
        self.recovered_metadata: list[Any] = []
        """Source positions of the blocks found at start, cleaned or not."""

    # -- the store ----------------------------------------------------------------------

    def put(self, stream: str, block: Block) -> BlockInfo:
        payload = encode_block([block.block_id, dict(block.metadata) if block.metadata else None,
                                records_payload(block.records)])
        handle = self.wal.append(payload, BLOCK)  # durable (fsync) before we go on
        info = BlockInfo(block.block_id, stream, len(block.records), block.metadata, handle.to_dict())
        with self._lock:
            self._memory[block.block_id] = block.records
        return info

    def get(self, info: BlockInfo) -> list[Any] | None:
        with self._lock:
            records = self._memory.get(info.block_id)
        if records is not None:
            return records
        if info.wal_handle is None:
            return None
        block_id, _meta, records = decode_block(self.wal.read(RecordHandle.from_dict(dict(info.wal_handle))))
        if block_id != info.block_id:
            raise ConfigError(f"write-ahead log of stream {self.stream}: the record at {info.wal_handle} holds "
                              f"block {block_id}, not {info.block_id}; the log and the checkpoint do not match")
        return records

    def remove(self, infos: Iterable[BlockInfo]) -> None:
        with self._lock:
            for info in infos:
                self._memory.pop(info.block_id, None)

    # -- the tracker, durable: its operations, journalled through the hooks below --------

    def add_block(self, info: BlockInfo) -> None:
        self.tracker.add_block(info)

    def has_unallocated(self) -> bool:
        return self.tracker.has_unallocated()

    def allocate(self, time_ms: int) -> list[BlockInfo]:
        return self.tracker.allocate(time_ms)

    def cleanup(self, up_to_ms: int) -> list[BlockInfo]:
        return self.tracker.cleanup(up_to_ms)

    def mark_processed(self, time_ms: int) -> None:
        self.tracker.mark_processed(time_ms)

    def clean_up(self, retain_from_ms: int) -> list[BlockInfo]:
        return self.tracker.clean_up(retain_from_ms)

    # -- the tracker's journal (called under the tracker's lock, before it applies) --------

    def allocated(self, time_ms: int, blocks: list[BlockInfo]) -> None:
        handle = self.wal.append(json.dumps({"time": time_ms, "blocks": [b.block_id for b in blocks]}).encode(),
                                 ALLOCATED)
        self._alloc_handles[time_ms] = handle

    def cleaned(self, times: list[int], blocks: list[BlockInfo]) -> None:
        # The cleaned blocks' source positions stay in the log: a receiver that
        # had not yet acknowledged them when the process died resumes after them.
        event = {"times": times, "metadata": [dict(b.metadata) for b in blocks if b.metadata]}
        newest = self.wal.append(encode_block([event]), CLEANED)  # MessagePack: metadata is any plain data
        for t in times:
            self._alloc_handles.pop(t, None)
        self.remove(blocks)
        gone = {b.block_id for b in blocks}
        needed = [RecordHandle.from_dict(dict(b.wal_handle)) for b in self._tracked_unlocked()
                  if b.wal_handle is not None and b.block_id not in gone]
        needed.extend(self._alloc_handles.values())
        deleted = self.wal.delete_segments_before(min(needed) if needed else newest)
        if deleted:
            log.debug("stream %s: deleted %d write-ahead log segment(s)", self.stream, len(deleted))

    def _tracked_unlocked(self) -> list[BlockInfo]:
        # Called from inside the tracker's lock (journal hooks): read its state directly.
        tracker = self.tracker
        return list(tracker._unallocated) + [b for bs in tracker._allocated.values() for b in bs]

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, last_committed_ms: int | None, pending_times: Iterable[int]) -> None:
        """Replay the log after a restart (see the module's docstring)."""
        pending = set(pending_times)
        infos: dict[str, BlockInfo] = {}
        order: list[str] = []
        allocations: dict[int, list[str]] = {}
        handles: dict[int, RecordHandle] = {}
        cleaned_metadata: list[Any] = []
        for handle, kind, payload in self.wal.records():
            if kind == BLOCK:
                block_id, meta, records = decode_block(payload)
                infos[block_id] = BlockInfo(block_id, self.stream, len(records), meta, handle.to_dict())
                order.append(block_id)
            elif kind == ALLOCATED:
                event = json.loads(payload)
                allocations[int(event["time"])] = list(event["blocks"])
                handles[int(event["time"])] = handle
            elif kind == CLEANED:
                event = decode_block(payload)[0]
                cleaned_metadata.extend(event.get("metadata", ()))
                for t in event["times"]:
                    for block_id in allocations.pop(int(t), []):
                        infos.pop(block_id, None)
                    handles.pop(int(t), None)
            elif kind == RELEASED:
                t = int(json.loads(payload)["time"])
                allocations.pop(t, None)
                handles.pop(t, None)
        committed = [t for t in allocations if last_committed_ms is not None and t <= last_committed_ms
                     and t not in pending]
        released = [t for t in allocations if t not in committed and t not in pending]
        for t in released:
            self.wal.append(json.dumps({"time": t}).encode(), RELEASED)
            del allocations[t]
            handles.pop(t, None)
        allocated_ids = {i for ids in allocations.values() for i in ids}
        self._alloc_handles = handles
        self.tracker.restore([infos[i] for i in order if i in infos and i not in allocated_ids],
                             {t: [infos[i] for i in ids] for t, ids in allocations.items()})
        self.recovered = [infos[i] for i in order if i in infos]
        self.recovered_metadata = cleaned_metadata + [b.metadata for b in self.recovered if b.metadata]
        # Committed batches stay allocated: a checkpoint's state fallback may
        # replay them; the first clean-up after a commit forgets those behind
        # the retention point.
        log.info("stream %s: write-ahead log replayed: %d block(s) kept (%d for batches to re-run, %d for the "
                 "next batch)%s", self.stream, len(self.recovered),
                 sum(len(v) for t, v in allocations.items() if t in pending),
                 len(self.recovered) - len(allocated_ids),
                 f", {len(released)} allocation(s) released" if released else "")

    def close(self) -> None:
        with self._lock:
            self._memory.clear()
        self.wal.close()
