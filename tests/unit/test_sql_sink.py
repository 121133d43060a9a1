"""SqlSink on SQLite, a real database file: a batch's results, its time and its Kafka
offsets commit in one transaction; a re-run or older batch writes nothing; a failed
write leaves nothing behind; `load_offsets` gives back where each partition resumes.

Batches come from a StreamingContext on a ManualClock, or are built by hand with
typed `KafkaRanges` positions where a test needs Kafka-shaped positions. Every
assertion reads the database through a connection of its own."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from ingest import Batch, BatchFailedError, ConfigError, Dataset, ManualClock, StreamingContext
from ingest.sinks import SqlSink
from offsets import KafkaRanges, OffsetRange, QueueItems


def kafka_batch(time_ms: int, records: list[Any], *ranges: tuple[str, int, int, int],
                stream: str = "kafka-in") -> Batch[Any]:
    """A batch as a direct Kafka stream would plan it: `ranges` are (topic, partition,
    from, until)."""
    return Batch(time_ms, Dataset.from_records(records),
                 positions={stream: KafkaRanges(tuple(OffsetRange(*r) for r in ranges))})


def insert_records(cur: Any, batch: Batch[Any]) -> None:
    cur.executemany("INSERT INTO results (batch_time, value) VALUES (?, ?)",
                    [(batch.time, str(v)) for v in batch.collect()])


SINK = f"{insert_records.__module__}.insert_records"
"""The identity a sink writing with `insert_records` gets without name=."""


class Database:
    """A SQLite file with a `results` table; `connect` is what sinks get."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened: list[sqlite3.Connection] = []
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE results (batch_time INTEGER NOT NULL, value TEXT NOT NULL)")
            conn.commit()

    def connect(self) -> sqlite3.Connection:
        # The sink serializes every use of its connection with a lock, and a context
        # calls it from its scheduler thread while a test reads offsets from its own.
        conn = sqlite3.connect(self.path, check_same_thread=False)
        self.opened.append(conn)
        return conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql, params).fetchall()

    def results(self) -> list[tuple[int, str]]:
        return self.query("SELECT batch_time, value FROM results ORDER BY batch_time, value")

    def offsets(self, sink: str = SINK) -> list[tuple[str, str, int, int]]:
        return self.query("SELECT stream, topic, part, next_offset FROM ingest_offsets WHERE sink = ? "
                          "ORDER BY stream, topic, part", (sink,))

    def batch_time(self, sink: str = SINK) -> int | None:
        rows = self.query("SELECT batch_time FROM ingest_batches WHERE sink = ?", (sink,))
        return rows[0][0] if rows else None

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "out.db")
    yield database
    database.close()


@pytest.fixture
def sink(db: Database) -> Iterator[SqlSink]:
    s = SqlSink(db.connect, insert_records)
    yield s
    s.close()


@pytest.fixture
def ssc() -> Iterator[StreamingContext]:
    context = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    yield context
    context.stop(graceful=False, timeout=10)


# --------------------------------------------------------------------------- from a context


def test_batches_of_a_context_are_written_with_their_batch_time(ssc: StreamingContext, db: Database,
                                                                 sink: SqlSink) -> None:
    ssc.queue_stream([["a", "b"], ["c"]]).foreach_batch(sink)
    ssc.start()
    ssc.step(2)

    assert db.results() == [(1000, "a"), (1000, "b"), (2000, "c")]
    assert db.batch_time() == 2000
    assert db.offsets() == []  # a queue stream has no Kafka positions
    assert (sink.batches_written, sink.batches_skipped) == (2, 0)


def test_a_batch_the_context_retries_after_a_failed_write_is_written_once(db: Database) -> None:
    failures = iter([RuntimeError("the first attempt fails after inserting")])

    def flaky(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        failure = next(failures, None)
        if failure is not None:
            raise failure

    sink = SqlSink(db.connect, flaky, name=SINK)
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, max_batch_retries=1)
    try:
        ssc.queue_stream([["a", "b"]]).foreach_batch(sink)
        ssc.start()
        ssc.step()
    finally:
        ssc.stop(graceful=False, timeout=10)
        sink.close()

    assert db.results() == [(1000, "a"), (1000, "b")]
    assert db.batch_time() == 1000
    assert sink.batches_written == 1


