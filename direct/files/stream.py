"""File-directory streams: no receiver; every batch is the list of files that
appeared in a directory since the previous one.

Planning batch `t` (on the driver): list the directory (and its
subdirectories with `recursive=True`), drop hidden and in-progress names and
those not matching `glob` (`direct.files.selection`), take the new files by
the rule of `direct.files.planner` (modification time with a remember window,
plus the durable list of files already taken), and cut large files into byte
ranges (`direct.files.splits`). The batch's position is that `FileList`; it
goes to the intent log before anything is read, so a re-run batch reads
exactly the same files and ranges. The resume point stored with each commit is
the planner's state (`FileWatermark`): across restarts every file is taken
exactly once.

Every batch lists the whole directory. A listing cannot start where the
previous one ended: S3 lists keys in name order and HDFS names in any order,
not by time, so starting after the newest name taken (S3's StartAfter) would
miss files whose names sort earlier (part-9 after part-10, or another
writer's names), and files moved in with an older modification time within
the remember window must still be found. Listing costs the same as the plain
client's own listing (10,000 S3 objects: ten pages, 4-13 s against moto on a
loaded 2-core machine, most of it the XML of the pages on both sides); the
planning on top is a few microseconds a file.

Reading (partition tasks): `direct.files.readers`.

Where files live: a local directory, or any `scheme://` URL a storage backend
is registered for (`ingest.storage.storage_for`: hdfs://, s3://), with that
backend's `storage_options` (endpoint, region, user, credentials); the stream
reads through `Storage.list_entries` and `Storage.open_read` only. The storage
object goes with the partition tasks (pickled for worker processes); remote
backends pickle without their live client and rebuild it there.
"""

from __future__ import annotations

import logging
import time
from operator import attrgetter
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterable, Mapping

from direct.files.planner import FilePlanner
from direct.files.readers import (
    ERROR_POLICIES,
    BinaryRecordsSource,
    FileStats,
    ReaderSource,
    SliceSource,
    TextSliceSource,
    STATS,
)
from direct.files.selection import FileSelection
from direct.files.splits import pack, slices_for
from ingest.dataset import Dataset, Partition
from ingest.dstream import InputDStream
from ingest.errors import ConfigError, SourceError, StorageError
from ingest.storage import FileEntry, Storage, storage_for
from offsets import FileList, FileWatermark, Position

if TYPE_CHECKING:
    from ingest.context import StreamingContext

log = logging.getLogger("direct.files")

DEFAULT_MIN_PARTITION_BYTES = 64 << 20
DEFAULT_REMEMBER_S = 60.0

Reader = Callable[[BinaryIO], Iterable[Any]]

_SIZE = attrgetter("size")  # read in C: planning touches every new file


