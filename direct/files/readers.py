"""Partition sources of file streams: read a partition's file slices into
records, on whatever worker runs the task.

Every read is checked against the size the file had when the batch was
planned (the size is in the plan): a file that has grown or shrunk since is a
`FileChangedError` naming it, so a batch never holds part of a file that was
still being written (writers must move complete files in; see the README).
On local disk the open file's modification time is compared too, so a file rewritten to its planned size is caught as well;
on other backends only the size is, and moving files in atomically is what
rules such rewrites out.

A file deleted between listing and reading is skipped, logged and counted
(`files_deleted` in `stream.metrics()` and `ssc.status()["inputs"]`). A text
file's slices are read by separate tasks: one deleted while they run yields
the slices read before, and is counted and logged.

Counts are per stream in this process (tasks run in a process pool count in
their workers, as the Kafka stream's decode errors do).
"""

from __future__ import annotations

import io
import logging
import os
from typing import Any, BinaryIO, Callable, Iterable, Sequence

from ingest.errors import SourceError
from ingest.input_stats import Counters
from ingest.storage import LocalStorage, Storage
from offsets import FileSlice

log = logging.getLogger("direct.files")

ERROR_POLICIES = ("report", "replace", "strict")
_TAIL_CHUNK = 1 << 16


class FileChangedError(SourceError):
    """A file's size differs from the size it had when its batch was planned."""


class FileStats(Counters):
    """Counts of one file stream in this process."""

    def __init__(self) -> None:
        super().__init__("files_read", "bytes_read", "files_deleted", "lines_undecodable")


STATS: dict[str, FileStats] = {}


def stats_of(stream: str) -> FileStats:
    stats = STATS.get(stream)
    if stats is None:
        stats = STATS.setdefault(stream, FileStats())
    return stats


class SliceSource:
    """One partition: file slices read in order into one list of records."""

    def __init__(self, storage: Storage, stream: str, slices: Sequence[FileSlice]) -> None:
        self.storage, self.stream, self.slices = storage, stream, tuple(slices)

    def read(self) -> list[Any]:
        out: list[Any] = []
        stats = stats_of(self.stream)
        files = size = 0  # added to the shared counts once per partition, not per file
        try:
            for s in self.slices:
                try:
                    size += self.read_slice(s, out)
                except FileNotFoundError:
                    stats.add("files_deleted")
                    log.warning("file stream %s: %s was deleted after it was listed; skipped (counted as "
                                "files_deleted)", self.stream, self.storage.describe(s.path))
                    continue
                if s.start == 0:
                    files += 1
        finally:
            stats.add("bytes_read", size)
            stats.add("files_read", files)
        return out

    def read_slice(self, s: FileSlice, out: list[Any]) -> int:
        """Append the slice's records to `out`; returns the bytes read."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------

    def whole(self, s: FileSlice) -> bool:
        return s.start == 0 and (s.end is None or s.end == s.size)

    def read_whole(self, s: FileSlice) -> bytes:
        """The whole file, checked against its planned size in the same read."""
        with self.storage.open_read(s.path) as f:
            data = read_up_to(f, s.size + 1)
            modified = self.mtime_ms(f)
        if len(data) != s.size:
            raise self.changed(s, "more than" if len(data) > s.size else f"only {len(data)}")
        if modified is not None and modified != s.mtime_ms:
            raise self.changed(s, f"modified at {modified} ms, with")
        return data

    def check_size(self, s: FileSlice) -> None:
        """Raise `FileChangedError` unless the file still has exactly its planned size."""
        at = max(0, s.size - 1)
        with self.storage.open_read(s.path, at) as f:
            tail = read_up_to(f, 2)
            modified = self.mtime_ms(f)
        expected = 1 if s.size else 0
        if len(tail) != expected:
            raise self.changed(s, "more than" if len(tail) > expected else "fewer than")
        if modified is not None and modified != s.mtime_ms:
            raise self.changed(s, f"modified at {modified} ms, with")

    def mtime_ms(self, f: BinaryIO) -> int | None:
        """The open file's modification time on local disk (other backends: None)."""
        if not isinstance(self.storage, LocalStorage):
            return None
        try:
            return os.fstat(f.fileno()).st_mtime_ns // 1_000_000
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both OSError and ValueError
            return None

    def changed(self, s: FileSlice, found: str) -> FileChangedError:
        return FileChangedError(
            f"file stream {self.stream}: {self.storage.describe(s.path)} changed after it was planned: it had "
            f"{s.size} bytes (modified at {s.mtime_ms} ms), now {found} {s.size} bytes. A file must be complete "
            "when it appears in the directory: write it elsewhere (or under a name starting with '.' or '_', or "
            "ending with .tmp) and rename it into place. To go on, restore the file as it was, or remove it "
            "(the batch then skips it as deleted)")


