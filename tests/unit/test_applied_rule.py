"""The one "already applied" rule (ingest/sinks/applied.py), first as a function,
then through every exactly-once sink: `SqlSink` on SQLite and
`KafkaTransactionalSink` on an in-memory broker must decide every case alike.

Batches are built by hand with typed positions; "written" is read back from the
sink's store (the results table, the topic's committed records)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from fake_kafka import FakeKafka

from ingest import Batch, Dataset, SourceError
from ingest.sinks import DedupeSink, KafkaTransactionalSink, SqlSink
from ingest.sinks.applied import Evidence, Stored, already_applied, evidence_of
from offsets import BlockRef, KafkaRanges, OffsetRange, QueueItems, ReceivedBlocks, SequenceNumbers, SequenceRef


def kafka_batch(time_ms: int, records: list[str], *ranges: tuple[str, int, int, int]) -> Batch[Any]:
    return Batch(time_ms, Dataset.from_records(records),
                 positions={"in": KafkaRanges(tuple(OffsetRange(*r) for r in ranges))})


# --------------------------------------------------------------------------- the rule


def test_evidence_is_every_non_empty_range_and_on_request_every_block_and_flume_batch() -> None:
    batch = Batch(1000, Dataset.from_records([]), positions={
        "k": KafkaRanges((OffsetRange("t", 0, 0, 5), OffsetRange("t", 1, 7, 7))),
        "r": ReceivedBlocks((BlockRef("r-1-0", "r", 3), BlockRef("r-1-1", "r", 2))),
        "f": SequenceNumbers((SequenceRef("agent:4141", "17", 10),)),
        "q": QueueItems(("x",), 1),
    })

    assert evidence_of(batch) == Evidence(ranges=(("k", OffsetRange("t", 0, 0, 5)),))
    assert evidence_of(batch, items=True).items == ("block:r-1-0", "block:r-1-1", "flume:agent:4141#17")


def test_without_evidence_the_stored_batch_time_decides() -> None:
    nothing = Evidence()
    assert not already_applied("s", 2000, nothing, Stored(batch_time=None))
    assert not already_applied("s", 2000, nothing, Stored(batch_time=1000))
    assert already_applied("s", 2000, nothing, Stored(batch_time=2000))
    assert already_applied("s", 2000, nothing, Stored(batch_time=3000))


def test_with_evidence_positions_decide_whatever_the_batch_times() -> None:
    evidence = Evidence(ranges=(("in", OffsetRange("t", 0, 10, 20)),))
    assert already_applied("s", 5000, evidence, Stored(batch_time=1000, offsets={("in", "t", 0): 20}))
    assert not already_applied("s", 1000, evidence, Stored(batch_time=9000, offsets={("in", "t", 0): 10}))
    assert not already_applied("s", 1000, evidence, Stored(batch_time=9000))


def test_a_stored_offset_inside_a_range_is_refused() -> None:
    evidence = Evidence(ranges=(("in", OffsetRange("t", 0, 10, 20)),))
    with pytest.raises(SourceError, match=r"offset 15 stored in .* falls inside the batch's range t\[0\] 10..20"):
        already_applied("s", 1000, evidence, Stored(offsets={("in", "t", 0): 15}))


def test_evidence_partly_applied_is_refused_naming_both_sides() -> None:
    evidence = Evidence(items=("block:a", "block:b"))
    with pytest.raises(SourceError, match="applied .* for block:a but not for block:b"):
        already_applied("s", 1000, evidence, Stored(items=frozenset({"block:a"})))


# --------------------------------------------------------------------------- every sink alike


class SinkUnderTest:
    def __init__(self, sink: Any, written: Callable[[], list[str]]) -> None:
        self.sink = sink
        self.written = written


def sql_sink(tmp_path: Path, _monkeypatch: pytest.MonkeyPatch, cls: type[SqlSink] = SqlSink) -> SinkUnderTest:
    path = tmp_path / "out.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE results (value TEXT NOT NULL)")
        conn.commit()

    def write(cur: Any, batch: Batch[Any]) -> None:
        cur.executemany("INSERT INTO results (value) VALUES (?)", [(str(v),) for v in batch.collect()])

    def written() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return [v for (v,) in conn.execute("SELECT value FROM results ORDER BY rowid")]

    return SinkUnderTest(cls(lambda: sqlite3.connect(path), write, name="out"), written)


def dedupe_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SinkUnderTest:
    return sql_sink(tmp_path, monkeypatch, DedupeSink)


def kafka_sink(_tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SinkUnderTest:
    kafka = FakeKafka()
    sink = KafkaTransactionalSink("out", producer_config={"bootstrap.servers": "unused:9092"},
                                  transactional_id="tx-out", group_id="g")
    kafka.install(sink, monkeypatch)
    return SinkUnderTest(sink, lambda: [v.decode() for _k, v in kafka.records])


@pytest.fixture(params=[sql_sink, dedupe_sink, kafka_sink], ids=["SqlSink", "DedupeSink", "KafkaTransactionalSink"])
def under_test(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[SinkUnderTest]:
    made = request.param(tmp_path, monkeypatch)
    yield made
    made.sink.close()


def test_a_rerun_of_a_batch_with_records_is_skipped(under_test: SinkUnderTest) -> None:
    under_test.sink(kafka_batch(1000, ["a", "b"], ("t", 0, 0, 2)))
    under_test.sink(kafka_batch(1000, ["a", "b"], ("t", 0, 0, 2)))

    assert under_test.written() == ["a", "b"]
    assert (under_test.sink.batches_written, under_test.sink.batches_skipped) == (1, 1)


def test_a_batch_whose_ranges_are_all_empty_writes_its_output_once_even_when_re_run(
        under_test: SinkUnderTest) -> None:
    # A window or state can give output in a batch that read nothing.
    under_test.sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))
    under_test.sink(kafka_batch(2000, ["window"], ("t", 0, 1, 1)))
    under_test.sink(kafka_batch(2000, ["window"], ("t", 0, 1, 1)))  # re-run after a crash

    assert under_test.written() == ["a", "window"]
    assert under_test.sink.batches_skipped == 1


def test_a_batch_with_neither_records_nor_offsets_to_advance_writes_nothing(under_test: SinkUnderTest) -> None:
    under_test.sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))
    under_test.sink(kafka_batch(2000, [], ("t", 0, 1, 1)))
    under_test.sink(kafka_batch(2000, [], ("t", 0, 1, 1)))

    assert under_test.written() == ["a"]


def test_an_older_batch_replayed_is_skipped(under_test: SinkUnderTest) -> None:
    under_test.sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))
    under_test.sink(kafka_batch(2000, ["b"], ("t", 0, 1, 2)))
    under_test.sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert under_test.written() == ["a", "b"]


def test_a_batch_whose_range_straddles_the_stored_offset_is_refused(under_test: SinkUnderTest) -> None:
    under_test.sink(kafka_batch(1000, ["a", "b"], ("t", 0, 0, 2)))
    with pytest.raises(SourceError, match=r"falls inside the batch's range t\[0\] 1..3"):
        under_test.sink(kafka_batch(2000, ["b", "c"], ("t", 0, 1, 3)))

    assert under_test.written() == ["a", "b"]


def test_a_batch_applied_for_one_partition_and_not_another_is_refused(under_test: SinkUnderTest) -> None:
    under_test.sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))
    with pytest.raises(SourceError, match=r"applied .* for range t\[0\] 0..1 but not for range t\[1\] 0..1"):
        under_test.sink(kafka_batch(1000, ["a", "x"], ("t", 0, 0, 1), ("t", 1, 0, 1)))

    assert under_test.written() == ["a"]