def test_a_write_that_fails_on_every_attempt_stops_the_context_and_leaves_nothing(ssc: StreamingContext,
                                                                                  db: Database) -> None:
    def broken(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        raise RuntimeError("write failed")

    sink = SqlSink(db.connect, broken, name=SINK)
    ssc.queue_stream([["a"]]).foreach_batch(sink)
    ssc.start()
    with pytest.raises(BatchFailedError, match="write failed"):
        ssc.step()
    sink.close()

    assert db.results() == []
    assert db.batch_time() is None


# --------------------------------------------------------------------------- one transaction


def test_results_and_offsets_commit_together_in_one_transaction(db: Database) -> None:
    seen_during_write: list[Any] = []

    def write_and_look(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        # Another connection, mid-transaction: nothing of this batch is visible yet.
        seen_during_write.append((db.results(), db.batch_time()))

    sink = SqlSink(db.connect, write_and_look, name=SINK)
    sink(kafka_batch(1000, ["a", "b"], ("events", 0, 0, 2)))
    sink(kafka_batch(2000, ["c"], ("events", 0, 2, 3)))
    sink.close()

    assert seen_during_write == [([], None), ([(1000, "a"), (1000, "b")], 1000)]
    assert db.results() == [(1000, "a"), (1000, "b"), (2000, "c")]
    assert db.offsets() == [("kafka-in", "events", 0, 3)]
    assert db.batch_time() == 2000


def test_offsets_of_every_partition_and_stream_are_stored(db: Database, sink: SqlSink) -> None:
    batch = Batch(1000, Dataset.from_records(["a"]), positions={
        "clicks": KafkaRanges((OffsetRange("clicks", 0, 0, 5), OffsetRange("clicks", 1, 0, 7))),
        "views": KafkaRanges((OffsetRange("views", 0, 10, 12),)),
        "queue": QueueItems(("a",), 1),  # not a Kafka position: no offsets
    })
    sink(batch)

    assert db.offsets() == [("clicks", "clicks", 0, 5), ("clicks", "clicks", 1, 7), ("views", "views", 0, 12)]
    assert db.results() == [(1000, "a")]


def test_a_batch_without_records_still_advances_the_offsets(db: Database, sink: SqlSink) -> None:
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    sink(kafka_batch(2000, [], ("events", 0, 1, 40)))  # every record filtered out

    assert db.results() == [(1000, "a")]
    assert db.offsets() == [("kafka-in", "events", 0, 40)]
    assert db.batch_time() == 2000


def test_a_failed_write_leaves_neither_results_nor_offsets_and_the_next_attempt_writes_once(
        db: Database) -> None:
    fail = [True]

    def write(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        if fail.pop() if fail else False:
            raise RuntimeError("crash after inserting, before the commit")

    sink = SqlSink(db.connect, write, name=SINK)
    batch = kafka_batch(1000, ["a", "b"], ("events", 0, 0, 2))
    with pytest.raises(RuntimeError, match="crash after inserting"):
        sink(batch)

    assert db.results() == []
    assert db.offsets() == []
    assert db.batch_time() is None

    sink(batch)
    sink.close()
    assert db.results() == [(1000, "a"), (1000, "b")]
    assert db.offsets() == [("kafka-in", "events", 0, 2)]
    assert (sink.batches_written, sink.batches_skipped) == (1, 0)


# --------------------------------------------------------------------------- re-runs


def test_a_rerun_of_the_same_batch_is_skipped_and_writes_nothing(db: Database, sink: SqlSink) -> None:
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))

    assert db.results() == [(1000, "a")]
    assert db.offsets() == [("kafka-in", "events", 0, 1)]
    assert (sink.batches_written, sink.batches_skipped) == (1, 1)


def test_a_rerun_after_a_restart_is_skipped_by_a_new_sink_on_the_same_database(db: Database) -> None:
    first = SqlSink(db.connect, insert_records)
    first(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    first.close()  # the process died after the commit, before its checkpoint

    again = SqlSink(db.connect, insert_records)
    again(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    again.close()

    assert db.results() == [(1000, "a")]
    assert (again.batches_written, again.batches_skipped) == (0, 1)


def test_an_older_batch_is_skipped(ssc: StreamingContext, db: Database, sink: SqlSink) -> None:
    ssc.queue_stream([["a"], ["b"]]).foreach_batch(sink)
    ssc.start()
    ssc.step(2)
    sink(Batch(1000, Dataset.from_records(["late"])))  # batch 1000 again, after 2000

    assert db.results() == [(1000, "a"), (2000, "b")]
    assert db.batch_time() == 2000
    assert sink.batches_skipped == 1


def test_an_older_kafka_batch_replayed_is_skipped_and_keeps_the_newer_offsets(db: Database,
                                                                             sink: SqlSink) -> None:
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    sink(kafka_batch(2000, ["b"], ("events", 0, 1, 2)))
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))

    assert db.results() == [(1000, "a"), (2000, "b")]
    assert db.offsets() == [("kafka-in", "events", 0, 2)]
    assert db.batch_time() == 2000


# --------------------------------------------------------------------------- the offset store


def test_load_offsets_returns_the_next_offset_of_every_partition_of_the_stream(db: Database,
                                                                              sink: SqlSink) -> None:
    assert sink.load_offsets("kafka-in") == {}

    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 10), ("events", 1, 0, 4)))
    sink(kafka_batch(2000, ["b"], ("events", 0, 10, 20), ("events", 1, 4, 4)))
    sink(kafka_batch(3000, ["c"], ("audit", 0, 0, 3), stream="other-in"))

    assert sink.load_offsets("kafka-in") == {("events", 0): 20, ("events", 1): 4}
    assert sink.load_offsets("other-in") == {("audit", 0): 3}
    assert sink.load_offsets("never-written") == {}
    assert sink.last_batch_time() == 3000


