"""`SqlSink`: exactly-once output to a SQL database over DB-API.

For each batch, in ONE transaction:
1. decide whether the batch was already written before a crash: a batch with
   Kafka offset ranges was written when the stored next offsets already cover
   its ranges (positions are what identify data, whatever the batch times); any
   other batch was written when the stored batch time is not older;
2. call `write(cursor, batch)`, your code, which inserts the results;
3. store the batch time and, for every Kafka offset range of the batch, the
   next offset to read (rows in `<prefix>offsets`);
4. commit.

Because results and positions commit together, a batch re-run after a crash
is either skipped (its transaction committed) or written once (it did not).
Pass the sink as `offset_store=` to `kafka_direct_stream` and a job started
without a checkpoint resumes from the offsets in the database.

Concurrent writers with the same sink name (a zombie of an earlier run, a
second instance by mistake) cannot both write a batch: every write ends with an
update of the sink's row that succeeds only if the row's version is still the
one read at the start (optimistic locking); the loser rolls back and re-checks,
and then finds the batch written.

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
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ConfigError, SourceError
from offsets import OffsetRange, offset_ranges_of

if TYPE_CHECKING:
    from ingest.batch import Batch

log = logging.getLogger("ingest.sinks.sql")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


class SqlSink:
    def __init__(self, connect: Callable[[], Any], write: Callable[[Any, "Batch[Any]"], None], *,
                 name: str = "sql", table_prefix: str = "ingest_", paramstyle: str | None = None) -> None:
        """connect: returns a new DB-API connection (called once, lazily).
        write: `write(cursor, batch)` inserts the batch's results; it must not commit.
        name: identifies this sink's rows; two sinks on one database need different names."""
        if not callable(connect) or not callable(write):
            raise ConfigError("SqlSink(connect, write): both must be callables")
        if not _IDENT.match(table_prefix) and table_prefix != "":
            raise ConfigError(f"table_prefix {table_prefix!r} must be letters, digits and '_'")
        if paramstyle not in (None, "qmark", "format", "pyformat", "numeric"):
            raise ConfigError(f"unsupported paramstyle {paramstyle!r}: use qmark, format, pyformat or numeric")
        self.name = name
        self._connect = connect
        self._write = write
        self._paramstyle = paramstyle
        self._offsets = f"{table_prefix}offsets"
        self._batches = f"{table_prefix}batches"
        self._conn: Any = None
        self._lock = threading.Lock()
        self.batches_written = 0
        self.batches_skipped = 0

    # -- connection and SQL ----------------------------------------------------------

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self._connect()
            if self._paramstyle is None:
                module = importlib.import_module(type(conn).__module__.split(".")[0])
                self._paramstyle = getattr(module, "paramstyle", "qmark")
            try:
                self._create_table(conn, f"CREATE TABLE IF NOT EXISTS {self._offsets} (sink VARCHAR(200) NOT NULL, "
                                   "stream VARCHAR(200) NOT NULL, topic VARCHAR(300) NOT NULL, part INTEGER NOT "
                                   "NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (sink, stream, topic, part))",
                                   self._offsets)
                self._create_table(conn, f"CREATE TABLE IF NOT EXISTS {self._batches} (sink VARCHAR(200) PRIMARY "
                                   "KEY, batch_time BIGINT NOT NULL, version BIGINT NOT NULL)", self._batches)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @staticmethod
    def _create_table(conn: Any, ddl: str, table: str) -> None:
        """CREATE TABLE IF NOT EXISTS is not safe against a concurrent creator
        in every database (PostgreSQL): if it fails, the table must be there now."""
        try:
            conn.cursor().execute(ddl)
            conn.commit()
        except Exception:
            conn.rollback()
            try:
                conn.cursor().execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
                conn.commit()
            except Exception:
                conn.rollback()
                raise

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
            cur.execute(self._q(f"SELECT topic, part, next_offset FROM {self._offsets} WHERE sink = ? AND stream = ?"),
                        (self.name, stream))
            rows = cur.fetchall()
            conn.commit()
            return rows

        with self._lock:
            rows = self._run(read)
        return {(t, int(p)): int(o) for t, p, o in rows}

    def last_batch_time(self) -> int | None:
        def read(conn: Any, cur: Any) -> Any:
            cur.execute(self._q(f"SELECT batch_time FROM {self._batches} WHERE sink = ?"), (self.name,))
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
        cur.execute(self._q(f"SELECT batch_time, version FROM {self._batches} WHERE sink = ?"), (self.name,))
        row = cur.fetchone()
        ranges = [(stream, r) for stream, position in batch.positions.items()
                  for r in offset_ranges_of([position])]
        if self._already_written(cur, batch, row, ranges):
            conn.rollback()
            self.batches_skipped += 1
            log.info("sink %s: batch %s was already written; skipped", self.name, batch.id)
            return True
        self._write(cur, batch)
        for stream, r in ranges:
            cur.execute(self._q(
                f"INSERT INTO {self._offsets} (sink, stream, topic, part, next_offset) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, stream, topic, part) "
                "DO UPDATE SET next_offset = excluded.next_offset"),
                (self.name, stream, r.topic, r.partition, r.until_offset))
        # Last, and conditional: only if nobody wrote since we read the row.
        if row is None:
            try:
                cur.execute(self._q(f"INSERT INTO {self._batches} (sink, batch_time, version) VALUES (?, ?, 1)"),
                            (self.name, batch.time))
            except self._integrity_errors(conn):
                conn.rollback()
                return False
        else:
            cur.execute(self._q(f"UPDATE {self._batches} SET batch_time = ?, version = version + 1 "
                                "WHERE sink = ? AND version = ?"), (batch.time, self.name, int(row[1])))
            if cur.rowcount != 1:
                conn.rollback()
                return False
        conn.commit()
        self.batches_written += 1
        return True

    def _already_written(self, cur: Any, batch: "Batch[Any]", row: Any,
                         ranges: list[tuple[str, OffsetRange]]) -> bool:
        if not ranges:
            return row is not None and int(row[0]) >= batch.time
        cur.execute(self._q(f"SELECT stream, topic, part, next_offset FROM {self._offsets} WHERE sink = ?"),
                    (self.name,))
        stored = {(s, t, int(p)): int(o) for s, t, p, o in cur.fetchall()}
        written, fresh = [], []
        for stream, r in ranges:
            if r.count == 0:
                continue
            at = stored.get((stream, r.topic, r.partition))
            if at is not None and at >= r.until_offset:
                written.append(r)
            elif at is None or at <= r.from_offset:
                fresh.append(r)
            else:
                raise SourceError(
                    f"sink {self.name}: stored offset {at} of {r.topic}[{r.partition}] falls inside the batch's "
                    f"range {r}: the database and the stream disagree (was the stream started from other "
                    "offsets than the sink's? pass offset_store=sink to kafka_direct_stream)")
        if written and fresh:
            raise SourceError(f"sink {self.name}: batch {batch.id} is written for {written[0]} but not for "
                              f"{fresh[0]}; another writer uses this sink name")
        return bool(written)

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


__all__ = ["SqlSink"]
