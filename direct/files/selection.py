"""Which listed files a file stream may take: not hidden, not in progress,
matching the stream's glob.

Hidden or in progress (never taken): a path with a component starting with
'.' or '_' (dot-files, `_temporary/` and `_SUCCESS` of other jobs' output),
and names ending with `._COPYING_` (what `hdfs dfs -put` writes before it
renames) or `.tmp`. Writers should write such a name elsewhere or under such
a name, then rename it into place: see the README on atomic moves.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from operator import attrgetter
from typing import Iterable, TypeVar

T = TypeVar("T")

IN_PROGRESS_SUFFIXES = ("._COPYING_", ".tmp")

_PATH = attrgetter("path")


def is_hidden_or_in_progress(path: str) -> bool:
    # A component starts with '.' or '_' iff the path does or has "/." or "/_"
    # (string tests, not a split: this runs for every file of every listing).
    return (path.startswith((".", "_")) or "/." in path or "/_" in path
            or path.endswith(IN_PROGRESS_SUFFIXES))


@dataclass(frozen=True)
class FileSelection:
    """`glob`: a shell pattern matched against the path relative to the
    stream's directory (`*` also matches '/', so "*.csv" matches files in
    subdirectories when `recursive`); None takes every file."""

    glob: str | None = None

    def accepts(self, path: str) -> bool:
        if is_hidden_or_in_progress(path):
            return False
        return self.glob is None or fnmatch.fnmatchcase(path, self.glob)

    def filter(self, entries: Iterable[T]) -> list[T]:
        """The entries (anything with a `path`) that `accepts`, in order: one
        pass, and the glob only when there is one (this runs over every file
        of every listing)."""
        entries = list(entries)
        if _may_hide_some("\0".join(map(_PATH, entries))):
            hidden = is_hidden_or_in_progress
            kept = [e for e in entries if not hidden(e.path)]  # type: ignore[attr-defined]
        else:
            kept = entries
        if self.glob is None:
            return kept
        pattern = self.glob
        return [e for e in kept if fnmatch.fnmatchcase(e.path, pattern)]  # type: ignore[attr-defined]


def _may_hide_some(joined: str) -> bool:
    """False only when no path of `joined` (paths separated by NUL) is hidden
    or in progress: each rule of `is_hidden_or_in_progress` leaves a mark in
    the joined text ('.' or '_' after a separator or a '/', a suffix before a
    separator), whatever the paths hold. A few searches over one string
    instead of four string tests per file; True (a mark, perhaps a false one)
    sends the listing through the per-file test, which decides."""
    joined = "\0" + joined + "\0"
    return ("\0." in joined or "\0_" in joined or "/." in joined or "/_" in joined
            or any(suffix + "\0" in joined for suffix in IN_PROGRESS_SUFFIXES))
