"""SqlSink on a real PostgreSQL server (the `postgres_dsn` fixture) through psycopg:
the SQLite promises again with the driver's own paramstyle, a connection the server
terminates, and concurrent writers of one sink name, which must neither write a
record twice nor move the stored offsets away from the results.

Each test uses tables of its own (a fresh table prefix), dropped at the end, so the
tests also run against a shared server named by POSTGRES_DSN. Records of Kafka-shaped
batches are their offsets, so "written exactly once" reads: the offsets in the
results table are exactly 0 .. next_offset - 1, each once."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest

from ingest import Batch, ConfigError, Dataset, ManualClock, StreamingContext
from ingest.sinks import DedupeSink, SqlSink
from ingest.testing.plugin import skip_or_fail
from offsets import BlockRef, KafkaRanges, OffsetRange, ReceivedBlocks

try:
    import psycopg
except ImportError:  # reported by the db fixture
    psycopg = None  # type: ignore[assignment]

pytestmark = pytest.mark.postgres

STREAM = "kafka-in"


def kafka_batch(time_ms: int, topic: str, partition: int, from_offset: int, until: int,
                records: list[Any] | None = None) -> Batch[Any]:
    """A batch as a direct Kafka stream plans it; its records default to its offsets."""
    if records is None:
        records = list(range(from_offset, until))
    return Batch(time_ms, Dataset.from_records(records),
                 positions={STREAM: KafkaRanges((OffsetRange(topic, partition, from_offset, until),))})


class Database:
    """Tables of one test on the session's server: `<prefix>results` for the
    results, and the sink's `<prefix>offsets` and `<prefix>batches`."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.prefix = f"t{uuid.uuid4().hex[:10]}_"
        self.results_table = f"{self.prefix}results"
        self.opened: list[Any] = []
        self.admin = psycopg.connect(dsn, autocommit=True)
        self.admin.execute(f"CREATE TABLE {self.results_table} (batch_time BIGINT NOT NULL, value TEXT NOT NULL)")

    def connect(self) -> Any:
        conn = psycopg.connect(self.dsn)
        self.opened.append(conn)
        return conn

    def insert(self, cur: Any, batch: Batch[Any]) -> None:
        cur.executemany(f"INSERT INTO {self.results_table} (batch_time, value) VALUES (%s, %s)",
                        [(batch.time, str(v)) for v in batch.collect()])

    def sink(self, write: Callable[[Any, Batch[Any]], None] | None = None, *,
             connect: Callable[[], Any] | None = None, **options: Any) -> SqlSink:
        options.setdefault("name", "sql")
        return SqlSink(connect or self.connect, write or self.insert, table_prefix=self.prefix, **options)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.admin.execute(sql, params).fetchall()

    def results(self) -> list[tuple[int, str]]:
        return self.query(f"SELECT batch_time, value FROM {self.results_table} ORDER BY batch_time, value")

    def offsets(self, sink: str = "sql") -> list[tuple[str, str, int, int]]:
        return self.query(f"SELECT stream, topic, part, next_offset FROM {self.prefix}offsets WHERE sink = %s "
                          "ORDER BY stream, topic, part", (sink,))

    def batch_time(self, sink: str = "sql") -> int | None:
        rows = self.query(f"SELECT batch_time FROM {self.prefix}batches WHERE sink = %s", (sink,))
        return rows[0][0] if rows else None

    def assert_written_exactly_once(self, sink: str = "sql", topic: str = "events") -> None:
        """The results hold offsets 0 .. next_offset - 1 of `topic`[0], each once."""
        written = sorted(int(v) for _, v in self.results())
        stored = {(t, p): o for _, t, p, o in self.offsets(sink)}
        assert written == list(range(stored.get((topic, 0), 0))), (
            f"results hold offsets {written}, the stored next offset is {stored}")

    def close(self) -> None:
        for conn in self.opened:
            conn.close()
        self.admin.execute("SET lock_timeout = '10s'")
        for table in ("results", "offsets", "batches", "applied", "sink_meta"):
            self.admin.execute(f"DROP TABLE IF EXISTS {self.prefix}{table}")
        self.admin.close()


@pytest.fixture
def db(postgres_dsn: str) -> Iterator[Database]:
    if psycopg is None:
        skip_or_fail("the PostgreSQL tests need psycopg: pip install 'psycopg[binary]' (part of ingest[test])")
    database = Database(postgres_dsn)
    yield database
    database.close()


