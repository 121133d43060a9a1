"""DedupeSink on SQLite: a receiver stream's batch is written together with the
ids of its received blocks (or its Flume sequence numbers) in one transaction,
and a batch holding blocks already applied writes nothing again, whatever its
batch time. Batches are built by hand with typed `ReceivedBlocks` and
`SequenceNumbers` positions; one test goes through a StreamingContext with a
receiver."""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ingest import Batch, ConfigError, Dataset, SourceError
from ingest.sinks import DedupeSink
from offsets import BlockRef, QueueItems, ReceivedBlocks, SequenceNumbers, SequenceRef
from receivers import Receiver


def blocks_batch(time_ms: int, records: list[str], *block_ids: str, stream: str = "lines") -> Batch[Any]:
    blocks = tuple(BlockRef(b, stream, 1) for b in block_ids)
    return Batch(time_ms, Dataset.from_records(records), positions={stream: ReceivedBlocks(blocks)})


def flume_batch(time_ms: int, records: list[str], *sequences: tuple[str, str]) -> Batch[Any]:
    refs = tuple(SequenceRef(source, seq, 1) for source, seq in sequences)
    return Batch(time_ms, Dataset.from_records(records), positions={"flume": SequenceNumbers(refs)})


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE results (batch_time INTEGER NOT NULL, value TEXT NOT NULL)")
            conn.commit()

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, check_same_thread=False)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql, params).fetchall()

    def results(self) -> list[tuple[int, str]]:
        return self.query("SELECT batch_time, value FROM results ORDER BY batch_time, value")

    def applied(self, sink: str = "lines") -> list[tuple[str, int]]:
        return self.query("SELECT item, batch_time FROM ingest_applied WHERE sink = ? ORDER BY item", (sink,))

    def sink(self, write: Callable[[Any, Batch[Any]], None] | None = None, **options: Any) -> DedupeSink:
        options.setdefault("name", "lines")
        return DedupeSink(self.connect, write or insert_records, **options)


def insert_records(cur: Any, batch: Batch[Any]) -> None:
    cur.executemany("INSERT INTO results (batch_time, value) VALUES (?, ?)",
                    [(batch.time, str(v)) for v in batch.collect()])


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(tmp_path / "out.db")


@pytest.fixture
def sink(db: Database) -> Iterator[DedupeSink]:
    s = db.sink()
    yield s
    s.close()


# --------------------------------------------------------------------------- blocks


