"""KafkaTransactionalSink against an in-memory broker (tests/unit/fake_kafka.py):
retriable errors of the group coordinator while reading the committed offsets are
retried within a deadline, other errors fail the batch at once, an empty batch is
quiet, and offset metadata of another format is refused, never misread.

Time is a fake clock patched into the sink's module, so deadlines pass without
sleeping."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from confluent_kafka import KafkaError
from fake_kafka import FakeKafka, PartitionResult

import ingest.sinks.kafka as kafka_module
from ingest import Batch, Dataset, SourceError
from ingest.sinks import KafkaTransactionalSink
from offsets import KafkaRanges, OffsetRange


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def kafka_batch(time_ms: int, records: list[str], *ranges: tuple[str, int, int, int]) -> Batch[Any]:
    return Batch(time_ms, Dataset.from_records(records),
                 positions={"in": KafkaRanges(tuple(OffsetRange(*r) for r in ranges))})


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(kafka_module, "time", SimpleNamespace(monotonic=fake.monotonic, sleep=fake.sleep))
    return fake


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def sink(kafka: FakeKafka, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaTransactionalSink]:
    s = KafkaTransactionalSink("out", producer_config={"bootstrap.servers": "unused:9092"},
                               transactional_id="tx-out", group_id="g", committed_timeout_s=10.0)
    kafka.install(s, monkeypatch)
    yield s
    s.close()


# --------------------------------------------------------------------------- reading the committed offsets


@pytest.mark.parametrize("code", [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT,
                                  KafkaError.UNSTABLE_OFFSET_COMMIT])
def test_a_retriable_error_reading_the_committed_offsets_is_retried_and_the_batch_written(
        sink: KafkaTransactionalSink, kafka: FakeKafka, clock: FakeClock, code: int) -> None:
    kafka.committed_failures = [KafkaError(code), KafkaError(code)]

    sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert kafka.committed_calls == 3
    assert kafka.records == [(None, b"a")]
    assert kafka.offsets[("t", 0)][0] == 1
    assert clock.sleeps == [0.05, 0.1]  # backoff doubles


def test_a_retriable_error_on_one_partition_of_the_answer_is_retried(sink: KafkaTransactionalSink,
                                                                     kafka: FakeKafka) -> None:
    kafka.committed_failures = [[PartitionResult("t", 0, error=KafkaError(KafkaError.NOT_COORDINATOR))]]

    sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert kafka.committed_calls == 2
    assert kafka.records == [(None, b"a")]


def test_a_retriable_error_that_lasts_past_the_deadline_fails_the_batch_naming_the_group(
        sink: KafkaTransactionalSink, kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.committed_failures = [KafkaError(KafkaError.NOT_COORDINATOR)] * 1000

    with pytest.raises(SourceError, match=r"cannot read the committed offsets of group 'g' \(\d+ attempt"):
        sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert 10.0 - 1.0 <= sum(clock.sleeps) <= 10.0
    assert kafka.records == [] and kafka.transactions == 0


def test_an_error_that_is_not_retriable_fails_the_batch_at_once(sink: KafkaTransactionalSink,
                                                                 kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.committed_failures = [KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED)]

    with pytest.raises(SourceError, match="not retriable"):
        sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert kafka.committed_calls == 1 and clock.sleeps == []


# --------------------------------------------------------------------------- quiet when empty


def test_an_empty_batch_makes_no_transaction_and_logs_nothing_above_debug(
        sink: KafkaTransactionalSink, kafka: FakeKafka, caplog: pytest.LogCaptureFixture) -> None:
    sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ingest"):
        for t in (2000, 3000, 4000):
            sink(kafka_batch(t, [], ("t", 0, 1, 1), ("t", 1, 0, 0)))

    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert kafka.transactions == 1
    assert kafka.committed_calls == 1


# --------------------------------------------------------------------------- offset metadata


def test_the_batch_time_and_identity_travel_as_versioned_offset_metadata(sink: KafkaTransactionalSink,
                                                                         kafka: FakeKafka) -> None:
    sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    offset, metadata = kafka.offsets[("t", 0)]
    assert offset == 1
    assert json.loads(metadata) == {"ingest_sink": "tx-out", "batch_time": 1000, "format": 1}


def test_offsets_committed_without_our_metadata_give_no_batch_time(sink: KafkaTransactionalSink,
                                                                   kafka: FakeKafka) -> None:
    kafka.commit("t", 0, 1, metadata="")  # the direct stream's own group commit after batch 1000
    sink(kafka_batch(2000, ["window"], ("t", 0, 1, 1)))

    assert kafka.records == [(None, b"window")]


def test_offset_metadata_of_another_sink_is_not_taken_for_ours(sink: KafkaTransactionalSink,
                                                               kafka: FakeKafka) -> None:
    kafka.commit("t", 0, 1, json.dumps({"ingest_sink": "other", "batch_time": 9000, "format": 1}))
    sink(kafka_batch(2000, ["window"], ("t", 0, 1, 1)))

    assert kafka.records == [(None, b"window")]


def test_offset_metadata_of_a_newer_format_is_refused_naming_its_version(sink: KafkaTransactionalSink,
                                                                         kafka: FakeKafka) -> None:
    kafka.commit("t", 0, 1, json.dumps({"ingest_sink": "tx-out", "batch_time": 1000, "format": 2}))

    with pytest.raises(SourceError, match="format version 2, and this release of ingest reads format 1"):
        sink(kafka_batch(2000, ["window"], ("t", 0, 1, 1)))
    assert kafka.records == []


def test_an_explicit_name_is_the_identity_in_the_metadata(kafka: FakeKafka,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sink = KafkaTransactionalSink("out", producer_config={"bootstrap.servers": "unused:9092"},
                                  transactional_id="tx-out", group_id="g", name="orders-out")
    kafka.install(sink, monkeypatch)
    sink(kafka_batch(1000, ["a"], ("t", 0, 0, 1)))

    assert sink.sink_id == "orders-out"
    assert json.loads(kafka.offsets[("t", 0)][1])["ingest_sink"] == "orders-out"


def test_records_written_counts_the_records_of_committed_transactions_only(
        sink: KafkaTransactionalSink, kafka: FakeKafka) -> None:
    sink(kafka_batch(1000, ["a", "b", "c"], ("t", 0, 0, 3)))
    sink(kafka_batch(1000, ["a", "b", "c"], ("t", 0, 0, 3)))  # the same batch again: already applied, skipped
    sink(kafka_batch(2000, ["d"], ("t", 0, 3, 4)))

    assert sink.records_written == 4 == len(kafka.records)
    assert (sink.batches_written, sink.batches_skipped) == (2, 1)