class FileInputDStream(InputDStream[Any]):
    kind = "files"

    def __init__(
        self,
        ssc: "StreamingContext",
        directory: str,
        *,
        records: str,
        encoding: str = "utf-8",
        errors: str = "report",
        record_length: int | None = None,
        reader: Reader | None = None,
        glob: str | None = None,
        recursive: bool = False,
        new_files_only: bool = True,
        max_files_per_batch: int | None = None,
        remember: float = DEFAULT_REMEMBER_S,
        min_partition_bytes: int = DEFAULT_MIN_PARTITION_BYTES,
        storage_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(directory, str) or not directory:
            raise ConfigError(f"a file stream needs a directory (path or URL), got {directory!r}")
        if records not in ("text", "binary", "reader"):
            raise ConfigError(f"records must be 'text', 'binary' or 'reader', got {records!r}")
        if records == "text":
            try:
                newline = "\n".encode(encoding)
            except LookupError:
                raise ConfigError(f"file stream {directory}: unknown encoding {encoding!r}") from None
            if newline != b"\n":
                raise ConfigError(f"file stream {directory}: encoding {encoding!r} does not write a newline as the "
                                  "byte 0x0A; lines are split on it, so use an ASCII-compatible encoding (utf-8, "
                                  "latin-1, ...) or read the files with file_stream(reader=...)")
            if errors not in ERROR_POLICIES:
                raise ConfigError(f"file stream {directory}: errors must be one of {ERROR_POLICIES}, got {errors!r}")
        if records == "binary" and (isinstance(record_length, bool) or not isinstance(record_length, int)
                                    or record_length < 1):
            raise ConfigError(f"binary_records_stream({directory!r}): record_length must be a positive number of "
                              f"bytes, got {record_length!r}")
        if records == "reader" and not callable(reader):
            raise ConfigError(f"file_stream({directory!r}): reader must be a function of a binary file object "
                              f"returning an iterable of records, got {reader!r}")
        if glob is not None and (not isinstance(glob, str) or not glob):
            raise ConfigError(f"file stream {directory}: glob must be a non-empty pattern such as '*.csv', got "
                              f"{glob!r}")
        if max_files_per_batch is not None and (isinstance(max_files_per_batch, bool)
                                                or not isinstance(max_files_per_batch, int)
                                                or max_files_per_batch < 1):
            raise ConfigError(f"file stream {directory}: max_files_per_batch must be a positive integer or None, "
                              f"got {max_files_per_batch!r}")
        if isinstance(remember, bool) or not isinstance(remember, (int, float)) or not remember > 0:
            raise ConfigError(f"file stream {directory}: remember must be a positive number of seconds, got "
                              f"{remember!r}")
        if isinstance(min_partition_bytes, bool) or not isinstance(min_partition_bytes, int) \
                or min_partition_bytes < 1:
            raise ConfigError(f"file stream {directory}: min_partition_bytes must be a positive integer, got "
                              f"{min_partition_bytes!r}")
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise ConfigError(f"file stream {directory}: storage_options must be a mapping of backend options "
                              f"(endpoint_url, user, ...), got a {type(storage_options).__name__}")
        self.directory = directory
        # The options (credentials perhaps) go to the backend only: not kept
        # here, never logged, not in describe(), metrics() or the status. The
        # storage travels in partition tasks and rebuilds its client from them.
        # ConfigError for an unknown scheme or option.
        self.storage: Storage = storage_for(directory, storage_options, create=False)
        self.records_kind = records
        self.encoding, self.errors = encoding, errors
        self.record_length = record_length
        self.reader = reader
        self.selection = FileSelection(glob)
        self.recursive = bool(recursive)
        self.new_files_only = bool(new_files_only)
        self.max_files_per_batch = max_files_per_batch
        self.min_partition_bytes = min_partition_bytes
        super().__init__(ssc, name)
        self.planner = FilePlanner(int(remember * 1000))
        self.stats: FileStats = FileStats()
        STATS[self.name] = self.stats  # a new stream counts from zero
        self._restored = False
        self._since: FileWatermark | None = None  # what the first batch of a new job records it started from
        self._planned = {"files": 0, "bytes": 0}
        self._last_listing: dict[str, Any] = {}

    def describe(self) -> str:
        return f"file stream '{self.name}' ({self.storage.url}, {self.site})"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        entries = self._list(at_start=True)
        if self._restored:
            return
        if self.new_files_only:
            self.planner.take_files(entries)
            log.info("%s: %d file(s) already in the directory are skipped (new_files_only=True)",
                     self.describe(), len(entries))
        self._since = self.planner.state() if self.planner.watermark_ms is not None else None

    def _list(self, at_start: bool = False) -> list[FileEntry]:
        started = time.monotonic()
        try:
            listed = self.storage.list_entries("", self.recursive)
        except StorageError as exc:
            when = "cannot start" if at_start else "cannot plan a batch"
            raise SourceError(f"{self.describe()} {when}: {exc}") from exc
        entries = self.selection.filter(listed)
        self._last_listing = {"listed": len(listed), "eligible": len(entries),
                              "listing_ms": round((time.monotonic() - started) * 1000, 1)}
        return entries

    # -- batches ------------------------------------------------------------------------

    def plan(self, time_ms: int) -> FileList:
        entries = self._list()
        new = self.planner.new_files(entries, self.max_files_per_batch)
        align = {"text": 1, "binary": self.record_length, "reader": None}[self.records_kind]
        slices = slices_for(new, self.min_partition_bytes, align)
        self.planner.take_files(new)
        since, self._since = self._since, None
        self._planned["files"] += len(new)
        self._planned["bytes"] += sum(map(_SIZE, new))
        if self.planner.too_old:
            log.debug("%s: %d file(s) older than the remember window are ignored", self.describe(),
                      self.planner.too_old)
        return FileList(slices, since)

    def materialize(self, time_ms: int, position: Position) -> Dataset[Any]:
        slices = position.files if isinstance(position, FileList) else ()
        groups = pack(slices, self.min_partition_bytes, self.ssc.executor.parallelism)
        return Dataset([Partition(self._source(g)) for g in groups], self.ssc.executor)

    def _source(self, slices: Any) -> SliceSource:
        if self.records_kind == "text":
            return TextSliceSource(self.storage, self.name, slices, self.encoding, self.errors)
        if self.records_kind == "binary":
            return BinaryRecordsSource(self.storage, self.name, slices, self.record_length)  # type: ignore[arg-type]
        return ReaderSource(self.storage, self.name, slices, self.reader)  # type: ignore[arg-type]

    # -- resume points --------------------------------------------------------------------

    def next_position(self, position: Position) -> FileWatermark | None:
        """The planner's state with this batch's files taken (they already are,
        unless the batch was re-run from the intent log: taking is idempotent)."""
        if isinstance(position, FileList):
            self.planner.take_batch(position)
        return self.planner.state()

    def resume_point(self, committed: Position | None, pending: list[Position]) -> Position | None:
        """The newest commit's state with the files of every batch to re-run taken."""
        planner = FilePlanner(self.planner.remember_ms)
        known = False
        if isinstance(committed, FileWatermark):
            planner.restore(committed)
            known = True
        for planned in pending:
            if not isinstance(planned, FileList):
                continue
            if not known and planned.since is not None:
                planner.restore(planned.since)  # the files skipped when the job first started
            planner.take_batch(planned)
            known = True
        return planner.state() if known else None

    def restore(self, position: Position) -> None:
        if isinstance(position, FileWatermark):
            self.planner.restore(position)
        elif isinstance(position, FileList):  # a checkpoint without resume points: its newest plan
            if position.since is not None:
                self.planner.restore(position.since)
            self.planner.take_batch(position)
        else:
            return
        self._restored = True

    # -- status --------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.stats.snapshot())
        out.update(files_planned=self._planned["files"], bytes_planned=self._planned["bytes"],
                   files_remembered=self.planner.remembered(), watermark_ms=self.planner.watermark_ms,
                   files_too_old=self.planner.too_old, files_waiting=self.planner.backlog)
        out.update(self._last_listing)
        return out

    def health(self) -> dict[str, Any]:
        """For `ssc.status()["inputs"]`: the counts of `metrics()`, and
        `storage_waiting`: the call to the HDFS or S3 server (listing, reading,
        with its location) that has waited more than a second for an answer
        while the backend retries it, or None."""
        out = self.metrics()
        stalled = getattr(self.storage, "stalled", None)  # remote backends only
        out["storage_waiting"] = stalled() if callable(stalled) else None
        return out


def text_file_stream(ssc: "StreamingContext", directory: str, **options: Any) -> FileInputDStream:
    """Lines of the new text files in `directory` (see `StreamingContext.text_file_stream`)."""
    return FileInputDStream(ssc, directory, records="text", **options)


def binary_records_stream(ssc: "StreamingContext", directory: str, record_length: int,
                          **options: Any) -> FileInputDStream:
    """Fixed-length records of the new files in `directory`."""
    return FileInputDStream(ssc, directory, records="binary", record_length=record_length, **options)


def file_stream(ssc: "StreamingContext", directory: str, reader: Reader, **options: Any) -> FileInputDStream:
    """Records made by `reader(binary file object)` from each new file in `directory`."""
    return FileInputDStream(ssc, directory, records="reader", reader=reader, **options)