def read_up_to(f: BinaryIO, n: int) -> bytes:
    """`n` bytes, fewer only at the end of the file: a backend's stream (an
    HTTP response body) may return less per call than asked. A buffered
    reader (what every backend's `open_read` returns) already reads on to `n`
    bytes or the end, so it gets one call: asking again would cost a read per
    file that can only return nothing."""
    if isinstance(f, io.BufferedReader):
        return f.read(n)
    first = f.read(n)
    if len(first) >= n or not first:
        return first
    parts, got = [first], len(first)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class TextSliceSource(SliceSource):
    """Lines of text. A line belongs to the slice it starts in: a slice that
    does not start at 0 skips the line in progress at its start (the previous
    slice reads it to its end), and reads on past its end to finish its own
    last line. `\\n` ends a line, and a `\\r` before it is dropped."""

    def __init__(self, storage: Storage, stream: str, slices: Sequence[FileSlice], encoding: str,
                 errors: str) -> None:
        super().__init__(storage, stream, slices)
        self.encoding, self.errors = encoding, errors

    def read_slice(self, s: FileSlice, out: list[Any]) -> int:
        if self.whole(s):
            body = self.read_whole(s)
            self.decode_into(s, body, 0, out)
            return len(body)
        body, first = self.owned_bytes(s)
        self.check_size(s)
        self.decode_into(s, body, first, out)
        return len(body)

    def owned_bytes(self, s: FileSlice) -> tuple[bytes, int]:
        """The bytes of the lines that start in [s.start, s.end), and where they start."""
        end = s.size if s.end is None else s.end
        base = s.start - 1 if s.start > 0 else 0
        with self.storage.open_read(s.path, base, s.size) as f:
            data = read_up_to(f, end - base)
            if len(data) != end - base:
                raise self.changed(s, f"only {base + len(data)}")
            skip = 0
            if s.start > 0:
                if data[:1] != b"\n":
                    nl = data.find(b"\n", 1)
                    if nl < 0:
                        return b"", end  # the line in progress at the start runs past the end: not ours
                    skip = nl + 1
                else:
                    skip = 1
            body = data[skip:] if skip else data
            if body and not body.endswith(b"\n") and end < s.size:
                parts = [body]
                while True:  # finish the last line, which started before the end
                    chunk = f.read(_TAIL_CHUNK)
                    if not chunk:
                        break
                    nl = chunk.find(b"\n")
                    if nl >= 0:
                        parts.append(chunk[: nl + 1])
                        break
                    parts.append(chunk)
                body = b"".join(parts)
        return body, base + skip

    def decode_into(self, s: FileSlice, body: bytes, first: int, out: list[Any]) -> None:
        if not body:
            return
        if self.errors == "replace":
            text = body.decode(self.encoding, "replace")
        else:
            try:
                text = body.decode(self.encoding)
            except UnicodeDecodeError:
                self.decode_lines_one_by_one(s, body, first, out)
                return
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        if "\r" in text:
            lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
        out.extend(lines)

    def decode_lines_one_by_one(self, s: FileSlice, body: bytes, first: int, out: list[Any]) -> None:
        raw = body.split(b"\n")
        if raw[-1] == b"":
            raw.pop()
        offset = first
        bad = 0
        for line in raw:
            try:
                text = line.decode(self.encoding)
            except UnicodeDecodeError as exc:
                if self.errors == "strict":
                    raise SourceError(
                        f"file stream {self.stream}: the line at byte {offset} of {self.storage.describe(s.path)} "
                        f"is not valid {self.encoding} ({exc.reason} at byte {offset + exc.start}); "
                        "errors='report' skips such lines, errors='replace' keeps them with U+FFFD") from None
                if bad == 0:
                    log.warning("file stream %s: skipped the line at byte %d of %s: not valid %s (%s); further "
                                "bad lines of this file are only counted (lines_undecodable)", self.stream, offset,
                                self.storage.describe(s.path), self.encoding, exc.reason)
                bad += 1
            else:
                out.append(text[:-1] if text.endswith("\r") else text)
            offset += len(line) + 1
        if bad:
            stats_of(self.stream).add("lines_undecodable", bad)


class BinaryRecordsSource(SliceSource):
    """Fixed-length records; slices are cut at record boundaries."""

    def __init__(self, storage: Storage, stream: str, slices: Sequence[FileSlice], record_length: int) -> None:
        super().__init__(storage, stream, slices)
        self.record_length = record_length

    def read_slice(self, s: FileSlice, out: list[Any]) -> int:
        n = self.record_length
        if s.size % n:
            raise SourceError(
                f"file stream {self.stream}: {self.storage.describe(s.path)} has {s.size} bytes, not a multiple of "
                f"the record length {n}: it is not a file of {n}-byte records (or it was cut short); remove it "
                "or fix record_length")
        if self.whole(s):
            data = self.read_whole(s)
        else:
            end = s.size if s.end is None else s.end
            with self.storage.open_read(s.path, s.start, end) as f:
                data = read_up_to(f, end - s.start)
            if len(data) != end - s.start:
                raise self.changed(s, f"only {s.start + len(data)}")
            self.check_size(s)
        out.extend(data[i:i + n] for i in range(0, len(data), n))
        return len(data)


class ReaderSource(SliceSource):
    """Records made by the user's `reader(binary file object)` from whole files."""

    def __init__(self, storage: Storage, stream: str, slices: Sequence[FileSlice],
                 reader: Callable[[BinaryIO], Iterable[Any]]) -> None:
        super().__init__(storage, stream, slices)
        self.reader = reader

    def read_slice(self, s: FileSlice, out: list[Any]) -> int:
        with self.storage.open_read(s.path) as f:
            try:
                records = list(self.reader(f))
            except (SourceError, FileNotFoundError):
                raise
            except Exception as exc:  # noqa: BLE001 - named with its file
                raise SourceError(f"file stream {self.stream}: the reader failed on "
                                  f"{self.storage.describe(s.path)}: {type(exc).__name__}: {exc}") from exc
        self.check_size(s)
        out.extend(records)
        return s.size
