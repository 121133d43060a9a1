"""`SqlSink`: exactly-once output to a SQL database over DB-API.

For each batch, in ONE transaction:
1. decide whether the batch was already applied before a crash, by the rule
   of `ingest.sinks.applied` (shared with the other exactly-once sinks): its
   non-empty Kafka ranges are covered by the stored next offsets, or, for a
   batch without any (only empty ranges, or no Kafka input), the stored batch
   time is not older than its own;
2. call `write(cursor, batch)`, your code, which inserts the results;
3. store the batch time and, for every Kafka offset range of the batch, the
   next offset to read (see `ingest.sinks.sql_tables` for the tables and their
   format version);
4. commit.

Because results and positions commit together, a batch re-run after a crash
is either skipped (its transaction committed) or written once (it did not).
Pass the sink as `offset_store=` to `kafka_direct_stream` and a job started
without a checkpoint resumes from the offsets in the database.

The sink's rows are keyed by its identity: `name=`, else the qualified name of
`write` (`module.qualname`); see `ingest.sinks.identity`. Concurrent writers
with the same identity (a zombie of an earlier run, a second instance by
mistake) cannot both write a batch: every write ends with an update of the
sink's row that succeeds only if the row's version is still the one read at
the start (optimistic locking); the loser rolls back and re-checks, and then
finds the batch applied.

SQLite (`sqlite3`) and PostgreSQL (psycopg 3 or psycopg2) are tested; other
DB-API drivers work if they support `INSERT ... ON CONFLICT`. The sink connects
lazily, in the first thread that uses it (the batch scheduler's); with sqlite3,
pass `check_same_thread=False` if you also call it from other threads.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from ingest.errors import ConfigError, SourceError
from ingest.sinks.applied import Evidence, Stored, already_applied, evidence_of
from ingest.sinks.identity import check_name, name_of_function
from ingest.sinks.sql_tables import SinkTables
from offsets import KafkaRanges

if TYPE_CHECKING:
    from ingest.batch import Batch

log = logging.getLogger("ingest.sinks.sql")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_IN_CHUNK = 200  # placeholders per `IN (...)` query


class SqlSink:
    tracks_items = False
    """Whether received block ids and Flume sequence numbers are evidence (`DedupeSink`)."""

    def __init__(self, connect: Callable[[], Any], write: Callable[[Any, "Batch[Any]"], None], *,
                 name: str | None = None, table_prefix: str = "ingest_", paramstyle: str | None = None) -> None:
        """connect: returns a new DB-API connection (called once, lazily).
        write: `write(cursor, batch)` inserts the batch's results; it must not commit.
        name: this sink's identity, which keys its rows; default: `write`'s
        `module.qualname`. Two sinks of a job cannot share one."""
        kind = type(self).__name__
        if not callable(connect) or not callable(write):
            raise ConfigError(f"{kind}(connect, write): both must be callables")
        if not _IDENT.match(table_prefix) and table_prefix != "":
            raise ConfigError(f"{kind}: table_prefix {table_prefix!r} must be letters, digits and '_'")
        if paramstyle not in (None, "qmark", "format", "pyformat", "numeric"):
            raise ConfigError(f"{kind}: unsupported paramstyle {paramstyle!r}: use qmark, format, pyformat or numeric")
        self._derived_name = name is None
        self.name = name_of_function(write, kind) if name is None else check_name(name, kind)
        self._connect = connect
        self._write = write
        self._paramstyle = paramstyle
        self._tables = SinkTables(table_prefix)
        self._conn: Any = None
        self._lock = threading.Lock()
        self.batches_written = 0
        self.batches_skipped = 0

    @property
    def sink_id(self) -> str:
        return self.name

    @property
    def sink_claims(self) -> tuple[str, ...]:
        return (f"the sink identity {self.name!r}",)

    # -- connection and SQL ----------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            if self._paramstyle is None:
                module = importlib.import_module(type(conn).__module__.split(".")[0])
                self._paramstyle = getattr(module, "paramstyle", "qmark")
            try:
                self._tables.prepare(conn, self._q, self.name, self._derived_name)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _integrity_errors(self, conn: Any) -> tuple[type[BaseException], ...]:
        module = importlib.import_module(type(conn).__module__.split(".")[0])
        error = getattr(module, "IntegrityError", None) or getattr(conn, "IntegrityError", None)
        return (error,) if isinstance(error, type) else ()

    def _run(self, fn: Any) -> Any:
        """Run `fn(conn, cursor)` in a transaction; a failure rolls back, and a
        connection that cannot even roll back is dropped and made anew next time."""
        conn = self._connection()
        try:
            cur = conn.cursor()
            return fn(conn, cur)
        except BaseException:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - the connection is broken
                self._drop_connection()
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _q(self, sql: str) -> str:
        """Write SQL with '?' placeholders; adapt to the driver's paramstyle."""
        if self._paramstyle in ("format", "pyformat"):
            return sql.replace("?", "%s")
        if self._paramstyle == "numeric":
            parts = sql.split("?")
            return "".join(p + (f":{i + 1}" if i < len(parts) - 1 else "") for i, p in enumerate(parts))
        return sql

    # -- the offset store ------------------------------------------------------------------

    def load_offsets(self, stream: str) -> Mapping[tuple[str, int], int]:
        """Next offsets to read for `stream`, as written with the last batch."""
        def read(conn: Any, cur: Any) -> Any:
            cur.execute(self._q(f"SELECT topic, part, next_offset FROM {self._tables.offsets} "
                                "WHERE sink = ? AND stream = ?"), (self.name, stream))
            rows = cur.fetchall()
            conn.commit()
            return rows

        with self._lock:
            rows = self._run(read)
        return {(t, int(p)): int(o) for t, p, o in rows}

    def last_batch_time(self) -> int | None:
        def read(conn: Any, cur: Any) -> Any:
            cur.execute(self._q(f"SELECT batch_time FROM {self._tables.batches} WHERE sink = ?"), (self.name,))
            row = cur.fetchone()
            conn.commit()
            return row

        with self._lock:
            row = self._run(read)
        return None if row is None else int(row[0])

    # -- the output operation ----------------------------------------------------------------

    def __call__(self, batch: "Batch[Any]") -> None:
        with self._lock:
            for _attempt in range(10):
                if self._run(lambda conn, cur: self._write_batch(conn, cur, batch)):
                    return
                log.info("sink %s: another writer changed the sink's row during batch %s; checking again",
                         self.name, batch.id)
            raise SourceError(f"sink {self.name}: batch {batch.id} kept conflicting with another writer of the "
                              "same sink name; give each job its own sink name")

    def _write_batch(self, conn: Any, cur: Any, batch: "Batch[Any]") -> bool:
        """One attempt; False when another writer got in between (rolled back)."""
        cur.execute(self._q(f"SELECT batch_time, version FROM {self._tables.batches} WHERE sink = ?"), (self.name,))
        row = cur.fetchone()
        evidence = evidence_of(batch, items=self.tracks_items)
        stored = Stored(None if row is None else int(row[0]), self._stored_offsets(cur, evidence),
                        self._stored_items(cur, evidence))
        if already_applied(self.name, batch.time, evidence, stored, store=f"table {self._tables.prefix}*"):
            conn.rollback()
            self.batches_skipped += 1
            log.info("sink %s: batch %s was already applied; skipped", self.name, batch.id)
            return True
        self._write(cur, batch)
        for stream, position in batch.positions.items():
            if not isinstance(position, KafkaRanges):
                continue
            for r in position.ranges:
                cur.execute(self._q(
                    f"INSERT INTO {self._tables.offsets} (sink, stream, topic, part, next_offset) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, stream, topic, part) "
                    "DO UPDATE SET next_offset = excluded.next_offset"),
                    (self.name, stream, r.topic, r.partition, r.until_offset))
        self._store_items(cur, batch, evidence.items)
        # Never move the stored time back: a batch older than it (written because
        # its positions were new) must not make newer batches look unwritten.
        batch_time = batch.time if stored.batch_time is None else max(stored.batch_time, batch.time)
        # Last, and conditional: only if nobody wrote since we read the row.
        if row is None:
            try:
                cur.execute(self._q(f"INSERT INTO {self._tables.batches} (sink, batch_time, version) "
                                    "VALUES (?, ?, 1)"), (self.name, batch_time))
            except self._integrity_errors(conn):
                conn.rollback()
                return False
        else:
            cur.execute(self._q(f"UPDATE {self._tables.batches} SET batch_time = ?, version = version + 1 "
                                "WHERE sink = ? AND version = ?"), (batch_time, self.name, int(row[1])))
            if cur.rowcount != 1:
                conn.rollback()
                return False
        conn.commit()
        self.batches_written += 1
        return True

    def _stored_offsets(self, cur: Any, evidence: Evidence) -> dict[tuple[str, str, int], int]:
        if not evidence.ranges:
            return {}
        cur.execute(self._q(f"SELECT stream, topic, part, next_offset FROM {self._tables.offsets} WHERE sink = ?"),
                    (self.name,))
        return {(s, t, int(p)): int(o) for s, t, p, o in cur.fetchall()}

    def _stored_items(self, cur: Any, evidence: Evidence) -> frozenset[str]:
        found: set[str] = set()
        items = list(evidence.items)
        for i in range(0, len(items), _IN_CHUNK):
            chunk = items[i:i + _IN_CHUNK]
            cur.execute(self._q(f"SELECT item FROM {self._tables.applied} WHERE sink = ? AND item IN "
                                f"({', '.join('?' * len(chunk))})"), (self.name, *chunk))
            found.update(str(r[0]) for r in cur.fetchall())
        return frozenset(found)

    def _store_items(self, cur: Any, batch: "Batch[Any]", items: Iterable[str]) -> None:
        """Only `DedupeSink` has items; see there."""

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


__all__ = ["SqlSink"]
