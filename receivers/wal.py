"""Segmented write-ahead log for data that a source cannot replay.

A receiver appends each block here before it acknowledges the source; the block
tracker keeps the returned `RecordHandle`s and reads the blocks back after a
crash. Clean-up is logical: the caller names the oldest record it still needs
(`delete_segments_before`) and whole segments older than that are deleted. No
wall-clock time is ever used to decide what to delete.

Guarantees (what is durable when a call returns)
-------------------------------------------------
- `append` / `append_many` write every record of the call with one
  ``pwritev`` (more only past IOV_MAX buffers or after a short write). With
  ``fsync="always"`` the records are on stable storage (``fdatasync``) when
  the call returns; `append_many` pays for one sync for the whole group.
  With ``fsync="interval"`` a record is durable after the next sync point: an
  append at least ``fsync_interval_s`` after the previous sync, `sync()`, a
  segment roll or `close()`. With ``fsync="never"`` only `sync()`, a segment roll
  and `close()` are sync points.
- A segment is synced before the next one is started, so every segment but the
  last is complete on disk. A new segment's header is written to
  ``<segment>.tmp``, fsynced, renamed into place and the directory fsynced: a
  segment under its final name always has a whole header.
- A crash during `append_many` may leave a prefix of its records in the log
  (each record is checked on its own); the call did not return their handles.
- Offsets are never reused: on open the log continues in a new segment (or in
  an empty, undamaged last segment), so a handle issued before a crash can never
  name a different record after recovery truncated a torn tail.
- `delete_segments_before` deletes oldest first and fsyncs the directory, so the
  segments left are always a contiguous run.
- One writer per log: a ``<name>.lock`` file in the directory is locked with
  ``flock`` while the log is open.

Recovery on open
----------------
Every segment is read once and every record's CRC checked.

- Torn tail: only the last segment can end in a record that a crash cut
  short, and only an incomplete record is torn: fewer bytes than a header
  left, a length field that runs past the end of the file, or nothing but
  zero bytes from the record to the end (pages never written). The file is
  truncated there and a WARNING names the file, the offset and the number of
  bytes dropped. A length field running past the end is checked first against
  its 32 one-bit variants: if one makes a complete record with a matching CRC,
  the length was damaged and that is corruption.
- A new segment's header is durable under its final name (directory fsynced)
  before the bounds file names it as the last segment. So a segment the bounds
  file names whose header is missing, short or wrong (truncated to 0 bytes, or
  overwritten by another file) is corruption, never an unfinished new segment.
  Only a last segment beyond the bounds' last one, shorter than its header and
  a prefix of it (a crash between creating and renaming cannot produce one,
  but a copy can), gets its header rewritten, holding no record. Bounds files
  without checksum (older releases) name nothing for this check.
- Anything else is corruption and raises `CorruptRecordError` naming the file
  and byte offset: a complete record whose CRC fails (even the last one: it
  was written in full and may have been acknowledged), an intact record found
  after a bad one, any bad record in a segment that is not the last one, a bad
  segment header, a valid record longer than ``max_record_bytes`` (reopen with
  a larger bound). No length field is trusted before it is checked against the
  file size and the bound. Recovery is linear in the size of the log: the
  search for an intact record after a bad one checks each record-like header
  once and checksums at most twice the bytes it searches.
- A gap in the segment numbers (a segment deleted by hand) raises
  `CorruptRecordError` naming the missing segment. ``<name>.bounds`` keeps the
  first and last segment numbers and the final size of every closed segment,
  with a CRC32C (rewritten atomically after a new segment exists, and before old
  ones are deleted), so a segment deleted by hand at either end, and a closed
  segment shortened (even at a record boundary) or grown, are reported the same
  way. Segments below the first bound are leftovers of an interrupted clean-up
  and are removed, but only when the bounds file passed its checksum: a bounds
  file that fails it is an error naming it, and nothing is deleted. A bounds
  file without checksum (format 1, older releases) is read but never used to
  delete anything.
- `verify(directory)` runs the same checks without changing anything and
  returns the problems instead of raising (``ingest checkpoint fsck``).

Files are created 0600 and directories 0700; a new directory is fsynced in
its parent.

Write errors (ENOSPC, EIO...) raise `StorageError` naming the file, with
``errno`` set to the cause's. A failed write is truncated back, so the log stays
readable and appendable once the cause is fixed. A failed fsync makes the log
refuse further writes, because the kernel may have dropped the unsynced pages:
close and reopen it, and recovery checks what reached the disk.

On-disk format, version 1 (integers big-endian)
-----------------------------------------------
Segment file ``<name>-<seq>.wal``, ``seq`` zero-padded to 20 digits, from 1::

    file header, 24 bytes
      0   8  magic  89 57 41 4C 0D 0A 1A 0A  ("\\x89WAL\\r\\n\\x1a\\n")
      8   2  format version, u16 = 1
     10   2  reserved, u16 = 0
     12   8  segment sequence number, u64 (equal to the number in the file name)
     20   4  CRC32C of bytes 0..19
    records, back to back from offset 24:
      0   4  magic "WREC"
      4   1  record format version, u8 = 1
      5   1  flags, u8 = 0 (reserved)
      6   2  record type, u16 (the caller's; 1 by default)
      8   4  payload length L, u32, at most max_record_bytes
     12   4  CRC32C of bytes 0..11 of this header followed by the payload
     16   L  payload

A `RecordHandle` is ``(segment, offset of the record header, L)``.

Bounds file ``<name>.bounds``, format 2: one JSON object, keys sorted, no
spaces: ``{"closed": {"<seq>": <final size>, ...}, "crc32c": <CRC32C of the
same object without "crc32c">, "first": <seq>, "format": 2, "last": <seq>}``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import json
import mmap
import os
import re
import stat
import struct
import threading
import time
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import BinaryIO, Callable, Iterator, Literal, Sequence, get_args

from crc32c import crc32c

from ingest.errors import ConfigError, CorruptRecordError, StateError, StorageError
from ingest.latency import LatencyHistogram
from ingest.storage import DIR_MODE, fsync_dir, make_dirs

__all__ = [
    "FILE_HEADER_SIZE",
    "FORMAT_VERSION",
    "RECORD_HEADER_SIZE",
    "FsyncPolicy",
    "RecordHandle",
    "WriteAheadLog",
    "read_records",
    "verify",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
FILE_MAGIC = b"\x89WAL\r\n\x1a\n"
RECORD_MAGIC = b"WREC"

_FILE_HEADER_BODY = struct.Struct(">8sHHQ")
_RECORD_HEADER_BODY = struct.Struct(">4sBBHI")
_RECORD_PREFIX = struct.Struct(">4sBBH")  # the header fields before the length
_LENGTH_AND_CRC = struct.Struct(">II")
_U32 = struct.Struct(">I")
FILE_HEADER_SIZE = _FILE_HEADER_BODY.size + 4  # 24
RECORD_HEADER_SIZE = _RECORD_HEADER_BODY.size + 4  # 16
_MAX_LENGTH = 0xFFFFFFFF
_MAX_RECORD_TYPE = 0xFFFF
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_ANY_SEGMENT_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,99})-(\d{20})\.wal")

FsyncPolicy = Literal["always", "interval", "never"]

# macOS has no fdatasync; fsync is the portable superset.
_fdatasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


@dataclass(frozen=True, order=True, slots=True)
class RecordHandle:
    """Where one record lives. Plain data: store it as `to_dict()`.

    Handles order by position in the log (segment, then offset)."""

    segment: int
    """Segment sequence number."""
    offset: int
    """Byte offset of the record's header in the segment file."""
    length: int
    """Payload length in bytes."""

    def to_dict(self) -> dict[str, int]:
        """A JSON-able form, read back by `from_dict`."""
        return {"segment": self.segment, "offset": self.offset, "length": self.length}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> RecordHandle:
        """Rebuild a handle from `to_dict()` output; raises `ConfigError` if it is not one."""
        if not isinstance(d, dict) or set(d) != {"segment", "offset", "length"}:
            raise ConfigError(
                f"not a WAL record handle: {d!r}; expected a dict with exactly the keys "
                "'segment', 'offset' and 'length'"
            )
        for key, value in d.items():
            if type(value) is not int or value < 0:
                raise ConfigError(
                    f"WAL record handle {d!r}: {key!r} must be a non-negative integer"
                )
        return cls(d["segment"], d["offset"], d["length"])


