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
from typing import Iterable, TypeVar

T = TypeVar("T")

IN_PROGRESS_SUFFIXES = ("._COPYING_", ".tmp")


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
        of every listing). The hidden test is `is_hidden_or_in_progress`
        written inline: a function call per file costs as much as the test."""
        suffixes = IN_PROGRESS_SUFFIXES
        kept = [e for e in entries
                if not (e.path.startswith((".", "_")) or "/." in e.path or "/_" in e.path  # type: ignore[attr-defined]
                        or e.path.endswith(suffixes))]  # type: ignore[attr-defined]
        if self.glob is None:
            return kept
        pattern = self.glob
        return [e for e in kept if fnmatch.fnmatchcase(e.path, pattern)]  # type: ignore[attr-defined]
