"""The receivers' write-ahead log on storage without append (S3) or where an
append is costly and not atomic (HDFS over WebHDFS): one object per record.

`ObjectLog` offers what `receivers.block_log.BlockLog` uses of a
`receivers.wal.WriteAheadLog` (append, read, records, delete_segments_before,
path_of, close) over an `ingest.storage.Storage`:

- every append is one object, `<dir>/blocks-<seq:020d>.rec`, written with
  `Storage.write_new` (a PUT with If-None-Match on S3, a rename without
  overwrite on HDFS): complete or absent, never torn, and never overwritten
  (a second writer of the directory fails instead of replacing records);
- its content is the record exactly as in a local segment (magic, version,
  type, length, CRC32C, payload), checked when read: a damaged object is a
  `CorruptRecordError` naming it;
- a handle is (seq, 0, payload length): the object is the segment;
- clean-up deletes the objects before the oldest record still needed.

Durable when `append` returns: the object is stored (S3 acknowledges a PUT once
it is durable; HDFS once the file is closed on its DataNodes).

Cost: one PUT (S3) or CREATE+RENAME (HDFS) per received block and per tracker
event (allocation, processed batch, clean-up), instead of an fsync'd append to
a local segment: ~20 ms per block on a local S3 server and ~200 ms on a local
MiniDFSCluster (bench/storage.py's write_new), plus the network's round trip on
real clusters. Keep the block interval well above that. S3 also bills per
request: a 200 ms block interval is 5 PUTs/s per receiver.
"""

from __future__ import annotations

import threading
from typing import Iterator, Sequence

from ingest.errors import ConfigError, CorruptRecordError, StateError, StorageError
from ingest.storage import Storage
from receivers.wal import (
    RECORD_HEADER_SIZE,
    RecordHandle,
    _BadRecord,
    _encode_records,
    _parse_record_header,
    _record_crc,
)

DEFAULT_MAX_RECORD_BYTES = 256 * 1024 * 1024
SUFFIX = ".rec"


class ObjectLog:
    """A write-ahead log of one object per record under `directory` of `storage`."""

    def __init__(self, storage: Storage, directory: str, name: str = "blocks",
                 max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
        self.storage = storage
        self.directory = directory.strip("/")
        self.name = name
        self.max_record_bytes = max_record_bytes
        self._lock = threading.Lock()
        self._closed = False
        self._seqs: list[int] = sorted(s for s in (self._seq_of(n) for n in storage.list(self.directory))
                                       if s is not None)
        self._next = (self._seqs[-1] + 1) if self._seqs else 1

    def _object(self, seq: int) -> str:
        return f"{self.directory}/{self.name}-{seq:020d}{SUFFIX}"

    def _seq_of(self, filename: str) -> int | None:
        prefix = f"{self.name}-"
        if filename.startswith(prefix) and filename.endswith(SUFFIX):
            digits = filename[len(prefix):-len(SUFFIX)]
            return int(digits) if digits.isdigit() else None
        return None

    def path_of(self, handle: RecordHandle) -> str:
        return self.storage.describe(self._object(handle.segment))

    def segments(self) -> list[str]:
        with self._lock:
            return [self.storage.describe(self._object(s)) for s in self._seqs]

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"write-ahead log {self.storage.describe(self.directory)} is closed")

    # -- writing

    def append(self, payload: bytes, record_type: int = 1) -> RecordHandle:
        buffers, lengths = _encode_records([payload], record_type, self.max_record_bytes,
                                           self.storage.describe(self.directory))
        with self._lock:  # one writer: sequence numbers follow the order of appends
            self._check_open()
            seq = self._next
            try:
                self.storage.write_new(self._object(seq), b"".join(buffers))
            except FileExistsError:
                raise StorageError(
                    f"{self.storage.describe(self._object(seq))} already exists: another process writes this "
                    "write-ahead log; two contexts must not share a checkpoint") from None
            self._next = seq + 1
            self._seqs.append(seq)
        return RecordHandle(seq, 0, lengths[0])

    def append_many(self, payloads: Sequence[bytes], record_type: int = 1) -> list[RecordHandle]:
        return [self.append(p, record_type) for p in payloads]

    # -- reading

    def _decode(self, seq: int, data: bytes) -> tuple[int, bytes]:
        where = self.storage.describe(self._object(seq))
        try:
            if len(data) < RECORD_HEADER_SIZE:
                raise _BadRecord(f"partial record header ({len(data)} of {RECORD_HEADER_SIZE} bytes)", "partial")
            header = data[:RECORD_HEADER_SIZE]
            record_type, length, crc = _parse_record_header(header, len(data) - RECORD_HEADER_SIZE)
            payload = data[RECORD_HEADER_SIZE:RECORD_HEADER_SIZE + length]
            if RECORD_HEADER_SIZE + length != len(data):
                raise _BadRecord(f"{len(data) - RECORD_HEADER_SIZE - length} bytes after the record", "header")
            if _record_crc(header, payload) != crc:
                raise _BadRecord("CRC32C mismatch", "crc")
        except _BadRecord as bad:
            raise CorruptRecordError(f"write-ahead log record {where} is damaged: {bad.reason}; restore it "
                                     "or delete the checkpoint's receivers directory (its blocks are then lost)",
                                     where, 0) from None
        return record_type, payload

    def read(self, handle: RecordHandle) -> bytes:
        self._check_open()
        try:
            data = self.storage.read(self._object(handle.segment))
        except FileNotFoundError:
            raise StorageError(f"write-ahead log record {self.path_of(handle)} is missing (deleted by clean-up "
                               "or by hand)") from None
        return self._decode(handle.segment, data)[1]

    def records(self, start: RecordHandle | None = None) -> Iterator[tuple[RecordHandle, int, bytes]]:
        """(handle, record type, payload) of every record, oldest first."""
        with self._lock:
            self._check_open()
            seqs = [s for s in self._seqs if start is None or s >= start.segment]
        for seq in seqs:
            try:
                data = self.storage.read(self._object(seq))
            except FileNotFoundError:
                continue  # cleaned up meanwhile
            record_type, payload = self._decode(seq, data)
            yield RecordHandle(seq, 0, len(payload)), record_type, payload

    # -- clean-up

    def delete_segments_before(self, handle: RecordHandle) -> list[str]:
        """Delete the records before `handle` (they belong to forgotten batches)."""
        with self._lock:
            self._check_open()
            doomed = [s for s in self._seqs if s < handle.segment]
            self._seqs = [s for s in self._seqs if s >= handle.segment]
        deleted = []
        for seq in doomed:
            self.storage.delete(self._object(seq))
            deleted.append(self.storage.describe(self._object(seq)))
        return deleted

    def close(self) -> None:
        with self._lock:
            self._closed = True


def check_options(location: str, options: dict[str, object]) -> None:
    """The local log's tuning options (fsync policy, segment size) mean nothing here."""
    if options:
        raise ConfigError(f"write-ahead log options {sorted(options)} apply to a log on local disk, not to "
                          f"{location}, where every record is one object")
