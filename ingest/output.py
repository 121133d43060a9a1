"""Output operations: the end of every path through the graph.

An output operation runs once per batch, in registration order, after the
batch's inputs are planned and logged. A batch commits only when all of its
output operations returned without error.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from typing import TYPE_CHECKING, Any, Callable

from ingest.listener import format_batch_time
from ingest.storage import fsync_dir

if TYPE_CHECKING:
    from ingest.batch import Batch
    from ingest.dstream import DStream


class OutputOperation:
    def __init__(self, stream: "DStream[Any]", fn: Callable[["Batch[Any]"], None], name: str) -> None:
        from ingest.dstream import creation_site

        self.stream = stream
        self.fn = fn
        self.name = name
        self.site = creation_site()
        self.id = stream.ssc._graph.add_output(self)

    def describe(self) -> str:
        return f"{self.name} at {self.site}"

    def __repr__(self) -> str:
        return f"<OutputOperation #{self.id} {self.describe()}>"


def pprint_batch(batch: "Batch[Any]", num: int) -> None:
    head = batch.take(num + 1)
    lines = [
        "-------------------------------------------",
        f"Time: {format_batch_time(batch.time)}",
        "-------------------------------------------",
    ]
    lines.extend(str(record) for record in head[:num])
    if len(head) > num:
        lines.append("...")
    lines.append("")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


class TextFilesWriter:
    """Writes each batch as `prefix-<time>[.suffix]/part-NNNNN` plus `_SUCCESS`.

    The directory is built under a temporary name and renamed into place, so a
    reader sees either no directory or a complete one. A batch that is re-run
    after a crash replaces its directory, which makes the output idempotent."""

    def __init__(self, prefix: str, suffix: str | None) -> None:
        self.prefix = prefix
        self.suffix = suffix

    def directory(self, time_ms: int) -> str:
        name = f"{self.prefix}-{time_ms}"
        return f"{name}.{self.suffix}" if self.suffix else name

    def __call__(self, batch: "Batch[Any]") -> None:
        final = os.path.abspath(self.directory(batch.time))
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}")
        os.makedirs(tmp)
        try:
            for i, records in enumerate(batch.partitions()):
                path = os.path.join(tmp, f"part-{i:05d}")
                with open(path, "w", encoding="utf-8") as f:
                    for record in records:
                        f.write(f"{record}\n")
                    f.flush()
                    os.fsync(f.fileno())
            with open(os.path.join(tmp, "_SUCCESS"), "w") as f:
                os.fsync(f.fileno())
            fsync_dir(tmp)
            if os.path.exists(final):
                old = f"{tmp}.old"
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)
            fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