def test_a_batch_is_written_with_the_ids_of_its_blocks_in_one_transaction(db: Database) -> None:
    seen_during_write: list[Any] = []

    def write_and_look(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        seen_during_write.append(db.applied())

    sink = db.sink(write_and_look)
    sink(blocks_batch(1000, ["a", "b"], "lines-1-0", "lines-1-1"))
    sink.close()

    assert seen_during_write == [[]]
    assert db.results() == [(1000, "a"), (1000, "b")]
    assert db.applied() == [("block:lines-1-0", 1000), ("block:lines-1-1", 1000)]


def test_a_batch_re_run_after_a_restart_with_the_same_blocks_writes_nothing(db: Database) -> None:
    first = db.sink()
    first(blocks_batch(1000, ["a", "b"], "lines-1-0", "lines-1-1"))
    first.close()  # the process died after the commit, before its checkpoint

    restarted = db.sink()
    restarted(blocks_batch(1000, ["a", "b"], "lines-1-0", "lines-1-1"))
    restarted.close()

    assert db.results() == [(1000, "a"), (1000, "b")]
    assert (restarted.batches_written, restarted.batches_skipped) == (0, 1)


def test_blocks_already_applied_are_skipped_at_another_batch_time_too(db: Database, sink: DedupeSink) -> None:
    sink(blocks_batch(1000, ["a"], "lines-1-0"))
    sink(blocks_batch(5000, ["a"], "lines-1-0"))  # planned again after its plan was lost

    assert db.results() == [(1000, "a")]
    assert sink.batches_skipped == 1


def test_the_next_batch_with_new_blocks_is_written(db: Database, sink: DedupeSink) -> None:
    sink(blocks_batch(1000, ["a"], "lines-1-0"))
    sink(blocks_batch(2000, ["b"], "lines-2-0"))

    assert db.results() == [(1000, "a"), (2000, "b")]
    assert [item for item, _t in db.applied()] == ["block:lines-1-0", "block:lines-2-0"]


def test_a_batch_holding_applied_and_new_blocks_is_refused_and_writes_nothing(db: Database,
                                                                            sink: DedupeSink) -> None:
    sink(blocks_batch(1000, ["a"], "lines-1-0"))

    with pytest.raises(SourceError, match="applied .* for block:lines-1-0 but not for block:lines-2-0"):
        sink(blocks_batch(2000, ["a", "b"], "lines-1-0", "lines-2-0"))

    assert db.results() == [(1000, "a")]
    assert [item for item, _t in db.applied()] == ["block:lines-1-0"]


def test_a_failed_write_stores_no_block_id_and_the_next_attempt_writes_once(db: Database) -> None:
    failures = [RuntimeError("crash after inserting, before the commit")]

    def flaky(cur: Any, batch: Batch[Any]) -> None:
        insert_records(cur, batch)
        if failures:
            raise failures.pop()

    sink = db.sink(flaky)
    batch = blocks_batch(1000, ["a"], "lines-1-0")
    with pytest.raises(RuntimeError, match="crash after inserting"):
        sink(batch)
    assert db.applied() == []

    sink(batch)
    sink(batch)
    sink.close()
    assert db.results() == [(1000, "a")]
    assert db.applied() == [("block:lines-1-0", 1000)]


def test_a_batch_of_many_blocks_is_recognised_when_re_run(db: Database, sink: DedupeSink) -> None:
    ids = [f"lines-1-{i}" for i in range(450)]  # more than one IN (...) query
    sink(blocks_batch(1000, ["a"], *ids))
    sink(blocks_batch(1000, ["a"], *ids))

    assert db.results() == [(1000, "a")]
    assert len(db.applied()) == 450
    assert sink.batches_skipped == 1


def test_a_batch_without_blocks_falls_back_to_the_batch_time(db: Database, sink: DedupeSink) -> None:
    sink(blocks_batch(1000, ["a"], "lines-1-0"))
    sink(blocks_batch(2000, ["from state"]))
    sink(blocks_batch(2000, ["from state"]))
    sink(Batch(3000, Dataset.from_records(["q"]), positions={"queue": QueueItems(("q",), 1)}))
    sink(Batch(3000, Dataset.from_records(["q"]), positions={"queue": QueueItems(("q",), 1)}))

    assert db.results() == [(1000, "a"), (2000, "from state"), (3000, "q")]


def test_block_ids_older_than_the_retention_are_forgotten(db: Database) -> None:
    sink = db.sink(retention_s=60)
    sink(blocks_batch(1000, ["a"], "lines-1-0"))
    sink(blocks_batch(30_000, ["b"], "lines-30-0"))
    sink(blocks_batch(70_000, ["c"], "lines-70-0"))
    sink.close()

    assert db.applied() == [("block:lines-30-0", 30_000), ("block:lines-70-0", 70_000)]


def test_a_retention_that_is_not_positive_is_refused(db: Database) -> None:
    with pytest.raises(ConfigError, match="retention_s must be a positive number"):
        db.sink(retention_s=0)


# --------------------------------------------------------------------------- Flume sequence numbers


def test_flume_batches_are_deduplicated_by_source_and_sequence_number(db: Database, sink: DedupeSink) -> None:
    sink(flume_batch(1000, ["a", "b"], ("agent-1:4141", "7"), ("agent-2:4141", "7")))
    sink(flume_batch(1000, ["a", "b"], ("agent-1:4141", "7"), ("agent-2:4141", "7")))
    sink(flume_batch(2000, ["c"], ("agent-1:4141", "8")))

    assert db.results() == [(1000, "a"), (1000, "b"), (2000, "c")]
    assert [item for item, _t in db.applied()] == [
        "flume:agent-1:4141#7", "flume:agent-1:4141#8", "flume:agent-2:4141#7"]


# --------------------------------------------------------------------------- through a context


class OneBlock(Receiver[str]):
    """Stores one block from a thread of its own and reports its id."""

    def __init__(self, records: list[str], ids: "queue.Queue[str]") -> None:
        super().__init__("one-block")
        self.records = records
        self.ids = ids
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        self._thread = threading.Thread(target=lambda: self.ids.put(self.store_batch(self.records)))
        self._thread.start()

    def on_stop(self) -> None:
        if self._thread is not None:
            self._thread.join(10)


def test_a_receiver_streams_batch_written_by_the_context_is_skipped_when_run_again(make_context: Any,
                                                                                    db: Database) -> None:
    ids: queue.Queue[str] = queue.Queue()
    ssc = make_context()
    stream = ssc.receiver_stream(OneBlock(["a", "b"], ids), name="lines")
    batches: list[Batch[Any]] = []
    stream.foreach_batch(batches.append)
    sink = db.sink()
    stream.foreach_batch(sink)
    ssc.start()
    block_id = ids.get(timeout=10)
    ssc.step(1)
    if not isinstance(batches[0].positions["lines"], ReceivedBlocks):
        pytest.skip("the scheduler of this branch still passes plan dicts; batch.positions is typed once the "
                    "connector contract (issue 9) is merged")
    sink(batches[0])  # the same batch again, as a re-run after a crash gives it
    sink.close()

    assert db.results() == [(1000, "a"), (1000, "b")]
    assert db.applied() == [(f"block:{block_id}", 1000)]
    assert (sink.batches_written, sink.batches_skipped) == (1, 1)