class _BadRecord(Exception):
    """A record failed a check. The caller decides: torn tail or corruption.

    `kind` says what failed, which is what that decision rests on:
    "partial" (fewer bytes than a header left), "past_end" (the length field
    runs past the end of the file), "header" (magic, version or flags),
    "crc" (a complete record whose checksum fails) or "too_large" (a record
    whose CRC matched but breaks max_record_bytes)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _file_header(seq: int) -> bytes:
    body = _FILE_HEADER_BODY.pack(FILE_MAGIC, FORMAT_VERSION, 0, seq)
    return body + _U32.pack(crc32c(body))


def _encode_records(
    payloads: Sequence[bytes], record_type: int, max_length: int, log: str
) -> tuple[list[bytes], list[int]]:
    """(header, payload, header, payload, ...) ready for one vectored write, and
    the payload lengths. The hot path of every append: whole-list operations
    rather than per-record statements, and no copies of payloads."""
    if not isinstance(payloads, (list, tuple)):
        payloads = list(payloads)
    if not set(map(type, payloads)) <= {bytes}:
        payloads = [_as_bytes(p) for p in payloads]
    lengths = list(map(len, payloads))
    if lengths and max(lengths) > max_length:
        raise ConfigError(
            f"record of {max(lengths)} bytes exceeds max_record_bytes={max_length} of WAL "
            f"{log}: split it or raise max_record_bytes"
        )
    prefix = _RECORD_PREFIX.pack(RECORD_MAGIC, FORMAT_VERSION, 0, record_type)
    prefix_crc = crc32c(prefix)
    pack = _LENGTH_AND_CRC.pack
    buffers: list[bytes] = [prefix] * (2 * len(lengths))
    buffers[0::2] = [
        prefix + pack(n, crc32c(p, crc32c(n.to_bytes(4, "big"), prefix_crc)))
        for p, n in zip(payloads, lengths)
    ]
    buffers[1::2] = payloads
    return buffers, lengths


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise ConfigError(f"WAL payloads must be bytes, got {type(payload).__name__}")


def _parse_record_header(header: bytes, available: int) -> tuple[int, int, int]:
    """Check a 16-byte record header; `available` is how many bytes follow it in
    the segment. Returns (record type, payload length, crc)."""
    magic, version, flags, record_type, length = _RECORD_HEADER_BODY.unpack_from(header)
    if magic != RECORD_MAGIC:
        raise _BadRecord(f"bad record magic {magic!r}", "header")
    if version != FORMAT_VERSION:
        raise _BadRecord(f"unknown record format version {version}", "header")
    if flags:
        raise _BadRecord(f"reserved flags set ({flags:#04x})", "header")
    if length > available:
        raise _BadRecord(
            f"length field {length} runs past the end of the segment ({available} bytes follow)",
            "past_end",
        )
    return record_type, length, _U32.unpack_from(header, 12)[0]


def _record_crc(header: bytes, payload: bytes) -> int:
    return crc32c(payload, crc32c(header[:12]))


def _check_record_at(buf: mmap.mmap, offset: int, end: int, max_length: int | None) -> int:
    """Check the whole record at `offset` of a mapped segment and return its total
    size. Reads no more than the file holds, whatever the length field says."""
    if end - offset < RECORD_HEADER_SIZE:
        raise _BadRecord(
            f"partial record header ({end - offset} of {RECORD_HEADER_SIZE} bytes)", "partial"
        )
    header = buf[offset : offset + RECORD_HEADER_SIZE]
    _, length, crc = _parse_record_header(header, end - offset - RECORD_HEADER_SIZE)
    start = offset + RECORD_HEADER_SIZE
    crc_ok = _record_crc(header, buf[start : start + length]) == crc
    if max_length is not None and length > max_length:
        if crc_ok:
            raise _BadRecord(
                f"valid record of {length} bytes exceeds max_record_bytes={max_length}; "
                f"reopen the log with max_record_bytes >= {length}",
                "too_large",
            )
        raise _BadRecord(f"length field {length} exceeds max_record_bytes={max_length}", "crc")
    if not crc_ok:
        raise _BadRecord("CRC32C mismatch", "crc")
    return RECORD_HEADER_SIZE + length


def _damaged_length(buf: mmap.mmap, offset: int, end: int) -> int | None:
    """For a record whose length field runs past the end of the file: the
    length, one bit away from the stored one, under which the record is
    complete and its CRC matches; None if there is none.

    A torn record keeps its true length and loses its end; a flipped bit in
    the length field of a complete record looks the same until the checksum
    of the 32 one-bit variants is tried. Costs at most 32 reads of the rest of
    the file."""
    header = buf[offset : offset + RECORD_HEADER_SIZE]
    length = _U32.unpack_from(header, 8)[0]
    crc = _U32.unpack_from(header, 12)[0]
    available = end - offset - RECORD_HEADER_SIZE
    start = offset + RECORD_HEADER_SIZE
    for bit in range(32):
        candidate = length ^ (1 << bit)
        if candidate > available:
            continue
        prefix = header[:8] + candidate.to_bytes(4, "big")
        if crc32c(buf[start : start + candidate], crc32c(prefix)) == crc:
            return candidate
    return None


def _next_valid_record(buf: mmap.mmap, start: int, end: int) -> int | None:
    """Offset of an intact record at or after `start`, or None when none was
    found within the budget.

    Linear in the bytes searched: every occurrence of the record magic gets
    one header check, and checksums are computed only while the bytes they
    cover stay within twice the bytes searched. A payload full of record-like
    headers (each claiming most of the file) would otherwise cost the square
    of the file size. Running out of budget means "not found": this search
    only adds evidence of corruption to a tail that is incomplete anyway."""
    budget = 2 * max(0, end - start)
    pos = start
    while True:
        pos = buf.find(RECORD_MAGIC, pos, end)
        if pos < 0 or end - pos < RECORD_HEADER_SIZE:
            return None
        try:
            _, length, _ = _parse_record_header(
                buf[pos : pos + RECORD_HEADER_SIZE], end - pos - RECORD_HEADER_SIZE
            )
        except _BadRecord:
            pos += 1
            continue
        if length > budget:
            pos += 1
            continue
        budget -= length
        try:
            _check_record_at(buf, pos, end, None)
        except _BadRecord:
            pos += 1
        else:
            return pos


# Records smaller than this on average are joined into one buffer before writing;
# larger ones go to pwritev as they are (measured break-even on Linux/ext4).
_JOIN_BELOW_AVERAGE = 8 << 10

try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


def _write_all(fd: int, buffers: Sequence[bytes], offset: int) -> None:
    """Write `buffers` back to back at `offset` with pwritev, across partial
    writes, without joining them first."""
    pending: list[bytes | memoryview] = list(buffers)
    while pending:
        chunk = pending[:_IOV_MAX]
        expected = sum(map(len, chunk))
        written = os.pwritev(fd, chunk, offset)
        offset += written
        if written == expected:
            del pending[: len(chunk)]
            continue
        if written <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        done = 0
        while written >= len(chunk[done]):
            written -= len(chunk[done])
            done += 1
        del pending[:done]
        if written:
            pending[0] = memoryview(pending[0])[written:]


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """Up to `size` bytes at `offset`; shorter only at end of file."""
    data = os.pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    chunks = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def _storage_error(message: str, cause: OSError) -> StorageError:
    """A StorageError that carries the cause's errno, so callers can test for ENOSPC."""
    err = StorageError(message)
    err.errno = cause.errno
    return err


