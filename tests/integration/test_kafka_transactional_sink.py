"""KafkaTransactionalSink against a real broker: one transaction per batch with
the input offsets, skip of a batch already written, zombie fencing."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from ingest.batch import Batch
from ingest.dataset import Dataset
from ingest.sinks import KafkaTransactionalSink
from ingest.testing.kafka import create_topic, read_to_end
from offsets import KafkaRanges, OffsetRange, QueueItems

pytestmark = pytest.mark.kafka


def batch(time_ms: int, records: list[tuple[str, str]], ranges: list[list]) -> Batch:
    return Batch(time_ms, Dataset.from_records(records),
                 positions={"input": KafkaRanges(tuple(OffsetRange(*r) for r in ranges))})


def committed(bootstrap: str, group: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        return consumer.committed([TopicPartition(topic, partition)], timeout=30)[0].offset
    finally:
        consumer.close()


@pytest.fixture
def topics(kafka_bootstrap: str) -> tuple[str, str, str]:
    suffix = uuid.uuid4().hex[:8]
    source, out = f"txsink-in-{suffix}", f"txsink-out-{suffix}"
    create_topic(kafka_bootstrap, source)
    create_topic(kafka_bootstrap, out)
    return source, out, f"txsink-group-{suffix}"


def test_a_batch_and_its_input_offsets_commit_in_one_transaction(kafka_bootstrap: str, topics) -> None:
    source, out, group = topics
    sink = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                  transactional_id=f"tx-{group}", group_id=group)
    sink(batch(1000, [("a", "1"), ("b", "2")], [[source, 0, 0, 2]]))
    sink(batch(2000, [("c", "3")], [[source, 0, 2, 3]]))
    records = read_to_end(kafka_bootstrap, out)
    assert [(r.key, r.value) for r in records] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert committed(kafka_bootstrap, group, source) == 3
    sink.close()


def test_a_batch_already_written_is_skipped_when_re_run(kafka_bootstrap: str, topics) -> None:
    source, out, group = topics
    first = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                   transactional_id=f"tx-{group}", group_id=group)
    first(batch(1000, [("a", "1")], [[source, 0, 0, 1]]))
    first.close()
    restarted = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                       transactional_id=f"tx-{group}", group_id=group)
    restarted(batch(1000, [("a", "1")], [[source, 0, 0, 1]]))  # re-run after a crash
    assert restarted.batches_skipped == 1 and restarted.batches_written == 0
    assert [r.value for r in read_to_end(kafka_bootstrap, out)] == [b"1"]
    restarted.close()


def test_a_restarted_job_fences_its_zombie(kafka_bootstrap: str, topics) -> None:
    source, out, group = topics
    zombie = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                    transactional_id=f"tx-{group}", group_id=group)
    zombie(batch(1000, [("a", "1")], [[source, 0, 0, 1]]))
    successor = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                       transactional_id=f"tx-{group}", group_id=group)
    successor(batch(2000, [("b", "2")], [[source, 0, 1, 2]]))  # init_transactions fences the zombie
    with pytest.raises(KafkaException) as fenced:
        zombie(batch(3000, [("z", "zombie")], [[source, 0, 2, 3]]))
    assert fenced.value.args[0].fatal() or "fenc" in str(fenced.value).lower()
    assert [r.value for r in read_to_end(kafka_bootstrap, out)] == [b"1", b"2"]
    assert committed(kafka_bootstrap, group, source) == 2
    successor.close()


def test_a_batch_without_kafka_offsets_is_refused(kafka_bootstrap: str, topics) -> None:
    _source, out, group = topics
    from ingest.errors import ConfigError

    sink = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                  transactional_id=f"tx-{group}", group_id=group)
    with pytest.raises(ConfigError, match="direct Kafka stream"):
        sink(Batch(1000, Dataset.from_records(["x"]), positions={"queue-0": QueueItems(("x",), 1)}))


def test_a_batch_whose_ranges_are_all_empty_writes_its_output_once_across_a_restart(kafka_bootstrap: str,
                                                                                     topics) -> None:
    # A window can give output in a batch that read nothing; the batch time stored as
    # the committed offsets' metadata tells a re-run that it was written.
    source, out, group = topics
    first = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                   transactional_id=f"tx-{group}", group_id=group)
    first(batch(1000, [("a", "1")], [[source, 0, 0, 1]]))
    first(batch(2000, [("w", "window")], [[source, 0, 1, 1]]))
    first.close()
    restarted = KafkaTransactionalSink(out, producer_config={"bootstrap.servers": kafka_bootstrap},
                                       transactional_id=f"tx-{group}", group_id=group)
    restarted(batch(2000, [("w", "window")], [[source, 0, 1, 1]]))  # re-run after a crash

    assert [r.value for r in read_to_end(kafka_bootstrap, out)] == [b"1", b"window"]
    assert (restarted.batches_written, restarted.batches_skipped) == (0, 1)
    assert committed(kafka_bootstrap, group, source) == 1
    restarted.close()
