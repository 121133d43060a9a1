"""`DedupeSink`: exactly-once output of receiver streams, deduplicated by block id.

A receiver stream's batch is a set of received blocks (`ReceivedBlocks` in
`batch.positions`), a Flume polling stream's a set of agent batches
(`SequenceNumbers`). `DedupeSink` is a `SqlSink` that also stores, in the
transaction that writes a batch's results, the id of every block (and every
Flume `source#sequence`) the batch holds, in `<prefix>applied`. When a batch
runs again (a retry, or a re-run after a crash, which holds the same blocks),
those ids are found and the batch is skipped: nothing is written twice.

The decision is the shared rule of `ingest.sinks.applied`: the block ids are
evidence like Kafka ranges; a batch whose evidence is all applied is skipped,
one with none applied is written, and one with some of each (its blocks were
allocated differently after the batch's plan was lost) is refused with a
`SourceError` naming them, because a batch's results cannot be split by block.
A batch without blocks (nothing received) falls back to the batch time.

Ids are kept for `retention_s` seconds of batch time behind the newest batch
written (default one day), then deleted in a later write's transaction: a
re-run batch is never older than the batches a restart re-runs, so the window
only has to cover the longest outage you want to survive without duplicates.

Usage, with the write-ahead log on so that received blocks survive a crash:

    sink = DedupeSink(lambda: sqlite3.connect("out.db"), write=insert_rows, name="lines")
    ssc.socket_text_stream(host, port).foreach_batch(sink)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from ingest.errors import ConfigError
from ingest.sinks.sql import SqlSink

if TYPE_CHECKING:
    from ingest.batch import Batch

_MAX_ITEM = 500  # the width of the `item` column


class DedupeSink(SqlSink):
    tracks_items = True

    def __init__(self, connect: Callable[[], Any], write: Callable[[Any, "Batch[Any]"], None], *,
                 name: str | None = None, table_prefix: str = "ingest_", paramstyle: str | None = None,
                 retention_s: float = 86_400.0) -> None:
        """As `SqlSink`; retention_s: how long (in batch time) block ids are kept."""
        if not isinstance(retention_s, (int, float)) or retention_s <= 0:
            raise ConfigError(f"DedupeSink: retention_s must be a positive number of seconds, got {retention_s!r}")
        super().__init__(connect, write, name=name, table_prefix=table_prefix, paramstyle=paramstyle)
        self.retention_ms = int(retention_s * 1000)

    def _store_items(self, cur: Any, batch: "Batch[Any]", items: Iterable[str]) -> None:
        rows = [(self.name, item, batch.time) for item in items]
        for _sink, item, _t in rows:
            if len(item) > _MAX_ITEM:
                raise ConfigError(f"sink {self.name}: batch {batch.id}: the key {item[:80]!r}... is longer than "
                                  f"{_MAX_ITEM} characters; block ids and Flume sequence numbers must be shorter")
        if rows:
            cur.executemany(self._q(f"INSERT INTO {self._tables.applied} (sink, item, batch_time) VALUES (?, ?, ?)"),
                            rows)
        cur.execute(self._q(f"DELETE FROM {self._tables.applied} WHERE sink = ? AND batch_time < ?"),
                    (self.name, batch.time - self.retention_ms))


__all__ = ["DedupeSink"]