def run_in_threads(*calls: Callable[[], None]) -> list[BaseException]:
    """Run each call in a thread of its own, join them all; the exceptions raised."""
    errors: list[BaseException] = []

    def guarded(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a writer is still blocked after 60 s"
    return errors


# --------------------------------------------------------------------------- the promises


def test_batches_of_a_context_are_written_with_the_drivers_paramstyle(db: Database) -> None:
    sink = db.sink()  # psycopg's paramstyle (pyformat) is found from the connection
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    try:
        ssc.queue_stream([["a", "b"], ["c"]]).foreach_batch(sink)
        ssc.start()
        ssc.step(2)
    finally:
        ssc.stop(graceful=False, timeout=10)
        sink.close()

    assert db.results() == [(1000, "a"), (1000, "b"), (2000, "c")]
    assert db.batch_time() == 2000
    assert (sink.batches_written, sink.batches_skipped) == (2, 0)


def test_an_explicit_format_paramstyle_works(db: Database) -> None:
    sink = db.sink(paramstyle="format")
    sink(kafka_batch(1000, "events", 0, 0, 3))
    sink(kafka_batch(1000, "events", 0, 0, 3))

    assert db.results() == [(1000, "0"), (1000, "1"), (1000, "2")]
    assert sink.load_offsets(STREAM) == {("events", 0): 3}
    assert sink.batches_skipped == 1
    sink.close()


def test_results_and_offsets_commit_together_in_one_transaction(db: Database) -> None:
    seen_during_write: list[Any] = []

    def write_and_look(cur: Any, batch: Batch[Any]) -> None:
        db.insert(cur, batch)
        seen_during_write.append((db.results(), db.offsets()))  # from another connection

    sink = db.sink(write_and_look)
    sink(kafka_batch(1000, "events", 0, 0, 2))
    sink(kafka_batch(2000, "events", 0, 2, 3))
    sink.close()

    assert seen_during_write == [
        ([], []),
        ([(1000, "0"), (1000, "1")], [(STREAM, "events", 0, 2)]),
    ]
    assert db.offsets() == [(STREAM, "events", 0, 3)]
    assert db.batch_time() == 2000
    db.assert_written_exactly_once()


def test_a_failed_write_leaves_neither_results_nor_offsets_and_the_next_attempt_writes_once(
        db: Database) -> None:
    attempts = []

    def write(cur: Any, batch: Batch[Any]) -> None:
        attempts.append(batch.time)
        db.insert(cur, batch)
        if len(attempts) == 1:
            raise RuntimeError("crash after inserting, before the commit")

    sink = db.sink(write)
    batch = kafka_batch(1000, "events", 0, 0, 4)
    with pytest.raises(RuntimeError, match="crash after inserting"):
        sink(batch)
    assert (db.results(), db.offsets(), db.batch_time()) == ([], [], None)

    sink(batch)
    sink.close()
    assert db.offsets() == [(STREAM, "events", 0, 4)]
    db.assert_written_exactly_once()
    assert (sink.batches_written, sink.batches_skipped) == (1, 0)


def test_a_rerun_of_the_same_batch_is_skipped_and_writes_nothing(db: Database) -> None:
    sink = db.sink()
    sink(kafka_batch(1000, "events", 0, 0, 2))
    again = db.sink()  # a restarted job re-runs the batch whose commit it did not see
    again(kafka_batch(1000, "events", 0, 0, 2))

    assert db.results() == [(1000, "0"), (1000, "1")]
    assert (sink.batches_written, again.batches_written, again.batches_skipped) == (1, 0, 1)
    sink.close()
    again.close()


def test_an_older_batch_is_skipped(db: Database) -> None:
    sink = db.sink()
    sink(Batch(2000, Dataset.from_records(["b"])))
    sink(Batch(1000, Dataset.from_records(["a"])))

    assert db.results() == [(2000, "b")]
    assert db.batch_time() == 2000
    assert sink.batches_skipped == 1
    sink.close()


def test_load_offsets_returns_the_next_offset_of_every_partition_of_the_stream(db: Database) -> None:
    sink = db.sink()
    assert sink.load_offsets(STREAM) == {}
    sink(Batch(1000, Dataset.from_records(["x"]), positions={
        STREAM: KafkaRanges((OffsetRange("events", 0, 0, 10), OffsetRange("events", 1, 0, 4))),
        "audit-in": KafkaRanges((OffsetRange("audit", 0, 5, 9),)),
    }))
    sink(Batch(2000, Dataset.from_records(["y"]), positions={
        STREAM: KafkaRanges((OffsetRange("events", 0, 10, 25), OffsetRange("events", 1, 4, 4))),
    }))

    restarted = db.sink()
    assert restarted.load_offsets(STREAM) == {("events", 0): 25, ("events", 1): 4}
    assert restarted.load_offsets("audit-in") == {("audit", 0): 9}
    assert restarted.load_offsets("never-written") == {}
    assert restarted.last_batch_time() == 2000
    sink.close()
    restarted.close()


def test_two_sinks_with_different_names_keep_separate_positions(db: Database) -> None:
    left, right = db.sink(name="left"), db.sink(name="right")
    left(kafka_batch(1000, "events", 0, 0, 10, ["l1"]))
    right(kafka_batch(1000, "events", 0, 0, 3, ["r1"]))
    left(kafka_batch(2000, "events", 0, 10, 15, ["l2"]))

    assert db.results() == [(1000, "l1"), (1000, "r1"), (2000, "l2")]
    assert db.offsets("left") == [(STREAM, "events", 0, 15)]
    assert db.offsets("right") == [(STREAM, "events", 0, 3)]
    assert (db.batch_time("left"), db.batch_time("right")) == (2000, 1000)
    left.close()
    right.close()


# --------------------------------------------------------------------------- the connection


def test_a_connection_the_server_terminated_is_replaced(db: Database) -> None:
    sink = db.sink()
    sink(kafka_batch(1000, "events", 0, 0, 2))
    backend = db.opened[-1].info.backend_pid
    assert db.query("SELECT pg_terminate_backend(%s)", (backend,)) == [(True,)]
    deadline = time.monotonic() + 10
    while db.query("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)):
        assert time.monotonic() < deadline, f"backend {backend} still runs 10 s after pg_terminate_backend"
        time.sleep(0.02)

    batch = kafka_batch(2000, "events", 0, 2, 5)
    try:
        sink(batch)
    except psycopg.OperationalError:
        sink(batch)  # the attempt that finds the connection gone may fail; the next reconnects
    sink.close()

    assert len(db.opened) == 2
    assert db.offsets() == [(STREAM, "events", 0, 5)]
    db.assert_written_exactly_once()


def test_a_connection_closed_under_the_sink_is_replaced(db: Database) -> None:
    sink = db.sink()
    sink(kafka_batch(1000, "events", 0, 0, 2))
    db.opened[-1].close()

    batch = kafka_batch(2000, "events", 0, 2, 5)
    try:
        sink(batch)
    except psycopg.Error:
        sink(batch)
    sink.close()

    assert len(db.opened) == 2
    db.assert_written_exactly_once()


# --------------------------------------------------------------------------- concurrent writers

def test_two_writers_of_the_same_batch_write_it_once(db: Database) -> None:
    db.sink(name="job")(kafka_batch(1000, "events", 0, 0, 10))
    both_writing = threading.Barrier(2)

    def write(cur: Any, batch: Batch[Any]) -> None:
        # Hold each writer until the other one writes too; a sink that keeps the second
        # writer out while the first one's transaction is open lets this time out.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_writing.wait(timeout=3)
        db.insert(cur, batch)

    one, two = db.sink(write, name="job"), db.sink(write, name="job")
    run_in_threads(lambda: one(kafka_batch(2000, "events", 0, 10, 20)),
                   lambda: two(kafka_batch(2000, "events", 0, 10, 20)))
    one.close()
    two.close()

    assert db.offsets("job") == [(STREAM, "events", 0, 20)]
    db.assert_written_exactly_once("job")


def test_a_stale_writer_neither_duplicates_records_nor_moves_the_offsets_back(db: Database) -> None:
    db.sink(name="job")(kafka_batch(1000, "events", 0, 0, 10))
    stale_writing, current_done = threading.Event(), threading.Event()

    def stale_write(cur: Any, batch: Batch[Any]) -> None:
        stale_writing.set()
        current_done.wait(3)  # the live job commits two batches meanwhile
        db.insert(cur, batch)

    # A zombie of an earlier run read offset 10 and writes 10..20 late; the live job
    # starts from the same offset 10 and commits 10..20 and 20..30 first.
    stale = db.sink(stale_write, name="job")
    current = db.sink(name="job")

    def live_job() -> None:
        stale_writing.wait(3)
        try:
            current(kafka_batch(2000, "events", 0, 10, 20))
            current(kafka_batch(3000, "events", 0, 20, 30))
        finally:
            current_done.set()

    errors = run_in_threads(lambda: stale(kafka_batch(2000, "events", 0, 10, 20)), live_job)
    stale.close()
    current.close()

    assert [e for e in errors if not isinstance(e, psycopg.Error)] == []  # the zombie may fail
    assert db.offsets("job") == [(STREAM, "events", 0, 30)]
    db.assert_written_exactly_once("job")


def test_sinks_that_start_together_on_a_fresh_database_all_write_their_first_batch(db: Database) -> None:
    connected = threading.Barrier(4)

    def connect() -> Any:
        conn = db.connect()
        with contextlib.suppress(threading.BrokenBarrierError):
            connected.wait(timeout=5)
        return conn

    sinks = [db.sink(name=f"job{i}", connect=connect) for i in range(4)]
    errors = run_in_threads(*(lambda s=s: s(kafka_batch(1000, "events", 0, 0, 1, ["r"])) for s in sinks))
    for s in sinks:
        s.close()

    assert errors == []
    assert [db.batch_time(f"job{i}") for i in range(4)] == [1000] * 4


# --------------------------------------------------------------------------- DedupeSink and the tables' format


def blocks_batch(time_ms: int, records: list[str], *block_ids: str) -> Batch[Any]:
    return Batch(time_ms, Dataset.from_records(records),
                 positions={"lines": ReceivedBlocks(tuple(BlockRef(b, "lines", 1) for b in block_ids))})


def test_a_dedupe_sink_writes_a_batch_of_blocks_once_across_a_restart(db: Database) -> None:
    first = DedupeSink(db.connect, db.insert, name="lines", table_prefix=db.prefix)
    first(blocks_batch(1000, ["a", "b"], "lines-1-0", "lines-1-1"))
    first.close()

    restarted = DedupeSink(db.connect, db.insert, name="lines", table_prefix=db.prefix)
    restarted(blocks_batch(1000, ["a", "b"], "lines-1-0", "lines-1-1"))
    restarted(blocks_batch(2000, ["c"], "lines-2-0"))
    restarted.close()

    assert db.results() == [(1000, "a"), (1000, "b"), (2000, "c")]
    assert db.query(f"SELECT item FROM {db.prefix}applied WHERE sink = 'lines' ORDER BY item") == [
        ("block:lines-1-0",), ("block:lines-1-1",), ("block:lines-2-0",)]
    assert (restarted.batches_written, restarted.batches_skipped) == (1, 1)


def test_tables_of_format_0_are_migrated_and_their_positions_read(db: Database) -> None:
    # The layout of releases before the format row, as they created it.
    db.admin.execute(f"CREATE TABLE {db.prefix}offsets (sink VARCHAR(200) NOT NULL, stream VARCHAR(200) NOT NULL, "
                     "topic VARCHAR(300) NOT NULL, part INTEGER NOT NULL, next_offset BIGINT NOT NULL, "
                     "PRIMARY KEY (sink, stream, topic, part))")
    db.admin.execute(f"CREATE TABLE {db.prefix}batches (sink VARCHAR(200) PRIMARY KEY, batch_time BIGINT NOT NULL, "
                     "version BIGINT NOT NULL)")
    db.admin.execute(f"INSERT INTO {db.prefix}offsets VALUES ('sql', %s, 'events', 0, 4)", (STREAM,))
    db.admin.execute(f"INSERT INTO {db.prefix}batches VALUES ('sql', 1000, 1)")

    unnamed = db.sink(name=None)
    with pytest.raises(ConfigError, match="migrated from format 0.*Pass name='sql'"):
        unnamed.load_offsets(STREAM)
    sink = db.sink()  # name='sql'
    assert sink.load_offsets(STREAM) == {("events", 0): 4}
    sink(kafka_batch(1000, "events", 0, 0, 4))  # written before the upgrade
    sink(kafka_batch(2000, "events", 0, 4, 6))
    sink.close()

    assert dict(db.query(f"SELECT k, v FROM {db.prefix}sink_meta")) == {"format": "1", "migrated_from": "0"}
    assert db.results() == [(2000, "4"), (2000, "5")]
    assert db.offsets() == [(STREAM, "events", 0, 6)]