def test_a_new_sink_loads_the_offsets_an_earlier_one_committed(db: Database) -> None:
    first = SqlSink(db.connect, insert_records)
    first(kafka_batch(1000, ["a"], ("events", 0, 0, 10)))
    first.close()

    restarted = SqlSink(db.connect, insert_records)
    assert restarted.load_offsets("kafka-in") == {("events", 0): 10}
    assert restarted.last_batch_time() == 1000
    restarted.close()


def test_two_sinks_with_different_names_keep_separate_positions(db: Database) -> None:
    left = SqlSink(db.connect, insert_records, name="left")
    right = SqlSink(db.connect, insert_records, name="right")
    left(kafka_batch(1000, ["l1"], ("events", 0, 0, 10)))
    right(kafka_batch(1000, ["r1"], ("events", 0, 0, 3)))  # same time: not a re-run for "right"
    left(kafka_batch(2000, ["l2"], ("events", 0, 10, 15)))

    assert db.results() == [(1000, "l1"), (1000, "r1"), (2000, "l2")]
    assert db.offsets("left") == [("kafka-in", "events", 0, 15)]
    assert db.offsets("right") == [("kafka-in", "events", 0, 3)]
    assert (db.batch_time("left"), db.batch_time("right")) == (2000, 1000)
    assert left.load_offsets("kafka-in") == {("events", 0): 15}
    assert right.load_offsets("kafka-in") == {("events", 0): 3}
    left.close()
    right.close()


def test_a_table_prefix_puts_the_sinks_tables_elsewhere(db: Database) -> None:
    sink = SqlSink(db.connect, insert_records, table_prefix="job7_")
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 2)))
    sink.close()

    assert db.query("SELECT sink, stream, topic, part, next_offset FROM job7_offsets") == [
        (SINK, "kafka-in", "events", 0, 2)]
    assert db.query("SELECT sink, batch_time FROM job7_batches") == [(SINK, 1000)]
    assert db.query("SELECT name FROM sqlite_master WHERE name LIKE 'ingest_%'") == []


# --------------------------------------------------------------------------- the connection


def test_a_connection_broken_under_the_sink_is_replaced(db: Database) -> None:
    connections: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        connections.append(db.connect())
        return connections[-1]

    sink = SqlSink(connect, insert_records)
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    connections[-1].close()  # the connection breaks between two batches

    batch = kafka_batch(2000, ["b"], ("events", 0, 1, 2))
    try:
        sink(batch)
    except sqlite3.Error:
        sink(batch)  # one failed attempt is fair; the retry must reconnect
    sink.close()

    assert len(connections) == 2
    assert db.results() == [(1000, "a"), (2000, "b")]
    assert db.offsets() == [("kafka-in", "events", 0, 2)]



# --------------------------------------------------------------------------- identity


def test_rows_are_keyed_by_the_write_functions_qualified_name_without_name(db: Database, sink: SqlSink) -> None:
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))

    assert sink.name == f"{__name__}.insert_records"
    assert db.query("SELECT sink FROM ingest_batches") == [(SINK,)]


# --------------------------------------------------------------------------- format of the sink's tables

# The layout of releases before the format row (format 0), as they created it.
FORMAT_0_DDL = [
    "CREATE TABLE IF NOT EXISTS ingest_offsets (sink VARCHAR(200) NOT NULL, stream VARCHAR(200) NOT NULL, "
    "topic VARCHAR(300) NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
    "PRIMARY KEY (sink, stream, topic, part))",
    "CREATE TABLE IF NOT EXISTS ingest_batches (sink VARCHAR(200) PRIMARY KEY, batch_time BIGINT NOT NULL, "
    "version BIGINT NOT NULL)",
]


