"""Received blocks and their bookkeeping in one write-ahead log per stream.

With `write_ahead_log=True`, each receiver stream keeps a `WriteAheadLog`
under `<checkpoint>/receivers/<stream>/` (on HDFS and S3 checkpoints, an
`ObjectLog`: one object per record, see `receivers.object_log`). Its records are events, written
before they are applied (write-then-apply):

    BLOCK      a received block: its id, metadata (source positions) and records
    ALLOCATED  batch time -> the ids of the blocks it reads, written only
               once the batch's intent is durable (see below)
    PROCESSED  a batch time whose output committed (the source may be
               acknowledged; nothing is forgotten)
    CLEANED    batch times before the retention point, forgotten, with the
               blocks' metadata (their source positions outlive them)
    RELEASED   (older releases, still read) a batch time whose allocation
               never reached the intent log: its blocks went back to the next batch

Planning a batch reserves its blocks in memory (`reserve`); the scheduler
writes the batch's intent, which names the blocks, and only then is the
allocation journalled (`confirm`). So the log never holds an allocation whose
intent was not durable first, and a restart tells these cases apart:

- a crash before the intent: no ALLOCATED record, the blocks are unallocated
  and go to the next batch;
- a crash after the intent, before the ALLOCATED record: the batch is pending
  and its intent names its blocks; re-running it confirms exactly those;
- an ALLOCATED record of a batch with neither intent nor commit: the intent
  file was lost after the batch was planned (and its outputs may have run).
  Planning the batch again would read other blocks, so recovery refuses with
  a `CheckpointError` naming the missing intent file.

A block is stored with `store_block`, which appends its BLOCK record (fsynced)
and tracks it as one step, before `store_batch` returns: a receiver that
acknowledges its source after that call loses nothing, and no clean-up can
run between the write and the tracking.

On restart the log is replayed against the checkpoint: batches with an intent
are re-run with exactly their blocks; committed batches (the checkpoint says
so, or a PROCESSED record does) keep their blocks readable, for a state replay
after a checkpoint fallback, but are not re-run; any other allocation is
an error (above). Whole segments are deleted only by `clean_up`,
once every record in them belongs to forgotten batches (logical clean-up,
never wall-clock time).

Payloads are checked as they are decoded: a record with a valid checksum but
a malformed payload raises `CorruptRecordError` naming its file and offset.

Lock order: the tracker's lock, then the write-ahead log's lock or the
memory copies' lock (journal hooks run under the tracker's lock).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ingest.errors import CheckpointError, ConfigError, CorruptRecordError, StorageError
from ingest.storage import LocalStorage, Storage
from receivers.block import Block, BlockInfo
from receivers.codec import decode_block, encode_block, records_payload
from receivers.object_log import ObjectLog, check_options
from receivers.tracker import ReceivedBlockTracker, UnknownBlocksError
from receivers.wal import RecordHandle, WriteAheadLog, read_records
from receivers.wal import verify as verify_wal

log = logging.getLogger("receivers.block_log")

BLOCK, ALLOCATED, CLEANED, RELEASED, PROCESSED = 1, 2, 3, 4, 5
_KINDS = {BLOCK: "BLOCK", ALLOCATED: "ALLOCATED", CLEANED: "CLEANED", RELEASED: "RELEASED",
          PROCESSED: "PROCESSED"}


class BlockLog:
    """The store and the tracker of one receiver stream, durable."""

    def __init__(self, directory: "str | Storage", stream: str, **wal_options: Any) -> None:
        """`directory`: the checkpoint's directory (local disk: segment files) or
        its `Storage` (HDFS, S3: one object per record, see receivers.object_log)."""
        if isinstance(directory, Storage) and not isinstance(directory, LocalStorage):
            check_options(directory.url, wal_options)
            self.wal: Any = ObjectLog(directory, f"receivers/{stream}", name="blocks")
        else:
            if isinstance(directory, LocalStorage):
                directory = directory.root
            elif "://" in directory:
                raise ConfigError(f"the write-ahead log of {directory} needs its storage (and options): pass "
                                  "the checkpoint's Storage")
            self.wal = WriteAheadLog(os.path.join(directory, "receivers", stream), name="blocks", **wal_options)
        self.stream = stream
        self.checkpoint_dir = directory if isinstance(directory, str) else directory.url
        self.tracker = ReceivedBlockTracker(journal=self)
        self._memory_lock = threading.Lock()
        self._memory: dict[str, list[Any]] = {}
        self._alloc_handles: dict[int, RecordHandle] = {}
        self._decoder = _Decoder(stream, self.wal.path_of)
        self.recovered: list[BlockInfo] = []
        self.recovered_metadata: list[Any] = []
        """Source positions of the blocks found at start, cleaned or not."""

    # -- the store ----------------------------------------------------------------------

    def store_block(self, stream: str, block: Block, locations: tuple[str, ...] = ()) -> BlockInfo:
        """Append the block (fsynced) and track it, as one step. Returns its
        reference once both are done. `locations`: the Dask workers holding the
        block (then no copy is kept in this process's memory)."""
        if not locations:
            return self.tracker.add(lambda: self.put(stream, block))
        return self.tracker.add(lambda: self.put(stream, block, locations))

    def put(self, stream: str, block: Block, locations: tuple[str, ...] = ()) -> BlockInfo:
        """Append the block without tracking it: use `store_block`, unless the
        caller tracks it under the tracker's lock itself."""
        payload = encode_block([block.block_id, dict(block.metadata) if block.metadata else None,
                                records_payload(block.records)])
        handle = self.wal.append(payload, BLOCK)  # durable (fsync) before we go on
        info = BlockInfo(block.block_id, stream, len(block.records), block.metadata, handle.to_dict(), locations)
        if not locations:
            with self._memory_lock:
                self._memory[block.block_id] = block.records
        return info

    def get(self, info: BlockInfo) -> list[Any] | None:
        with self._memory_lock:
            records = self._memory.get(info.block_id)
        if records is not None:
            return records
        if info.wal_handle is None:
            return None
        handle = RecordHandle.from_dict(dict(info.wal_handle))
        block_id, _meta, records = self._decoder.block(handle, self.wal.read(handle))
        if block_id != info.block_id:
            raise ConfigError(f"write-ahead log of stream {self.stream}: the record at {info.wal_handle} holds "
                              f"block {block_id}, not {info.block_id}; the log and the checkpoint do not match")
        return records

    def remove(self, infos: Iterable[BlockInfo]) -> None:
        """Drop the memory copies of blocks (their records stay in the log)."""
        with self._memory_lock:
            for info in infos:
                self._memory.pop(info.block_id, None)

    # -- the tracker, durable: its operations, journalled through the hooks below --------

    def add_block(self, info: BlockInfo) -> None:
        self.tracker.add_block(info)

    def has_unallocated(self) -> bool:
        return self.tracker.has_unallocated()

    def pending(self) -> list[BlockInfo]:
        return self.tracker.pending()

    def tracked(self) -> list[BlockInfo]:
        return self.tracker.tracked()

    def reserve(self, time_ms: int) -> list[BlockInfo]:
        """Give every unallocated block to batch `time_ms`, in memory only: the
        allocation is journalled by `confirm`, once the batch's intent is durable."""
        return self.tracker.reserve(time_ms)

    def confirm(self, time_ms: int, blocks: Iterable[BlockInfo]) -> list[BlockInfo]:
        """The intent of batch `time_ms`, which names `blocks`, is durable:
        journal the allocation (see the module's docstring). Raises
        `CorruptRecordError` when the intent names blocks this log does not
        hold unallocated."""
        try:
            return self.tracker.confirm(time_ms, [b.block_id for b in blocks])
        except UnknownBlocksError as exc:
            intent = self._intent_path(time_ms)
            raise CorruptRecordError(
                f"write-ahead log of stream {self.stream}: the intent {intent} of batch {time_ms} names "
                f"block(s) {', '.join(exc.block_ids[:5])}{' ...' if len(exc.block_ids) > 5 else ''}, which "
                f"the log in {self.wal.directory} does not hold for a new batch (lost, or allocated to "
                "another batch): the intent and the log do not match. Restore the log or the intent "
                "from a backup, or start from a new checkpoint directory.", path=intent, offset=None) from None

    def allocate(self, time_ms: int) -> list[BlockInfo]:
        """`reserve` and `confirm` in one step, for callers without an intent log."""
        return self.tracker.allocate(time_ms)

    def _intent_path(self, time_ms: int) -> str:
        return _intent_path(self.checkpoint_dir, time_ms)

    def mark_processed(self, time_ms: int) -> list[BlockInfo]:
        """Journal that batch `time_ms`'s output committed: its source may be
        acknowledged. Nothing is deleted. Returns the batch's blocks the first
        time, [] after."""
        return self.tracker.mark_processed(time_ms)

    def clean_up(self, retain_from_ms: int) -> list[BlockInfo]:
        """Forget the batches with time < `retain_from_ms` (journalled), drop
        their memory copies and delete the segments whose every record belongs
        to forgotten batches. Returns the forgotten blocks."""
        return self.tracker.clean_up(retain_from_ms)

    def cleanup(self, up_to_ms: int) -> list[BlockInfo]:
        """`clean_up(up_to_ms + 1)`, for callers that acknowledge and forget in one step."""
        return self.tracker.cleanup(up_to_ms)

    # -- the tracker's journal (called under the tracker's lock, before it applies) --------

    def allocated(self, time_ms: int, blocks: list[BlockInfo]) -> None:
        handle = self.wal.append(json.dumps({"time": time_ms, "blocks": [b.block_id for b in blocks]}).encode(),
                                 ALLOCATED)
        self._alloc_handles[time_ms] = handle

    def processed(self, time_ms: int) -> None:
        self.wal.append(json.dumps({"time": time_ms}).encode(), PROCESSED)

    def cleaned(self, times: list[int], blocks: list[BlockInfo]) -> None:
        # The cleaned blocks' source positions stay in the log: a receiver that
        # had not yet acknowledged them when the process died resumes after them.
        event = {"times": times, "metadata": [dict(b.metadata) for b in blocks if b.metadata]}
        newest = self.wal.append(encode_block([event]), CLEANED)  # MessagePack: metadata is any plain data
        for t in times:
            self._alloc_handles.pop(t, None)
        self.remove(blocks)
        # Every record a kept batch or an unallocated block needs; the segments
        # before the oldest of them hold only records of forgotten batches. A
        # block stored but not yet tracked cannot exist here: storing holds the
        # tracker's lock, which this hook runs under.
        gone = {b.block_id for b in blocks}
        unallocated, allocated = self.tracker._state_unlocked()
        kept = unallocated + [b for t, bs in allocated.items() if t not in times for b in bs]
        needed = [RecordHandle.from_dict(dict(b.wal_handle)) for b in kept
                  if b.wal_handle is not None and b.block_id not in gone]
        needed.extend(self._alloc_handles.values())
        deleted = self.wal.delete_segments_before(min(needed) if needed else newest)
        if deleted:
            log.debug("stream %s: deleted %d write-ahead log segment(s)", self.stream, len(deleted))

    # -- recovery ----------------------------------------------------------------------------

    def recover(self, last_committed_ms: int | None, pending_times: Iterable[int]) -> None:
        """Replay the log after a restart (see the module's docstring)."""
        pending = set(pending_times)
        replayed = _replay(self._decoder, self.wal.records())
        infos, order, allocations = replayed.infos, replayed.order, replayed.allocations
        handles, processed, cleaned_metadata = replayed.handles, replayed.processed, replayed.cleaned_metadata
        committed = _committed(replayed, last_committed_ms, pending)
        lost = _lost_intent(replayed, committed, pending, self.stream, self.wal.directory, self.checkpoint_dir)
        if lost is not None:
            raise lost
        allocated_ids = {i for ids in allocations.values() for i in ids}
        self._alloc_handles = handles
        # Committed batches keep their blocks (a state replay after a checkpoint
        # fallback reads them) and are marked processed, not re-run; clean_up()
        # forgets them once the retention point passes them.
        self.tracker.restore([infos[i] for i in order if i in infos and i not in allocated_ids],
                             {t: [infos[i] for i in ids] for t, ids in allocations.items()},
                             processed=committed)
        self.recovered = [infos[i] for i in order if i in infos]
        self.recovered_metadata = cleaned_metadata + [b.metadata for b in self.recovered if b.metadata]
        log.info("stream %s: write-ahead log replayed: %d block(s) kept (%d for batches to re-run, %d of committed "
                 "batches, %d for the next batch)", self.stream, len(self.recovered),
                 sum(len(v) for t, v in allocations.items() if t in pending),
                 sum(len(v) for t, v in allocations.items() if t in committed),
                 len(self.recovered) - len(allocated_ids))

    def close(self) -> None:
        with self._memory_lock:
            self._memory.clear()
        self.wal.close()


def verify_storage(storage: Storage) -> list[str]:
    """`verify` for a checkpoint on HDFS or S3, whose logs are one object per
    record (`receivers.object_log`): every record's framing and checksum, then
    a replay of each stream's events. Reads only. Returns the problems, each
    naming the object."""
    problems = []
    for stream in storage.list("receivers"):
        wal = ObjectLog(storage, f"receivers/{stream}", name="blocks")
        try:
            _replay(_Decoder(stream, wal.path_of), wal.records())
        except StorageError as exc:
            problems.append(str(exc))
        finally:
            wal.close()
    return problems


def _intent_path(checkpoint_dir: str, time_ms: int) -> str:
    """The checkpoint's intent file of a batch (ingest.checkpoint's layout)."""
    return os.path.join(checkpoint_dir, "offsets", f"{time_ms:020d}")


def _committed(r: "_Replayed", last_committed_ms: int | None, pending: set[int]) -> set[int]:
    """The allocated batches that committed: the checkpoint says so, or a PROCESSED record does."""
    return {t for t in r.allocations if t not in pending
            and (t in r.processed or (last_committed_ms is not None and t <= last_committed_ms))}


def _lost_intent(r: "_Replayed", committed: set[int], pending: set[int], stream: str, wal_dir: str,
                 checkpoint_dir: str) -> CheckpointError | None:
    """The error for the oldest allocation whose batch has neither intent nor
    commit (its intent was lost: see the module's docstring), or None."""
    lost = sorted(t for t in r.allocations if t not in committed and t not in pending)
    if not lost:
        return None
    t = lost[0]
    ids, handle = r.allocations[t], r.handles[t]
    segment = os.path.join(wal_dir, f"blocks-{handle.segment:020d}.wal")
    return CheckpointError(
        f"write-ahead log of stream {stream}: batch {t} was planned with block(s) "
        f"{', '.join(ids[:5]) or '(none)'}{' ...' if len(ids) > 5 else ''} "
        f"(ALLOCATED record in {segment} at byte offset {handle.offset}), "
        f"but its intent file {_intent_path(checkpoint_dir, t)} is missing and the batch has no commit. An "
        "allocation is journalled only after its intent is durable, so the intent was lost (deleted "
        "or moved) after the batch was planned, and its outputs may have run: planning it again "
        "would read different blocks. Restore the intent file from a backup; or, to accept that "
        f"batch {t} is planned again with other data, move {wal_dir} aside (its "
        "unprocessed blocks are then lost) or start from a new checkpoint directory.")


def verify(directory: str, *, checkpoint: tuple[int | None, Iterable[int]] | None = None) -> list[str]:
    """Check the block logs of every receiver stream under `directory` (a
    checkpoint directory, its ``receivers`` directory or one stream's) without
    changing anything: every segment, record and the bounds
    (`receivers.wal.verify`), then a replay of the events, which finds what a
    restart would refuse: records with a valid checksum but a malformed
    payload, an allocation naming a block whose record is gone. With
    `checkpoint` = (last committed batch, batches with an intent and no
    commit), as the checkpoint's recovery finds them, also an allocation whose
    batch has neither intent nor commit (a lost intent), with the stream's
    directory taken as ``<checkpoint>/receivers/<stream>``. Returns the
    problems, each naming the file and offset; empty when healthy."""
    directory = os.path.abspath(directory)
    problems = verify_wal(directory)
    if problems:
        return problems
    for current, subdirectories, files in os.walk(directory):
        subdirectories.sort()
        if "blocks.bounds" not in files and not any(f.startswith("blocks-") and f.endswith(".wal") for f in files):
            continue
        decoder = _Decoder(os.path.basename(current),
                           lambda h, d=current: os.path.join(d, f"blocks-{h.segment:020d}.wal"))
        try:
            replayed = _replay(decoder, read_records(current, "blocks"))
        except StorageError as exc:
            problems.append(str(exc))
            continue
        if checkpoint is not None:
            last_committed_ms, pending = checkpoint[0], set(checkpoint[1])
            lost = _lost_intent(replayed, _committed(replayed, last_committed_ms, pending), pending,
                                os.path.basename(current), current, os.path.dirname(os.path.dirname(current)))
            if lost is not None:
                problems.append(str(lost))
    return problems


@dataclass
class _Replayed:
    """The state the events of a block log describe."""

    infos: dict[str, BlockInfo] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    allocations: dict[int, list[str]] = field(default_factory=dict)
    handles: dict[int, RecordHandle] = field(default_factory=dict)
    processed: set[int] = field(default_factory=set)
    cleaned_metadata: list[Any] = field(default_factory=list)


def _replay(decoder: "_Decoder", records: Iterable[tuple[RecordHandle, int, bytes]]) -> _Replayed:
    """Apply the events in write order; raises `CorruptRecordError` naming the
    record for a malformed one, or for an allocation whose blocks are gone."""
    r = _Replayed()
    for handle, kind, payload in records:
        if kind == BLOCK:
            block_id, meta, records_ = decoder.block(handle, payload)
            r.infos[block_id] = BlockInfo(block_id, decoder.stream, len(records_), meta, handle.to_dict())
            r.order.append(block_id)
        elif kind == ALLOCATED:
            t, ids = decoder.allocated(handle, payload)
            r.allocations[t] = ids
            r.handles[t] = handle
            r.processed.discard(t)
        elif kind == PROCESSED:
            r.processed.add(decoder.time(handle, payload, PROCESSED))
        elif kind == CLEANED:
            times, metadata = decoder.cleaned(handle, payload)
            r.cleaned_metadata.extend(metadata)
            for t in times:
                for block_id in r.allocations.pop(t, []):
                    r.infos.pop(block_id, None)
                r.handles.pop(t, None)
                r.processed.discard(t)
        elif kind == RELEASED:
            t = decoder.time(handle, payload, RELEASED)
            r.allocations.pop(t, None)
            r.handles.pop(t, None)
            r.processed.discard(t)
        else:
            raise decoder.corrupt(handle, f"unknown record type {kind}")
    for t, ids in r.allocations.items():
        for block_id in ids:
            if block_id not in r.infos:
                raise decoder.corrupt(r.handles[t], f"the allocation of batch {t} names block {block_id}, whose "
                                                    "BLOCK record is not in the log (deleted or lost)")
    return r


class _Decoder:
    """Decodes the payloads of one stream's block log, checked: a valid
    checksum does not make a payload well-formed."""

    def __init__(self, stream: str, path_of: Callable[[RecordHandle], str]) -> None:
        self.stream = stream
        self.path_of = path_of

    def corrupt(self, handle: RecordHandle, reason: str) -> CorruptRecordError:
        path = self.path_of(handle)
        return CorruptRecordError(
            f"write-ahead log of stream {self.stream}: record in {path} at byte offset {handle.offset}: {reason}. "
            "Its checksum matched, so it was written like this (by another release, or crafted): move the log "
            "aside.", path=path, offset=handle.offset)

    def block(self, handle: RecordHandle, payload: bytes) -> tuple[str, Mapping[str, Any] | None, list[Any]]:
        value = decode_block(payload, path=self.path_of(handle), offset=handle.offset)
        if not (isinstance(value, list) and len(value) == 3):
            raise self.corrupt(handle, "a BLOCK record must hold [block id, metadata, records]")
        block_id, meta, records = value
        if not isinstance(block_id, str) or not isinstance(meta, (dict, type(None))) \
                or not isinstance(records, list):
            raise self.corrupt(handle, f"a BLOCK record holds {type(block_id).__name__}, {type(meta).__name__}, "
                                       f"{type(records).__name__}; expected str, dict or None, list")
        return block_id, meta, records

    def _json(self, handle: RecordHandle, payload: bytes, kind: int) -> dict[str, Any]:
        try:
            value = json.loads(payload)
        except ValueError as exc:
            raise self.corrupt(handle, f"{_KINDS[kind]} record is not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise self.corrupt(handle, f"{_KINDS[kind]} record is not a JSON object")
        return value

    def _time(self, handle: RecordHandle, value: Any, kind: int) -> int:
        if type(value) is not int:
            raise self.corrupt(handle, f"{_KINDS[kind]} record: batch time {value!r} is not an integer")
        return value

    def time(self, handle: RecordHandle, payload: bytes, kind: int) -> int:
        return self._time(handle, self._json(handle, payload, kind).get("time"), kind)

    def allocated(self, handle: RecordHandle, payload: bytes) -> tuple[int, list[str]]:
        event = self._json(handle, payload, ALLOCATED)
        t = self._time(handle, event.get("time"), ALLOCATED)
        ids = event.get("blocks")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise self.corrupt(handle, f"ALLOCATED record: 'blocks' is {ids!r:.80}, not a list of block ids")
        return t, ids

    def cleaned(self, handle: RecordHandle, payload: bytes) -> tuple[list[int], list[Any]]:
        value = decode_block(payload, path=self.path_of(handle), offset=handle.offset)
        event = value[0] if isinstance(value, list) and len(value) == 1 else None
        if not isinstance(event, dict):
            raise self.corrupt(handle, "a CLEANED record must hold [{'times': [...], 'metadata': [...]}]")
        times, metadata = event.get("times"), event.get("metadata", [])
        if not isinstance(times, list) or not isinstance(metadata, list):
            raise self.corrupt(handle, "CLEANED record: 'times' and 'metadata' must be lists")
        return [self._time(handle, t, CLEANED) for t in times], metadata