def _describe(cause: OSError) -> str:
    code = errno.errorcode.get(cause.errno or 0, "")
    text = cause.strerror or str(cause)
    return f"{text} [{code}]" if code else text


class WriteAheadLog:
    """A segmented, CRC-checked, append-only log in one directory.

    See the module documentation for the guarantees and the on-disk format.
    Thread-safe: appends, syncs and clean-up are serialized by one lock; reads
    run outside it."""

    bytes_written: int
    """Bytes of records (headers and payloads) appended by this instance."""
    records_written: int
    """Records appended by this instance."""
    fsyncs: int
    """Times this instance synced appended records to stable storage (new
    segments' headers and directory syncs are not counted)."""
    fsync_latency: LatencyHistogram
    """How long those syncs took."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        segment_max_bytes: int = 64 << 20,
        segment_max_age_s: float = 60.0,
        fsync: FsyncPolicy = "always",
        fsync_interval_s: float = 1.0,
        max_record_bytes: int = 64 << 20,
        name: str = "wal",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Open the log in `directory` (created if missing) and recover it.

        `segment_max_bytes` and `segment_max_age_s` roll segments (checked on
        append; a segment always takes at least one append, so one larger than
        the limit gets a segment of its own). `fsync` and `fsync_interval_s` set
        the sync policy. `max_record_bytes` bounds a payload on write and every
        length field on read. `name` prefixes the segment files, so several logs
        can share a directory. `clock` (monotonic seconds) times segment age and
        the sync interval; tests pass a fake one.

        Raises `ConfigError` for a bad option or an unusable directory,
        `CorruptRecordError` for a damaged log, `StorageError` if the log is
        open elsewhere or the disk fails."""
        _check_int("segment_max_bytes", segment_max_bytes, FILE_HEADER_SIZE + RECORD_HEADER_SIZE + 1)
        _check_int("max_record_bytes", max_record_bytes, 1, _MAX_LENGTH)
        _check_seconds("segment_max_age_s", segment_max_age_s, allow_zero=False)
        _check_seconds("fsync_interval_s", fsync_interval_s, allow_zero=True)
        if fsync not in get_args(FsyncPolicy):
            raise ConfigError(
                f"WAL option fsync={fsync!r} is not one of {', '.join(get_args(FsyncPolicy))}"
            )
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"WAL name {name!r} must be 1-100 characters of letters, digits, '_', '.' "
                "or '-', starting with a letter or digit (it prefixes file names)"
            )
        self.directory: str = os.path.abspath(os.fspath(directory))
        self.name: str = name
        self.fsync_policy: FsyncPolicy = fsync
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age_s = float(segment_max_age_s)
        self.fsync_interval_s = float(fsync_interval_s)
        self.max_record_bytes = max_record_bytes
        self._clock = clock
        self._label = f"{name!r} in {self.directory}"
        self._segment_re = re.compile(re.escape(name) + r"-(\d{20})\.wal")
        self._temp_re = re.compile(re.escape(name) + r"-(\d{20})\.wal\.tmp")

        self.bytes_written = 0
        self.records_written = 0
        self.fsyncs = 0
        self.fsync_latency = LatencyHistogram()

        self._lock = threading.Lock()
        self._closed = False
        # Why writes are refused: a failed sync, or a failed write not undone.
        self._failed: str | None = None
        self._fd = -1
        self._dirty = False
        self._first_write_at: float | None = None
        self._last_sync_at = clock()

        self._prepare_directory()
        self._lock_fd = self._lock_directory()
        try:
            # Valid size of every present segment, ascending; the last is active.
            self._sizes: dict[int, int] = {}
            reusable = self._recover()
            if reusable:
                self._active = max(self._sizes)
                self._fd = self._open_for_append(self._active)
            else:
                self._active = max(self._sizes, default=0) + 1
                self._fd = self._create_segment(self._active)
                self._sizes[self._active] = FILE_HEADER_SIZE
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ---------------------------------------------------------------- writing

    def append(self, payload: bytes, record_type: int = 1) -> RecordHandle:
        """Append one record; see `append_many` for what is durable on return."""
        return self.append_many([payload], record_type)[0]

    def append_many(self, payloads: Sequence[bytes], record_type: int = 1) -> list[RecordHandle]:
        """Append records in order with one write and, under ``fsync="always"``,
        one fdatasync for all of them (group commit). They land in one segment.

        Raises `ConfigError` for a payload over ``max_record_bytes`` or a record
        type outside 0..65535 (nothing is written); `StorageError` when the
        write fails (nothing of this call is kept) or the sync fails (the records
        may or may not have reached the disk, and the log refuses further
        writes); `StateError` once closed."""
        if (
            not isinstance(record_type, int)
            or isinstance(record_type, bool)
            or not 0 <= record_type <= _MAX_RECORD_TYPE
        ):
            raise ConfigError(f"WAL record type {record_type!r} must be an integer in 0..65535")
        # Encoding and CRCs run outside the lock, so appending threads overlap there.
        buffers, lengths = _encode_records(
            payloads, int(record_type), self.max_record_bytes, self._label
        )
        if not lengths:
            return []
        size = RECORD_HEADER_SIZE * len(lengths) + sum(lengths)
        if size < _JOIN_BELOW_AVERAGE * len(lengths):
            # Small records: one copy costs less than the kernel's work per iovec.
            buffers = [b"".join(buffers)]

        with self._lock:
            self._check_writable()
            self._maybe_roll(size)
            segment, start = self._active, self._size
            try:
                _write_all(self._fd, buffers, start)
            except OSError as e:
                raise self._undo_write(e, start, size) from e
            self._size = start + size
            self._dirty = True
            if self._first_write_at is None:
                self._first_write_at = self._clock()
            self.bytes_written += size
            self.records_written += len(lengths)
            self._sync_by_policy()

        offsets = accumulate([RECORD_HEADER_SIZE + n for n in lengths[:-1]], initial=start)
        return list(map(RecordHandle, repeat(segment), offsets, lengths))

    def sync(self) -> None:
        """Put everything appended so far on stable storage now."""
        with self._lock:
            self._check_writable()
            self._sync_active()

    # ---------------------------------------------------------------- reading

    def read(self, handle: RecordHandle) -> bytes:
        """The payload at `handle`, CRC checked.

        Raises `CorruptRecordError` (with path and offset) when the bytes there
        are not the record the handle describes, `StorageError` when the segment
        is gone (deleted by `delete_segments_before`) or cannot be read."""
        with self._lock:
            self._check_open()
            size = self._sizes.get(handle.segment)
            if size is None:
                raise self._missing_segment(handle)
        path = self._path(handle.segment)
        total = RECORD_HEADER_SIZE + handle.length
        if handle.offset < FILE_HEADER_SIZE or handle.offset + total > size:
            raise CorruptRecordError(
                f"WAL handle {handle} points outside the {size} valid bytes of {path}: "
                "it does not come from this log",
                path=path,
                offset=handle.offset,
            )
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as e:
            raise self._vanished(handle.segment, handle.offset) from e
        except OSError as e:
            raise _storage_error(f"cannot open WAL segment {path}: {_describe(e)}", e) from e
        try:
            data = _pread_exact(fd, total, handle.offset)
        except OSError as e:
            raise _storage_error(
                f"cannot read WAL segment {path} at offset {handle.offset}: {_describe(e)}", e
            ) from e
        finally:
            os.close(fd)
        return self._check_payload(path, handle.offset, data, handle.length)

    def records(
        self, start: RecordHandle | None = None
    ) -> Iterator[tuple[RecordHandle, int, bytes]]:
        """(handle, record type, payload) for every record, in write order, from
        `start` (inclusive) or the oldest segment still present.

        Each segment is read up to what was appended when the iterator reaches
        it. Segments deleted by clean-up while iterating are skipped. Raises as
        `read` does; a `start` in a deleted segment raises `StorageError` at once."""
        with self._lock:
            self._check_open()
            if start is None:
                seq, offset = next(iter(self._sizes)), FILE_HEADER_SIZE
            elif start.segment not in self._sizes:
                raise self._missing_segment(start)
            else:
                seq, offset = start.segment, start.offset
        return self._iterate(seq, offset, None if start is None else start.length)

    def _iterate(
        self, seq: int, offset: int, first_length: int | None
    ) -> Iterator[tuple[RecordHandle, int, bytes]]:
        while True:
            with self._lock:
                self._check_open()
                if seq > self._active:
                    return
                if seq not in self._sizes:  # cleaned up since the last segment
                    seq, offset = next(iter(self._sizes)), FILE_HEADER_SIZE
                end = self._sizes[seq]
            yield from self._read_segment(seq, offset, end, first_length)
            first_length = None
            seq, offset = seq + 1, FILE_HEADER_SIZE

    def _read_segment(
        self, seq: int, offset: int, end: int, first_length: int | None
    ) -> Iterator[tuple[RecordHandle, int, bytes]]:
        path = self._path(seq)
        try:
            f = open(path, "rb")
        except FileNotFoundError as e:
            with self._lock:
                if seq not in self._sizes:  # deleted by clean-up meanwhile
                    return
            raise self._vanished(seq, offset) from e
        except OSError as e:
            raise _storage_error(f"cannot open WAL segment {path}: {_describe(e)}", e) from e
        with f:
            f.seek(offset)
            while offset < end:
                header = f.read(RECORD_HEADER_SIZE)
                try:
                    if len(header) < RECORD_HEADER_SIZE:
                        raise _BadRecord("file ends inside a record header", "partial")
                    record_type, length, _ = _parse_record_header(
                        header, end - offset - RECORD_HEADER_SIZE
                    )
                except _BadRecord as e:
                    raise self._corrupt(path, offset, e.reason) from None
                if length > self.max_record_bytes:
                    raise self._corrupt(
                        path,
                        offset,
                        f"length field {length} exceeds max_record_bytes={self.max_record_bytes}",
                    )
                if first_length is not None and length != first_length:
                    raise self._corrupt(
                        path,
                        offset,
                        f"record has length {length} but the start handle says {first_length}",
                    )
                first_length = None
                payload = self._check_payload(path, offset, header + f.read(length), length)
                yield RecordHandle(seq, offset, length), record_type, payload
                offset += RECORD_HEADER_SIZE + length

    def _check_payload(self, path: str, offset: int, data: bytes, length: int) -> bytes:
        """The payload of `data` (a whole record read from disk, its length
        already bounded) after checking that it is the record of `length` bytes
        it should be."""
        try:
            if len(data) < RECORD_HEADER_SIZE + length:
                raise _BadRecord("file ends inside the record", "partial")
            header = data[:RECORD_HEADER_SIZE]
            _, actual, crc = _parse_record_header(header, _MAX_LENGTH)
            if actual != length:
                raise _BadRecord(f"record has length {actual} but the handle says {length}", "header")
            payload = data[RECORD_HEADER_SIZE:]
            if _record_crc(header, payload) != crc:
                raise _BadRecord("CRC32C mismatch", "crc")
        except _BadRecord as e:
            raise self._corrupt(path, offset, e.reason) from None
        return payload

    # --------------------------------------------------------------- clean-up

    def delete_segments_before(self, handle: RecordHandle) -> list[str]:
        """Delete every closed segment whose records all come before `handle`
        (segments numbered below ``handle.segment``), oldest first, and return
        their paths. The active segment is never deleted.

        Pass the oldest record still needed by a batch that has not committed."""
        with self._lock:
            self._check_open()
            if handle.segment > self._active:
                raise ConfigError(
                    f"WAL handle {handle} is past the end of {self._path(self._active)}; "
                    "it does not come from this log, so nothing was deleted"
                )
            deleted: list[str] = []
            victims = [s for s in self._sizes if s < handle.segment]
            if victims:
                try:  # first the bounds: a crash mid-way leaves leftovers, not a "missing" segment
                    self._write_bounds(handle.segment, self._active)
                except OSError as e:
                    raise _storage_error(f"cannot update {self._bounds_path}: {_describe(e)}", e) from e
            try:
                # handle.segment <= active, so the active segment is never a victim.
                for seq in victims:
                    path = self._path(seq)
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                    del self._sizes[seq]
                    deleted.append(path)
            except OSError as e:
                raise _storage_error(
                    f"cannot delete WAL segment {self._path(seq)}: {_describe(e)}; "
                    f"deleted {len(deleted)} older segment(s) before the failure",
                    e,
                ) from e
            finally:
                if deleted:
                    fsync_dir(self.directory)
            return deleted

    def path_of(self, handle: RecordHandle) -> str:
        """The segment file `handle` points into (for messages)."""
        return self._path(handle.segment)

    # ---------------------------------------------------------------- closing

    def close(self) -> None:
        """Sync and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._failed is None:
                    self._sync_active()
            finally:
                os.close(self._fd)
                os.close(self._lock_fd)

    def __enter__(self) -> WriteAheadLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def segments(self) -> list[str]:
        """Paths of the segments present, oldest first; the last one is active."""
        with self._lock:
            return [self._path(seq) for seq in self._sizes]

    def usage(self) -> tuple[int, int]:
        """(segments, bytes) present, headers included, for monitoring. Takes
        no lock: a copy of the sizes is one step under the GIL, and a monitor
        must never wait behind an append's fsync."""
        sizes = dict(self._sizes)
        return len(sizes), sum(sizes.values())

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segments present (headers included)."""
        return self.usage()[1]

    def __repr__(self) -> str:
        return (
            f"WriteAheadLog({self.directory!r}, name={self.name!r}, fsync={self.fsync_policy!r}, "
            f"active segment {getattr(self, '_active', None)}, closed={self._closed})"
        )

    # --------------------------------------------------------------- internals

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"{self.name}-{seq:020d}.wal")

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"WAL {self._path(self._active)} and its log are closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failed is not None:
            raise StorageError(
                f"WAL {self._path(self._active)} refuses writes after an earlier failure "
                f"({self._failed}); close it and reopen to recover"
            )

    @property
    def _size(self) -> int:
        return self._sizes[self._active]

    @_size.setter
    def _size(self, value: int) -> None:
        self._sizes[self._active] = value

    def _maybe_roll(self, incoming: int) -> None:
        if self._first_write_at is None:  # an empty segment takes any append
            return
        too_big = self._size + incoming > self.segment_max_bytes
        too_old = self._clock() - self._first_write_at >= self.segment_max_age_s
        if too_big or too_old:
            self._roll()

    def _roll(self) -> None:
        # Sync first whatever the policy: only the last segment may have a torn tail.
        self._sync_active()
        seq = self._active + 1
        fd = self._create_segment(seq)
        os.close(self._fd)
        self._fd, self._active = fd, seq
        self._sizes[seq] = FILE_HEADER_SIZE
        self._first_write_at = None

    def _sync_by_policy(self) -> None:
        if self.fsync_policy == "always":
            self._sync_active()
        elif self.fsync_policy == "interval":
            if self._clock() - self._last_sync_at >= self.fsync_interval_s:
                self._sync_active()

    def _sync_active(self) -> None:
        if not self._dirty:
            return
        started = time.perf_counter()
        try:
            _fdatasync(self._fd)
        except OSError as e:
            # After a failed fsync the kernel may have dropped the dirty pages and
            # a retry can report success: the only safe answer is to stop writing.
            self._failed = f"fdatasync failed: {_describe(e)}"
            raise _storage_error(
                f"cannot sync WAL segment {self._path(self._active)}: {_describe(e)}; records "
                "appended since the last successful sync may not be on disk. The log refuses "
                "further writes: close it and reopen to recover.",
                e,
            ) from e
        self._dirty = False
        self._last_sync_at = self._clock()
        self.fsyncs += 1
        self.fsync_latency.observe(time.perf_counter() - started)

    def _undo_write(self, cause: OSError, offset: int, size: int) -> StorageError:
        path = self._path(self._active)
        what = f"cannot append {size} bytes to WAL segment {path} at offset {offset}: {_describe(cause)}"
        try:
            os.ftruncate(self._fd, offset)
        except OSError as e:
            self._failed = f"a failed write could not be truncated away: {_describe(e)}"
            return _storage_error(
                f"{what}. Truncating the partial write away failed too ({_describe(e)}), so "
                "the log refuses further writes; records appended before stay readable. "
                "Reopen the log to recover (the torn tail is truncated on open).",
                cause,
            )
        return _storage_error(
            f"{what}. Nothing of this append was kept; every earlier record stays readable. "
            "Fix the cause (free disk space) before appending again, or stop.",
            cause,
        )

    def _corrupt(self, path: str, offset: int, reason: str) -> CorruptRecordError:
        return CorruptRecordError(
            f"corrupt WAL record in {path} at byte offset {offset}: {reason}",
            path=path,
            offset=offset,
        )

    def _missing_segment(self, handle: RecordHandle) -> StorageError:
        path = self._path(handle.segment)
        if handle.segment > self._active:
            return StorageError(
                f"WAL segment {path} does not exist (the newest is {self._path(self._active)}): "
                f"handle {handle} does not come from this log"
            )
        return StorageError(
            f"WAL segment {path} was deleted by delete_segments_before(): the record at "
            f"offset {handle.offset} is gone. A handle was used after clean-up released it."
        )

    def _vanished(self, seq: int, offset: int) -> CorruptRecordError:
        path = self._path(seq)
        return CorruptRecordError(
            f"WAL segment {path} is missing although the log did not delete it: "
            "something outside the log removed it",
            path=path,
            offset=offset,
        )

    # ---------------------------------------------------------------- opening

    def _prepare_directory(self) -> None:
        d = self.directory
        if os.path.exists(d) and not os.path.isdir(d):
            raise ConfigError(f"WAL directory {d} exists but is not a directory: pick another path")
        try:
            make_dirs(d, DIR_MODE)
        except OSError as e:
            raise ConfigError(
                f"cannot create WAL directory {d}: {_describe(e)}; create it with write "
                "permission for this user or pick another directory"
            ) from e
        if not os.access(d, os.W_OK | os.X_OK):
            raise ConfigError(
                f"WAL directory {d} is not writable by this process (uid {os.geteuid()}): "
                "grant write permission or pick another directory"
            )

    def _lock_directory(self) -> int:
        path = os.path.join(self.directory, f"{self.name}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except PermissionError as e:
            raise ConfigError(
                f"cannot create {path}: {_describe(e)}; grant write permission on "
                f"{self.directory} or pick another directory"
            ) from e
        except OSError as e:
            raise _storage_error(f"cannot create {path}: {_describe(e)}", e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageError(
                    f"WAL {self.name!r} in {self.directory} is already open (lock {path} is "
                    "held by this or another process); close that WriteAheadLog first"
                ) from e
            raise _storage_error(f"cannot lock {path}: {_describe(e)}", e) from e
        return fd

    def _recover(self) -> bool:
        """Check every segment into `self._sizes`; True when the last segment is
        empty and undamaged, so appends may continue in it."""
        seqs = []
        for entry in os.listdir(self.directory):
            if match := self._segment_re.fullmatch(entry):
                seqs.append(int(match.group(1)))
            elif self._temp_re.fullmatch(entry):
                # A crash between creating and renaming a new segment: it held no records.
                temp = os.path.join(self.directory, entry)
                try:
                    os.unlink(temp)
                except OSError as e:
                    raise _storage_error(
                        f"cannot remove the unfinished new WAL segment {temp}: {_describe(e)}", e
                    ) from e
                logger.info("WAL %s: removed unfinished new segment %s", self.directory, entry)
        seqs.sort()
        seqs, closed, named = self._check_bounds(seqs)
        gap = _first_gap(seqs, self._path)
        if gap is not None:
            raise gap
        last_repaired = False
        for seq in seqs:
            self._sizes[seq], last_repaired = self._recover_segment(
                seq, last=seq == seqs[-1], closed_size=closed.get(seq), named=seq <= named
            )
        return bool(seqs) and self._sizes[seqs[-1]] == FILE_HEADER_SIZE and not last_repaired

    @property
    def _bounds_path(self) -> str:
        return os.path.join(self.directory, f"{self.name}.bounds")

    def _write_bounds(self, first: int, last: int) -> None:
        """Record the first and last segment numbers and the final size of every
        closed segment (atomically, with a checksum), so that a segment deleted
        or shortened by hand is noticed on open."""
        closed = {s: n for s, n in self._sizes.items() if first <= s < last}
        temp = self._bounds_path + ".tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, [_bounds_bytes(first, last, closed)], 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self._bounds_path)
        fsync_dir(self.directory)

    def _check_bounds(self, seqs: list[int]) -> tuple[list[int], dict[int, int], int]:
        """The segments that make up the log, the recorded size of each closed
        one, and the last segment the bounds name (see `_named_through`).
        Nothing is deleted unless the bounds file passed its checksum."""
        bounds = _read_bounds(self._bounds_path)
        if bounds is None:
            return seqs, {}, 0  # a new log
        problem = _bounds_problem(bounds, seqs, self._bounds_path, self._path)
        if problem is not None:
            raise problem
        for seq in [s for s in seqs if s < bounds.first]:  # deletion was cut short by a crash: finish it
            try:
                os.unlink(self._path(seq))
            except OSError as e:
                raise _storage_error(
                    f"cannot remove WAL segment {self._path(seq)}, already cleaned up: {_describe(e)}", e
                ) from e
            logger.info("WAL %s: removed segment %s, already cleaned up", self.directory, self._path(seq))
        return [s for s in seqs if s >= bounds.first], bounds.closed, _named_through(bounds)

    def _recover_segment(self, seq: int, *, last: bool, closed_size: int | None,
                         named: bool) -> tuple[int, bool]:
        """(valid size, repaired?) of one segment; truncates a torn tail of the last."""
        path = self._path(seq)
        try:
            f = open(path, "r+b" if last else "rb")
        except OSError as e:
            raise _storage_error(f"cannot open WAL segment {path}: {_describe(e)}", e) from e
        with f:
            check = _check_segment(f, path, seq, last=last, closed_size=closed_size,
                                   max_record_bytes=self.max_record_bytes, named=named)
            if check.torn_header:
                f.seek(0)
                f.write(_file_header(seq))
                f.flush()
                os.fsync(f.fileno())
                logger.warning(
                    "WAL %s: torn segment header (%d of %d bytes); rewrote it, no record lost",
                    path, check.size, FILE_HEADER_SIZE,
                )
                return FILE_HEADER_SIZE, True
            if check.torn is None:
                return check.size, False
            f.truncate(check.valid)
            os.fsync(f.fileno())
        logger.warning(
            "WAL %s: torn tail at byte offset %d (%s); truncated %d bytes",
            path, check.valid, check.torn, check.size - check.valid,
        )
        return check.valid, True

    def _open_for_append(self, seq: int) -> int:
        path = self._path(seq)
        try:
            return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise _storage_error(f"cannot open WAL segment {path} for writing: {_describe(e)}", e) from e

    def _create_segment(self, seq: int) -> int:
        """Create segment `seq` with its header durable under its final name;
        returns a descriptor open for writing."""
        path = self._path(seq)
        temp = path + ".tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise _storage_error(f"cannot create WAL segment {temp}: {_describe(e)}", e) from e
        try:
            _write_all(fd, [_file_header(seq)], 0)
            os.fsync(fd)
            os.rename(temp, path)
            fsync_dir(self.directory)
            self._write_bounds(min(self._sizes, default=seq), seq)
        except OSError as e:
            os.close(fd)
            for leftover in (temp, path):
                try:
                    os.unlink(leftover)
                except OSError:
                    pass
            raise _storage_error(f"cannot create WAL segment {path}: {_describe(e)}", e) from e
        return fd


# ------------------------------------------------------ recovery, shared with verify()


def _first_gap(seqs: list[int], path_of: Callable[[int], str]) -> CorruptRecordError | None:
    for before, after in zip(seqs, seqs[1:]):
        if after != before + 1:
            missing = path_of(before + 1)
            return CorruptRecordError(
                f"WAL segment {missing} is missing between {path_of(before)} and "
                f"{path_of(after)}: its records are lost. Restore it, or delete every "
                "segment before it to accept the loss.",
                path=missing,
                offset=None,
            )
    return None


BOUNDS_FORMAT = 2
_BOUNDS_MAX_BYTES = 16 << 20


@dataclass(frozen=True)
class _Bounds:
    """What ``<name>.bounds`` says: the first and last segment numbers and the
    final size of each closed segment. `checked` is False for a file written
    before bounds had a checksum (format 1: first and last only)."""

    first: int
    last: int
    closed: dict[int, int]
    checked: bool


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _bounds_bytes(first: int, last: int, closed: dict[int, int]) -> bytes:
    """The bounds file, format 2: a JSON object whose "crc32c" is the CRC32C of
    the canonical JSON (sorted keys, no spaces) of every other field."""
    body = {
        "format": BOUNDS_FORMAT,
        "first": first,
        "last": last,
        "closed": {str(seq): size for seq, size in sorted(closed.items())},
    }
    return _canonical({**body, "crc32c": crc32c(_canonical(body))})


def _read_bounds(path: str) -> _Bounds | None:
    """The bounds file at `path`, None if there is none. Raises
    `CorruptRecordError` naming it when it fails its checks, `StorageError`
    when it cannot be read (a directory in its place, say)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_BOUNDS_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _storage_error(
            f"cannot read WAL bounds file {path}: {_describe(e)}; it must be a regular file "
            "written by the log (delete whatever is in its place to accept the segments as they are)",
            e,
        ) from e

    def damaged(why: str) -> CorruptRecordError:
        return CorruptRecordError(
            f"WAL bounds file {path} is damaged ({why}); no segment was deleted. Restore it, or "
            "delete it to accept the segments present as they are (receivers.wal.verify lists "
            "them and their problems)",
            path=path,
            offset=0,
        )

    if len(data) > _BOUNDS_MAX_BYTES:
        raise damaged(f"larger than {_BOUNDS_MAX_BYTES} bytes")
    try:
        obj = json.loads(data)
    except ValueError as e:
        raise damaged(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise damaged("not a JSON object")

    def number(key: str) -> int:
        value = obj.get(key)
        if type(value) is not int or value < 0:
            raise damaged(f"{key!r} is {value!r}, not a segment number")
        return value

    if set(obj) == {"first", "last"}:  # format 1, no checksum: trusted for nothing destructive
        first, last = number("first"), number("last")
        if first > last:
            raise damaged(f"first segment {first} after last segment {last}")
        return _Bounds(first, last, {}, checked=False)
    crc = obj.pop("crc32c", None)
    if type(crc) is not int:
        raise damaged("no checksum")
    if crc32c(_canonical(obj)) != crc:
        raise damaged("CRC32C mismatch")
    if obj.get("format") != BOUNDS_FORMAT:
        raise CorruptRecordError(
            f"WAL bounds file {path} has format {obj.get('format')!r}; this release reads format "
            f"{BOUNDS_FORMAT}: open the log with the ingest release that wrote it",
            path=path,
            offset=0,
        )
    first, last = number("first"), number("last")
    if first > last:
        raise damaged(f"first segment {first} after last segment {last}")
    raw = obj.get("closed")
    if not isinstance(raw, dict):
        raise damaged("'closed' is not an object")
    closed: dict[int, int] = {}
    for key, size in raw.items():
        if not key.isdigit() or type(size) is not int or size < FILE_HEADER_SIZE:
            raise damaged(f"closed segment entry {key!r}: {size!r}")
        closed[int(key)] = size
    return _Bounds(first, last, closed, checked=True)


def _named_through(bounds: _Bounds | None) -> int:
    """The last segment number the bounds file names (0 for none). A segment at
    or below it had its header durable before the bounds named it, so it may
    never lack one. A bounds file without checksum names nothing: older
    releases did not promise that order, and a damaged number would make a
    legitimate unfinished segment an error."""
    return bounds.last if bounds is not None and bounds.checked else 0


def _bounds_problem(
    bounds: _Bounds, seqs: list[int], bounds_path: str, path_of: Callable[[int], str]
) -> CorruptRecordError | None:
    """What is wrong with the segments present (`seqs`, ascending) given the
    bounds, or None. Segments below the first bound are leftovers of a clean-up
    cut short by a crash, which the log finishes on open: but only when the
    bounds file passed its checksum, since otherwise one flipped bit would
    delete valid segments."""
    leftovers = [s for s in seqs if s < bounds.first]
    if leftovers and not bounds.checked:
        return CorruptRecordError(
            f"WAL bounds file {bounds_path} has no checksum (an older release wrote it) and says "
            f"the log starts at segment {bounds.first}, but {path_of(leftovers[0])} and "
            f"{len(leftovers) - 1} more before it exist: a clean-up cut short and a damaged bounds "
            "file look the same, so nothing was deleted. Delete the older segments if they were "
            "cleaned up, or delete the bounds file to keep them.",
            path=bounds_path,
            offset=0,
        )
    present = [s for s in seqs if s >= bounds.first]
    if not present or present[0] > bounds.first:
        return CorruptRecordError(
            f"WAL segment {path_of(bounds.first)} is missing (the log starts there): its records "
            "are lost. Restore it, or delete the bounds file to accept the loss.",
            path=path_of(bounds.first),
            offset=None,
        )
    if present[-1] < bounds.last:
        return CorruptRecordError(
            f"WAL segment {path_of(bounds.last)} is missing (the log ends there): its records "
            "are lost. Restore it, or delete the bounds file to accept the loss.",
            path=path_of(bounds.last),
            offset=None,
        )
    return None


@dataclass(frozen=True)
class _SegmentCheck:
    size: int
    """Bytes in the file."""
    valid: int
    """Bytes of whole, intact records (and the header) from the start."""
    torn: str | None
    """Why the bytes after `valid` are a torn tail, if there are any."""
    torn_header: bool = False
    """The (last) segment is shorter than its header and is a prefix of it."""


def _check_segment(
    f: BinaryIO,
    path: str,
    seq: int,
    *,
    last: bool,
    closed_size: int | None,
    max_record_bytes: int | None,
    named: bool = False,
) -> _SegmentCheck:
    """Check one segment file without changing it. Raises `CorruptRecordError`
    (file and offset) for anything but a torn tail of the last segment, or a
    torn header of a last segment the bounds file does not name (`named`)."""
    size = os.fstat(f.fileno()).st_size
    if closed_size is not None and size != closed_size:
        how = "shortened" if size < closed_size else "grown"
        raise CorruptRecordError(
            f"WAL segment {path} is {size} bytes but was {closed_size} when it was closed "
            f"({how} since, at byte offset {min(size, closed_size)}): records were "
            f"{'lost' if size < closed_size else 'added behind the log'}. Restore the file, or move "
            "the log aside.",
            path=path,
            offset=min(size, closed_size),
        )
    expected = _file_header(seq)
    f.seek(0)
    head = f.read(FILE_HEADER_SIZE)
    if len(head) < FILE_HEADER_SIZE and last and expected.startswith(head):
        if named:
            raise CorruptRecordError(
                f"WAL segment {path} is {size} bytes, shorter than its {FILE_HEADER_SIZE}-byte header, but "
                f"the log's bounds file names it (a segment's header is durable before the bounds name it): "
                "the file was truncated or overwritten and its records are lost. Restore it, or move the "
                "log aside.",
                path=path,
                offset=0,
            )
        return _SegmentCheck(size, len(head), None, torn_header=True)
    if head != expected:
        raise CorruptRecordError(
            f"bad WAL segment header in {path} at byte offset 0: {_explain_header(head, seq)}",
            path=path,
            offset=0,
        )
    if size == FILE_HEADER_SIZE:
        return _SegmentCheck(size, size, None)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        offset = FILE_HEADER_SIZE
        try:
            while offset < size:
                offset += _check_record_at(buf, offset, size, max_record_bytes)
            return _SegmentCheck(size, size, None)
        except _BadRecord as e:
            bad = e
        detail = _tail_damage(buf, offset, size, bad) if last else ""
    if detail is None:
        return _SegmentCheck(size, offset, bad.reason)
    raise CorruptRecordError(
        f"corrupt WAL record in {path} at byte offset {offset}: {bad.reason}{detail}. "
        "Records after it cannot be trusted; restore the file or move the log aside.",
        path=path,
        offset=offset,
    )


def _tail_damage(buf: mmap.mmap, offset: int, size: int, bad: _BadRecord) -> str | None:
    """For the first bad record of the last segment: None when it is a torn
    tail (a write cut short by a crash), else why it is damage instead.

    Only an incomplete record is torn: fewer bytes than a header left, a
    length field running past the end of the file (unless one flipped bit in
    it explains the record), or nothing but zero bytes to the end (pages never
    written). A complete record whose checksum fails was written in full, and
    may have been acknowledged: that is corruption."""
    if bad.kind == "partial":
        return None
    if bad.kind == "header" and not bytes(buf[offset:size]).strip(b"\0"):
        return None
    if bad.kind == "past_end":
        length = _damaged_length(buf, offset, size)
        if length is not None:
            return (
                f"; a complete record of {length} bytes with a matching checksum is there: "
                "its length field is damaged"
            )
    following = _next_valid_record(buf, offset + 1, size)
    if following is not None:
        return f"; an intact record follows at offset {following}"
    if bad.kind == "past_end":
        return None
    if bad.kind == "crc":
        return "; the record is complete, so it was written in full (and may have been acknowledged)"
    return ""


def verify(directory: str | os.PathLike[str]) -> list[str]:
    """Check every write-ahead log in `directory` and the directories below it
    without changing anything: the bounds file, the segment numbers, the size
    of each closed segment and every record's framing and checksum. Returns the
    problems found, each naming the file (and the byte offset where there is
    one); empty when healthy. What opening the log would repair without loss (a
    torn tail of the last segment, an unfinished new segment, segments left by
    a clean-up cut short) is not a problem. Logs opened with a
    `max_record_bytes` bound are checked without it."""
    directory = os.path.abspath(os.fspath(directory))
    problems: list[str] = []

    def unreadable(e: OSError) -> None:
        problems.append(f"WAL directory {e.filename or directory} cannot be listed: {_describe(e)}")

    for current, subdirectories, _ in os.walk(directory, onerror=unreadable):
        subdirectories.sort()
        try:
            logs = _logs_in(current)
        except OSError as e:
            unreadable(e)
            continue
        for name, seqs in sorted(logs.items()):
            problems.extend(_verify_log(current, name, seqs))
    return problems


def read_records(
    directory: str | os.PathLike[str], name: str = "wal"
) -> Iterator[tuple[RecordHandle, int, bytes]]:
    """(handle, record type, payload) of every record of the log `name` in
    `directory`, read without opening the log: no lock, no repair, nothing
    written (a torn tail is skipped, not truncated). Raises as opening the log
    would for anything else. For tools that inspect a log a job may be using."""
    directory = os.path.abspath(os.fspath(directory))

    def path_of(seq: int) -> str:
        return os.path.join(directory, f"{name}-{seq:020d}.wal")

    try:
        seqs = _logs_in(directory).get(name, [])
    except OSError as e:
        raise _storage_error(f"cannot list WAL directory {directory}: {_describe(e)}", e) from e
    bounds_path = os.path.join(directory, f"{name}.bounds")
    bounds = _read_bounds(bounds_path)
    named = _named_through(bounds)
    closed: dict[int, int] = {}
    if bounds is not None:
        problem = _bounds_problem(bounds, seqs, bounds_path, path_of)
        if problem is not None:
            raise problem
        seqs = [s for s in seqs if s >= bounds.first]
        closed = bounds.closed
    gap = _first_gap(seqs, path_of)
    if gap is not None:
        raise gap
    for seq in seqs:
        path = path_of(seq)
        try:
            f = open(path, "rb")
        except OSError as e:
            raise _storage_error(f"cannot open WAL segment {path}: {_describe(e)}", e) from e
        with f:
            check = _check_segment(f, path, seq, last=seq == seqs[-1], closed_size=closed.get(seq),
                                   max_record_bytes=None, named=seq <= named)
            if check.torn_header:
                continue
            offset = FILE_HEADER_SIZE
            f.seek(offset)
            while offset < check.valid:
                header = f.read(RECORD_HEADER_SIZE)
                record_type, length, _ = _parse_record_header(header, _MAX_LENGTH)
                yield RecordHandle(seq, offset, length), record_type, f.read(length)
                offset += RECORD_HEADER_SIZE + length


def _logs_in(directory: str) -> dict[str, list[int]]:
    """Log name -> its segment numbers (ascending), for every log with a
    segment or a bounds file in `directory`."""
    logs: dict[str, list[int]] = {}
    for entry in os.listdir(directory):
        if match := _ANY_SEGMENT_RE.fullmatch(entry):
            logs.setdefault(match.group(1), []).append(int(match.group(2)))
        elif entry.endswith(".bounds") and _NAME_RE.fullmatch(entry[: -len(".bounds")]):
            logs.setdefault(entry[: -len(".bounds")], [])
    return {name: sorted(seqs) for name, seqs in logs.items()}


def _verify_log(directory: str, name: str, seqs: list[int]) -> list[str]:
    def path_of(seq: int) -> str:
        return os.path.join(directory, f"{name}-{seq:020d}.wal")

    problems: list[str] = []
    closed: dict[int, int] = {}
    bounds_path = os.path.join(directory, f"{name}.bounds")
    # Every file the log opens must be a regular file (or absent, where the log
    # creates it): a directory in its place makes opening the log fail.
    odd = {}
    for path in [os.path.join(directory, f"{name}.lock"), bounds_path, *map(path_of, seqs)]:
        problem = _not_a_regular_file(path)
        if problem is not None:
            odd[path] = problem
            problems.append(problem)
    try:
        bounds = None if bounds_path in odd else _read_bounds(bounds_path)
    except StorageError as e:
        problems.append(str(e))
        bounds = None
    named = _named_through(bounds)
    if bounds is not None:
        problem = _bounds_problem(bounds, seqs, bounds_path, path_of)
        if problem is not None:
            problems.append(str(problem))
        seqs = [s for s in seqs if s >= bounds.first]
        closed = bounds.closed
    gap = _first_gap(seqs, path_of)
    if gap is not None:
        problems.append(str(gap))
    for seq in seqs:
        path = path_of(seq)
        if path in odd:
            continue
        try:
            with open(path, "rb") as f:
                _check_segment(f, path, seq, last=seq == seqs[-1], closed_size=closed.get(seq),
                               max_record_bytes=None, named=seq <= named)
        except StorageError as e:
            problems.append(str(e))
        except OSError as e:
            problems.append(f"cannot read WAL segment {path}: {_describe(e)}")
    return problems


def _not_a_regular_file(path: str) -> str | None:
    """Why `path` cannot be one of a log's files, or None (a regular file, or
    nothing there)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot inspect WAL file {path}: {_describe(e)}"
    if stat.S_ISREG(mode):
        return None
    what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    return (f"WAL file {path} is {what}: opening the log would fail. Remove what is in its place "
            "(a lock file is created again on open; a segment or bounds file must be restored)")


def _explain_header(head: bytes, seq: int) -> str:
    if len(head) < FILE_HEADER_SIZE:
        return f"file is {len(head)} bytes, shorter than the {FILE_HEADER_SIZE}-byte header"
    magic, version, _, number = _FILE_HEADER_BODY.unpack_from(head)
    if magic != FILE_MAGIC:
        return f"not a WAL segment (magic {magic!r})"
    if version != FORMAT_VERSION:
        return (
            f"format version {version}; this code reads version {FORMAT_VERSION}: "
            "open it with the ingest release that wrote it"
        )
    if crc32c(head[:20]) != _U32.unpack_from(head, 20)[0]:
        return "header CRC32C mismatch"
    return f"header says segment {number} but the file name says {seq} (renamed or copied?)"


def _check_int(option: str, value: object, low: int, high: int | None = None) -> None:
    if type(value) is not int or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"WAL option {option}={value!r} must be an integer {bound}")


def _check_seconds(option: str, value: object, *, allow_zero: bool) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not math.isnan(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"WAL option {option}={value!r} must be a {bound} number of seconds")