def write_format_0(db: Database, next_offset: int = 5, batch_time: int = 1000) -> None:
    """Tables of format 0 holding the positions of a sink with the old default name 'sql'."""
    with contextlib.closing(sqlite3.connect(db.path)) as conn:
        for ddl in FORMAT_0_DDL:
            conn.execute(ddl)
        conn.execute("INSERT INTO ingest_offsets VALUES ('sql', 'kafka-in', 'events', 0, ?)", (next_offset,))
        conn.execute("INSERT INTO ingest_batches VALUES ('sql', ?, 3)", (batch_time,))
        conn.commit()


def test_new_tables_record_their_format_version(db: Database, sink: SqlSink) -> None:
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))

    assert dict(db.query("SELECT k, v FROM ingest_sink_meta")) == {"format": "1"}


def test_tables_of_format_0_are_migrated_and_their_positions_read(db: Database) -> None:
    write_format_0(db, next_offset=5, batch_time=1000)

    sink = SqlSink(db.connect, insert_records, name="sql")
    assert sink.load_offsets("kafka-in") == {("events", 0): 5}
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 5)))  # written before the upgrade: skipped
    sink(kafka_batch(2000, ["b"], ("events", 0, 5, 6)))
    sink.close()

    assert dict(db.query("SELECT k, v FROM ingest_sink_meta")) == {"format": "1", "migrated_from": "0"}
    assert db.results() == [(2000, "b")]
    assert db.offsets("sql") == [("kafka-in", "events", 0, 6)]
    assert (sink.batches_written, sink.batches_skipped) == (1, 1)


def test_a_sink_without_name_on_format_0_tables_of_a_sink_named_sql_is_refused(db: Database) -> None:
    write_format_0(db)
    sink = SqlSink(db.connect, insert_records)

    with pytest.raises(ConfigError, match=r"migrated from format 0.*Pass name='sql' to go on from those positions"):
        sink.load_offsets("kafka-in")
    assert db.results() == []


def test_a_sink_named_explicitly_on_migrated_tables_starts_on_its_own_rows(db: Database) -> None:
    write_format_0(db)
    sink = SqlSink(db.connect, insert_records, name="fresh")
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    sink.close()

    assert db.offsets("fresh") == [("kafka-in", "events", 0, 1)]
    assert db.offsets("sql") == [("kafka-in", "events", 0, 5)]


def test_tables_of_a_newer_format_are_refused_naming_the_version(db: Database) -> None:
    with contextlib.closing(sqlite3.connect(db.path)) as conn:
        conn.execute("CREATE TABLE ingest_sink_meta (k VARCHAR(100) PRIMARY KEY, v VARCHAR(200) NOT NULL)")
        conn.execute("INSERT INTO ingest_sink_meta VALUES ('format', '2')")
        conn.commit()
    sink = SqlSink(db.connect, insert_records)

    with pytest.raises(ConfigError, match="have format version 2, and this release of ingest reads format 1"):
        sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    assert db.results() == []


def test_tables_with_the_sinks_names_but_another_layout_are_refused(db: Database) -> None:
    with contextlib.closing(sqlite3.connect(db.path)) as conn:
        conn.execute("CREATE TABLE ingest_batches (id INTEGER PRIMARY KEY, note TEXT)")
        conn.commit()
    sink = SqlSink(db.connect, insert_records)

    with pytest.raises(ConfigError, match="table ingest_batches exists without the format row .* not a sink "
                                          "table of format 0"):
        sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))


def test_a_meta_table_without_its_format_row_is_a_creation_under_way_not_format_0(db: Database) -> None:
    # Another sink of this release created the meta table and the batches table and
    # has not yet written the format row (sqlite3 commits DDL at once).
    with contextlib.closing(sqlite3.connect(db.path)) as conn:
        conn.execute("CREATE TABLE ingest_sink_meta (k VARCHAR(100) PRIMARY KEY, v VARCHAR(200) NOT NULL)")
        conn.execute(FORMAT_0_DDL[1])
        conn.commit()
    sink = SqlSink(db.connect, insert_records)
    sink(kafka_batch(1000, ["a"], ("events", 0, 0, 1)))
    sink.close()

    assert dict(db.query("SELECT k, v FROM ingest_sink_meta")) == {"format": "1"}
