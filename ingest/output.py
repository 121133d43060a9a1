"""Output operations: the end of every path through the graph.

An output operation runs once per batch, in registration order, after the
batch's inputs are planned and logged. A batch commits only when all of its
output operations returned without error.

Registration refuses what would break an exactly-once sink (an object with
`sink_id` and `sink_claims`, see `ingest.sinks.identity`): the same sink
instance registered twice (both operations would share one stored state and
the second would skip every batch as already written), and two sinks with a
claim in common (one identity, one Kafka transactional id or group).
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from typing import TYPE_CHECKING, Any, Callable

from ingest.errors import ConfigError
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
        check_registration(stream.ssc._graph.outputs, fn)
        self.id = stream.ssc._graph.add_output(self)

    def describe(self) -> str:
        return f"{self.name} at {self.site}"

    def __repr__(self) -> str:
        return f"<OutputOperation #{self.id} {self.describe()}>"


def check_registration(registered: "list[OutputOperation]", fn: Any) -> None:
    """Refuse `fn` if it is a sink already registered, or one whose claims
    (identity, transactional id, ...) another registered sink holds. Plain
    functions store nothing and may be registered any number of times."""
    if not isinstance(getattr(fn, "sink_id", None), str):
        return
    for op in registered:
        if op.fn is fn:
            raise ConfigError(
                f"{_sink_label(fn)} is already registered as output operation #{op.id} ({op.describe()}); "
                "a sink instance can be registered once: create one sink per output operation, each with its "
                "own name=")
    claims = _claims(fn)
    for op in registered:
        common = sorted(claims & _claims(op.fn))
        if common:
            raise ConfigError(
                f"{_sink_label(fn)} and {_sink_label(op.fn)} (output operation #{op.id}, {op.describe()}) both "
                f"claim {common[0]}: their stored positions would mix and one would skip the other's batches. "
                "Give each sink its own name= (and a Kafka sink its own transactional_id and group_id)")


def _claims(fn: Any) -> set[str]:
    claims = getattr(fn, "sink_claims", None)
    return set(claims) if isinstance(claims, (tuple, list, set, frozenset)) else set()


def _sink_label(fn: Any) -> str:
    sink_id = getattr(fn, "sink_id", None)
    return f"sink {sink_id!r} ({type(fn).__name__})" if isinstance(sink_id, str) else repr(fn)


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
