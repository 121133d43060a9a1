"""Which new files a batch takes: the planning rule of file streams, as plain
logic over listings (no I/O here).

State (`FileWatermark`, stored in every commit as the resume point):
- the watermark: the newest modification time among the files taken;
- the files taken whose modification time is within `remember_ms` of it.

A listed file is new when its modification time is not older than
`watermark - remember_ms` and its path is not among those taken. New files are
taken oldest first (modification time, then path), at most `max_files` per
batch; the watermark only moves with files taken, so files left for a later
batch, or written while the job was down, are never skipped. A file moved in
with a modification time older than the window (`mv` keeps it) is ignored and
counted: the remember window must exceed the time between a file's last write
and its move into the directory, plus the clock skew between writers and the
storage.

A modification time later than the driver's clock counts as the driver's
clock for the watermark (the file is still taken): one file stamped in the
future (a skewed writer, a `touch -d 2100-01-01`) must not make the stream
ignore every file written until then.

Taking is idempotent (adding a batch's files twice changes nothing), so the
resume point after a restart is the newest commit's state with the files of
every batch to re-run added.
"""

from __future__ import annotations

import time
from operator import attrgetter, itemgetter
from typing import Any, Callable, Iterable, Sequence

from ingest.storage import FileEntry
from offsets import FileList, FileWatermark


# Keys read in C, returning objects the entries already hold: no Python call and no
# allocation per file (allocations wake the cyclic garbage collector on 10,000s of files).
_PATH, _MTIME = attrgetter("path"), attrgetter("mtime_ms")
_PAIR_PATH, _PAIR_MTIME = itemgetter(0), itemgetter(1)


class FilePlanner:
    def __init__(self, remember_ms: int, wall_clock_ms: Callable[[], int] | None = None) -> None:
        self.remember_ms = remember_ms
        self._now_ms = wall_clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.watermark_ms: int | None = None
        self._taken: dict[str, int] = {}
        self.too_old = 0
        """Files of the latest listing ignored as older than the window (and not taken)."""
        self.backlog = 0
        """New files of the latest listing left for later batches (max_files)."""

    @property
    def threshold_ms(self) -> int | None:
        return None if self.watermark_ms is None else self.watermark_ms - self.remember_ms

    def taken(self, path: str) -> bool:
        return path in self._taken

    def new_files(self, entries: Iterable[FileEntry], max_files: int | None = None) -> list[FileEntry]:
        """The files a batch takes from this listing (not yet marked taken)."""
        threshold = self.threshold_ms
        taken = self._taken
        # Comprehensions, not a loop with appends: this runs over every listed file.
        fresh = [e for e in entries if e.path not in taken] if taken else list(entries)
        too_old = 0
        if threshold is not None:
            recent = [e for e in fresh if e.mtime_ms >= threshold]
            too_old = len(fresh) - len(recent)
            fresh = recent
        # Oldest first, then by path: two stable sorts (by path: linear when the
        # listing came in path order, as storages list) instead of a tuple key per file.
        fresh.sort(key=_PATH)
        fresh.sort(key=_MTIME)
        self.too_old = too_old
        chosen = fresh if max_files is None else fresh[:max_files]
        self.backlog = len(fresh) - len(chosen)
        return chosen

    def take(self, files: Iterable[tuple[str, int]]) -> None:
        """Mark (path, mtime_ms) pairs as taken; moves the watermark and forgets
        files that fell out of the window."""
        self._take(list(files), _PAIR_PATH, _PAIR_MTIME)

    def take_files(self, files: Sequence[Any]) -> None:
        """`take` of files given as objects with `path` and `mtime_ms` (listed
        `FileEntry`s, planned `FileSlice`s), without building pairs."""
        self._take(files, _PATH, _MTIME)

    def take_batch(self, batch: FileList) -> None:
        self.take_files(batch.files)

    def _take(self, files: Sequence[Any], path_of: Callable[[Any], str], mtime_of: Callable[[Any], int]) -> None:
        """The watermark becomes the newest modification time taken, capped by
        the driver's clock (never moving back). Written with C-level dict, zip
        and max calls rather than a Python loop: a batch of a large directory
        takes 10,000s of files."""
        if not files:
            return
        # A path already taken keeps its first modification time: the new files
        # first (a path twice among them: its first one), then the old ones over them.
        incoming = dict(zip(map(path_of, reversed(files)), map(mtime_of, reversed(files))))
        taken = self._taken
        if len(incoming) >= len(taken):  # the old ones over the new, in C
            incoming.update(taken)
            self._taken = incoming
        else:  # a few files among many remembered: add the new ones in place
            for path, mtime in incoming.items():
                taken.setdefault(path, mtime)
        newest = self.watermark_ms
        top = max(map(mtime_of, files))
        if newest is None or top > newest:
            mark = min(top, self._now_ms())
            newest = mark if newest is None else max(newest, mark)
        if newest != self.watermark_ms:
            self.watermark_ms = newest
            threshold = newest - self.remember_ms  # type: ignore[operator]
            if min(self._taken.values()) < threshold:  # rebuild only when something falls out
                self._taken = {p: m for p, m in self._taken.items() if m >= threshold}

    def state(self) -> FileWatermark:
        return FileWatermark(self.watermark_ms, tuple(sorted(self._taken.items())))

    def restore(self, state: FileWatermark) -> None:
        self.watermark_ms = state.watermark_ms
        self._taken = dict(state.taken)

    def remembered(self) -> int:
        return len(self._taken)
