"""The direct Kafka stream against a real broker, on both client backends.

Every behaviour test runs twice, with `client="confluent"` and with
`client="kafka-python"`. Batches run one at a time on a `ManualClock`
(`ssc.step()`); what a batch read is checked against what was produced, record
by record (topic, partition, offset, key, value), and its offset ranges must
tile every partition: each offset planned exactly once, no gap, no overlap.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import pytest

from direct import DataLossError, DeadLetterTopic, DeserializationError, KafkaRecord, avro, kafka_direct_stream
from ingest import BatchFailedError, SourceError, StreamingContext
from ingest.testing.kafka import create_topic, produce, read_to_end
from offsets import OffsetRange

pytestmark = [
    pytest.mark.kafka,
    # kafka-python loads its protocol schemas with a deprecated importlib.resources call.
    pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning"),
]

CLIENTS = ["confluent", "kafka-python"]
TP = tuple[str, int]


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return request.param


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def admin(bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def new_topic(bootstrap: str, prefix: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
    name = unique(prefix)
    create_topic(bootstrap, name, partitions, config)
    return name


def params(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """kafka_params with a group of its own; reading from the earliest offset."""
    out: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": unique("group"),
                           "auto.offset.reset": "earliest"}
    out.update(extra)
    return out


@dataclass
class Seen:
    """What one output operation call saw of a batch."""

    time: int
    ranges: list[OffsetRange]
    records: list[Any]
    recovered: bool
    attempt: int

    def count(self, tp: TP) -> int:
        return sum(1 for r in self.records if (r.topic, r.partition) == tp)


def watch(stream: Any, before: Callable[[Any], None] | None = None) -> list[Seen]:
    """Register an output that keeps every batch's ranges and records (after
    `before(batch)`, which may raise to fail the batch)."""
    seen: list[Seen] = []

    def output(batch: Any) -> None:
        if before is not None:
            before(batch)
        seen.append(Seen(batch.time, batch.offset_ranges, batch.collect(), batch.recovered, batch.attempt))

    stream.foreach_batch(output, name="watch")
    return seen


def contents(records: Iterable[Any]) -> list[tuple[Any, ...]]:
    """(topic, partition, offset, key, value), sorted: what must match exactly."""
    return sorted((r.topic, r.partition, r.offset, r.key, r.value) for r in records)


def in_kafka(bootstrap: str, topic: str, **options: Any) -> list[tuple[Any, ...]]:
    return sorted((topic, r.partition, r.offset, r.key, r.value) for r in read_to_end(bootstrap, topic, **options))


def all_records(seen: list[Seen]) -> list[Any]:
    return [r for s in seen for r in s.records]


def end_offsets(bootstrap: str, topic: str, isolation: str = "read_committed") -> dict[TP, int]:
    """High watermarks (last stable offsets under read_committed) per partition."""
    from confluent_kafka import IsolationLevel, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    client = admin(bootstrap)
    meta = client.list_topics(topic, timeout=15).topics[topic]
    level = IsolationLevel.READ_COMMITTED if isolation == "read_committed" else IsolationLevel.READ_UNCOMMITTED
    futures = client.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in meta.partitions},
                                  isolation_level=level, request_timeout=15)
    return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


def assert_tiles(seen: list[Seen], ends: Mapping[TP, int], starts: Mapping[TP, int] | None = None) -> None:
    """Per partition, the batches' ranges follow each other from `starts`
    (default 0) to `ends`: every offset exactly once, no gap, no overlap; and
    each record lies in its batch's range of its partition."""
    by_tp: dict[TP, list[OffsetRange]] = {}
    for s in seen:
        tps = [(r.topic, r.partition) for r in s.ranges]
        assert len(tps) == len(set(tps)), f"batch {s.time} has two ranges for one partition: {s.ranges}"
        mine = {(r.topic, r.partition): r for r in s.ranges}
        for rec in s.records:
            r = mine.get((rec.topic, rec.partition))
            assert r is not None and r.from_offset <= rec.offset < r.until_offset, \
                f"batch {s.time}: record {rec.topic}[{rec.partition}]@{rec.offset} is outside its ranges {s.ranges}"
        for r in s.ranges:
            by_tp.setdefault((r.topic, r.partition), []).append(r)
    assert set(by_tp) == set(ends), f"partitions read {sorted(by_tp)} != partitions expected {sorted(ends)}"
    for tp, ranges in by_tp.items():
        at = (starts or {}).get(tp, 0)
        for r in ranges:  # in batch order
            assert r.from_offset == at, f"{tp}: range {r} does not start where the previous ended ({at})"
            at = r.until_offset
        assert at == ends[tp], f"{tp}: ranges end at {at}, the partition at {ends[tp]}"


def step_until(ssc: StreamingContext, done: Callable[[], bool], limit: int = 50) -> int:
    """Run batches until `done()`; returns how many ran."""
    for n in range(1, limit + 1):
        ssc.step()
        if done():
            return n
    raise AssertionError(f"not done after {limit} batches")


def read_raw(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """`expected` confluent-kafka messages of `topic` with their headers."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("raw"), "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def committed_offsets(bootstrap: str, group: str, tps: Iterable[TP]) -> dict[TP, int]:
    """The group's committed offsets as a separate consumer reads them (-1001: none)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=15)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in parts}


def commit_for_group(bootstrap: str, group: str, offsets: Mapping[TP, int]) -> None:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    finally:
        consumer.close()


def delete_records_before(bootstrap: str, topic: str, partition: int, offset: int) -> None:
    from confluent_kafka import TopicPartition

    client = admin(bootstrap)  # held until the futures are done: a collected client cancels them
    futures = client.delete_records([TopicPartition(topic, partition, offset)], request_timeout=15)
    for f in futures.values():
        assert f.result(30).low_watermark == offset


# --------------------------------------------------------------------------- ranges and contents


def test_ranges_cover_every_offset_once_and_records_equal_what_was_produced(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "tiles", partitions=4)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 max_rate_per_partition=7)
    seen = watch(stream)
    ssc.start()
    number = 0
    for _ in range(6):  # records arrive between batches; 7/partition/batch splits the backlog
        batch = [(None if number % 5 == 0 else f"key-{number % 13}", f"value-{number}".encode() * (number % 3))
                 for number in range(number, number + 37)]
        number += len(batch)
        produce(kafka_bootstrap, topic, batch)
        ssc.step()
    ends = end_offsets(kafka_bootstrap, topic)
    assert sum(ends.values()) == number
    step_until(ssc, lambda: sum(len(s.records) for s in seen) >= number)
    ssc.step()  # one more: nothing new, every range empty
    assert seen[-1].records == [] and all(r.count == 0 for r in seen[-1].ranges)

    assert contents(all_records(seen)) == in_kafka(kafka_bootstrap, topic)
    assert len(all_records(seen)) == number  # no record twice
    assert_tiles(seen, ends)
    for s in seen:
        for r in s.ranges:
            assert r.count <= 7
    assert all(isinstance(r, KafkaRecord) and r.topic == topic for r in all_records(seen))
    assert {r.key for r in all_records(seen)} >= {None, b"key-1"} and b"" in {r.value for r in all_records(seen)}


def test_every_partition_of_a_batch_is_assigned_before_the_first_is_read_and_each_record_read_once(
        kafka_bootstrap: str, make_context: Any) -> None:
    from ingest.kafka.clients import CONSUMERS

    topic = new_topic(kafka_bootstrap, "prefetch", partitions=4)
    for p in range(4):
        produce(kafka_bootstrap, topic, [f"{p}-{i}" for i in range(30)], partition=p)
    ssc = make_context()  # the inline executor: tasks run in this process, one after another
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), max_records_per_batch=60)
    assigned: list[list[TP]] = []
    seen = watch(stream, before=lambda _batch: assigned.append(
        sorted(tp for tp in CONSUMERS.partitions() if tp[0] == topic)))
    ssc.start()
    ssc.step(3)

    assert assigned[0] == [(topic, p) for p in range(4)]  # before any partition of the first batch was read
    assert [len(s.records) for s in seen] == [60, 60, 0]
    assert_tiles(seen, {(topic, p): 30 for p in range(4)})
    assert contents(all_records(seen)) == in_kafka(kafka_bootstrap, topic)


def test_max_rate_per_partition_caps_each_partition_by_the_batch_interval(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "rate", partitions=3)
    for p, n in ((0, 50), (1, 12), (2, 0)):
        produce(kafka_bootstrap, topic, [f"p{p}-{i}" for i in range(n)], partition=p)
    ssc = make_context(batch_interval=2.0)
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 max_rate_per_partition=10)  # 20 records per partition per 2 s batch
    seen = watch(stream)
    ssc.start()
    ssc.step(4)
    counts = [[s.count((topic, p)) for p in range(3)] for s in seen]
    assert counts == [[20, 12, 0], [20, 0, 0], [10, 0, 0], [0, 0, 0]]
    assert_tiles(seen, {(topic, 0): 50, (topic, 1): 12, (topic, 2): 0})
    assert contents(all_records(seen)) == in_kafka(kafka_bootstrap, topic)


def test_max_records_per_batch_caps_the_whole_batch(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "maxrec", partitions=4)
    for p, n in enumerate((40, 30, 20, 10)):
        produce(kafka_bootstrap, topic, [f"{p}-{i}" for i in range(n)], partition=p)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 max_records_per_batch=25)
    seen = watch(stream)
    ssc.start()
    ssc.step(5)
    assert [len(s.records) for s in seen] == [25, 25, 25, 25, 0]
    # The first batch's budget is shared in proportion to each partition's
    # backlog (40:30:20:10 of 25 is 10, 7.5, 5, 2.5), rounded within one record.
    first = [seen[0].count((topic, p)) for p in range(4)]
    assert all(abs(n - share) <= 1 for n, share in zip(first, (10, 7.5, 5, 2.5))), first
    assert_tiles(seen, {(topic, p): n for p, n in enumerate((40, 30, 20, 10))})
    assert contents(all_records(seen)) == in_kafka(kafka_bootstrap, topic)


def test_backpressure_initial_rate_bounds_the_catch_up_batch_then_the_pid_rate_takes_over(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "backpressure", partitions=4)
    for p in range(4):
        produce(kafka_bootstrap, topic, [f"{p}-{i}" for i in range(1000)], partition=p)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 backpressure=True, initial_rate=200)
    rates: list[Any] = []
    # A job that needs ~0.25 s per batch: the PID estimate follows that, far
    # below the 4000 records waiting and far above the initial 200.
    seen = watch(stream, before=lambda batch: (rates.append(stream.metrics()["rate_limit"]), time.sleep(0.25)))
    ssc.start()
    ssc.step(2)
    # The catch-up batch over a 4000-record backlog is bounded by initial_rate,
    # and so is the second: the estimator learns from its first batch only.
    assert [len(s.records) for s in seen] == [200, 200]
    assert [seen[0].count((topic, p)) for p in range(4)] == [50, 50, 50, 50]
    assert rates == [200, 200]
    rate = stream.metrics()["rate_limit"]
    assert rate == stream.rate_controller.latest_rate
    assert 100 <= rate < 1000, rate  # 200 records in >= 0.25 s: below 800/s, at least the PID's minimum
    lag = {p: 1000 - 100 for p in range(4)}
    ssc.step()
    expected = [min(lag[p], max(1, int(rate * lag[p] / sum(lag.values())))) for p in range(4)]
    assert [seen[2].count((topic, p)) for p in range(4)] == expected  # the PID's rate, split by lag
    assert_tiles(seen, {(topic, p): sum(s.count((topic, p)) for s in seen) for p in range(4)})


# --------------------------------------------------------------------------- changing subscriptions


def test_new_partitions_are_picked_up_and_read_from_their_beginning(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    from confluent_kafka.admin import NewPartitions

    topic = new_topic(kafka_bootstrap, "grow", partitions=2)
    produce(kafka_bootstrap, topic, ["old-0", "old-1"], partition=0)  # before start: skipped (latest)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap, **{"auto.offset.reset": "latest"}),
                                 client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    produce(kafka_bootstrap, topic, ["a", "b"], partition=1)
    ssc.step()
    client_admin = admin(kafka_bootstrap)
    client_admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
    deadline = time.monotonic() + 30
    while len(admin(kafka_bootstrap).list_topics(topic, timeout=10).topics[topic].partitions) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Written before the stream sees the new partitions: must not be skipped.
    produce(kafka_bootstrap, topic, ["new-2-0", "new-2-1"], partition=2)
    produce(kafka_bootstrap, topic, ["new-3-0"], partition=3)
    step_until(ssc, lambda: any((r.topic, r.partition) == (topic, 3) for s in seen for r in s.ranges), limit=10)
    ssc.step()

    new = [(r.partition, r.offset, r.value) for r in all_records(seen) if r.partition >= 2]
    assert new == [(2, 0, b"new-2-0"), (2, 1, b"new-2-1"), (3, 0, b"new-3-0")]
    assert [r.value for r in all_records(seen) if r.partition < 2] == [b"a", b"b"]
    assert_tiles(seen, end_offsets(kafka_bootstrap, topic), starts={(topic, 0): 2})
    assert stream.metrics()["partitions"] == 4


def test_pattern_picks_up_a_topic_created_after_start(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    prefix = unique("pattern")
    first = f"{prefix}.a"
    create_topic(kafka_bootstrap, first, 1)
    produce(kafka_bootstrap, first, ["a0"])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, pattern=rf"{prefix}\..*", kafka_params=params(kafka_bootstrap),
                                 client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    second = f"{prefix}.b"
    create_topic(kafka_bootstrap, second, 2)
    produce(kafka_bootstrap, second, ["b0", "b1", "b2"])
    produce(kafka_bootstrap, first, ["a1"])
    step_until(ssc, lambda: sum(len(s.records) for s in seen) >= 5, limit=10)

    assert contents(all_records(seen)) == sorted(in_kafka(kafka_bootstrap, first) + in_kafka(kafka_bootstrap, second))
    ends = {**end_offsets(kafka_bootstrap, first), **end_offsets(kafka_bootstrap, second)}
    assert_tiles(seen, ends)


# --------------------------------------------------------------------------- gaps: compaction, transactions


@pytest.fixture(scope="module")
def compacted_topic(kafka_bootstrap: str) -> str:
    """A compacted topic whose cleaner has run: gaps between the offsets that
    are left, at its start and in its middle. Shared by both clients (read only)."""
    topic = new_topic(kafka_bootstrap, "compacted", 1, {
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.001",
        "delete.retention.ms": "0", "min.compaction.lag.ms": "0"})
    records = []
    for r in range(12):
        records += [(f"k{i}", f"v{r}-{i}") for i in range(6)] + [(f"unique-{r}", f"u{r}")]
    produce(kafka_bootstrap, topic, records)
    time.sleep(0.3)
    produce(kafka_bootstrap, topic, [("roll", "the first segment is now cleanable")])
    deadline = time.monotonic() + 60  # the cleaner looks every 15 s (log.cleaner.backoff.ms)
    while len(read_to_end(kafka_bootstrap, topic)) == len(records) + 1:
        if time.monotonic() > deadline:
            pytest.fail("the log cleaner did not compact the topic within 60 s")
        time.sleep(0.5)
    return topic


@pytest.mark.slow
def test_compacted_topic_is_read_completely_across_its_gaps(
        kafka_bootstrap: str, client: str, compacted_topic: str, make_context: Any) -> None:
    topic = compacted_topic
    present = in_kafka(kafka_bootstrap, topic)
    offsets = [r[2] for r in present]
    assert offsets[0] > 0 and any(b - a > 1 for a, b in zip(offsets, offsets[1:]))  # gaps at start and inside
    ssc = make_context()
    # 5 offsets per batch: some ranges hold nothing but compacted-away offsets.
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 max_rate_per_partition=5, poll_timeout=10)
    seen = watch(stream)
    ssc.start()
    end = end_offsets(kafka_bootstrap, topic)[(topic, 0)]
    started = time.monotonic()
    step_until(ssc, lambda: sum(r.count for s in seen for r in s.ranges) >= end)
    assert time.monotonic() - started < 10 * len(seen)  # no range waited for the poll timeout
    assert contents(all_records(seen)) == present
    assert any(s.records == [] and s.ranges[0].count == 5 for s in seen)
    assert_tiles(seen, {(topic, 0): end})


def transactional_history(bootstrap: str, topic: str) -> list[str]:
    """Committed and aborted transactions on one partition; returns the
    values that were committed, in order."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": unique("tx"), "acks": "all"})
    producer.init_transactions(30)
    committed: list[str] = []
    for n, (size, commit) in enumerate(((3, True), (4, False), (2, True), (5, False), (1, False), (3, True))):
        producer.begin_transaction()
        values = [f"tx{n}-{i}" for i in range(size)]
        for v in values:
            producer.produce(topic, value=v.encode(), key=f"k{n}".encode(), partition=0)
        if commit:
            producer.commit_transaction(30)
            committed += values
        else:
            producer.flush(30)
            producer.abort_transaction(30)
    return committed


def test_aborted_transactions_are_skipped_with_read_committed(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "transactions", 1)
    produce(kafka_bootstrap, topic, ["plain-0", "plain-1"])
    committed = ["plain-0", "plain-1"] + transactional_history(kafka_bootstrap, topic)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap, **{
        "isolation.level": "read_committed"}), client=client, max_rate_per_partition=3, poll_timeout=10)
    seen = watch(stream)
    ssc.start()
    end = end_offsets(kafka_bootstrap, topic)[(topic, 0)]
    assert end == 2 + 18 + 6  # 18 transactional records and 6 markers
    started = time.monotonic()
    step_until(ssc, lambda: sum(r.count for s in seen for r in s.ranges) >= end)
    assert time.monotonic() - started < 10 * len(seen)

    assert [r.value.decode() for r in all_records(seen)] == committed
    assert contents(all_records(seen)) == in_kafka(kafka_bootstrap, topic)
    assert any(s.records == [] and s.ranges[0].count == 3 for s in seen)  # a range of aborted records only
    assert_tiles(seen, {(topic, 0): end})


def test_an_open_transaction_holds_the_stream_at_the_last_stable_offset(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    from confluent_kafka import Producer

    topic = new_topic(kafka_bootstrap, "open-tx", 1)
    produce(kafka_bootstrap, topic, ["before"])
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("tx"), "acks": "all"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"pending", partition=0)
    producer.flush(30)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 poll_timeout=10)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert [r.value for r in seen[0].records] == [b"before"]
    assert [(r.from_offset, r.until_offset) for r in seen[0].ranges] == [(0, 1)]
    producer.commit_transaction(30)
    # The coordinator writes the commit marker after answering, so the last stable
    # offset moves a moment later: plan the next batch once it has.
    deadline = time.monotonic() + 30
    while end_offsets(kafka_bootstrap, topic)[(topic, 0)] < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    ssc.step()
    assert [r.value for r in seen[1].records] == [b"pending"]
    assert_tiles(seen, end_offsets(kafka_bootstrap, topic))


# --------------------------------------------------------------------------- data loss


def start_and_lose(bootstrap: str, client: str, make_context: Any, policy: str) -> tuple[Any, Any, list[Seen], str]:
    """100 records, a batch that reads 0..10, then records before offset 50 deleted."""
    topic = new_topic(bootstrap, f"loss-{policy}", 1)
    produce(bootstrap, topic, [f"r{i}" for i in range(100)])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(bootstrap), client=client,
                                 max_rate_per_partition=10, on_data_loss=policy, name=unique("lossy"))
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert [(r.from_offset, r.until_offset) for r in seen[0].ranges] == [(0, 10)]
    delete_records_before(bootstrap, topic, 0, 50)
    return ssc, stream, seen, topic


def test_data_loss_fail_stops_the_context_naming_topic_partition_and_offsets(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    ssc, stream, seen, topic = start_and_lose(kafka_bootstrap, client, make_context, "fail")
    with pytest.raises(DataLossError) as caught:
        ssc.step()
    message = str(caught.value)
    assert f"{topic}[0]" in message and "offsets 10..49" in message and "on_data_loss" in message
    with pytest.raises(DataLossError):
        ssc.await_termination(timeout=30)
    assert ssc.state == "stopped" and isinstance(ssc.error, DataLossError)
    assert len(seen) == 1 and stream.metrics()["records_lost"] == 0


def test_data_loss_earliest_skips_to_the_log_start_and_counts_what_was_lost(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    ssc, stream, seen, topic = start_and_lose(kafka_bootstrap, client, make_context, "earliest")
    ssc.step(6)
    assert [(r.from_offset, r.until_offset) for s in seen for r in s.ranges] == \
        [(0, 10), (50, 60), (60, 70), (70, 80), (80, 90), (90, 100), (100, 100)]
    assert [r.value for r in all_records(seen)] == [f"r{i}".encode() for i in [*range(10), *range(50, 100)]]
    assert stream.metrics()["records_lost"] == 40


def test_data_loss_latest_skips_to_the_end(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    ssc, stream, seen, topic = start_and_lose(kafka_bootstrap, client, make_context, "latest")
    ssc.step()
    assert [(r.from_offset, r.until_offset) for r in seen[1].ranges] == [(100, 100)] and seen[1].records == []
    assert stream.metrics()["records_lost"] == 90
    produce(kafka_bootstrap, topic, ["after-0", "after-1"])
    ssc.step()
    assert [(r.offset, r.value) for r in seen[2].records] == [(100, b"after-0"), (101, b"after-1")]


# --------------------------------------------------------------------------- decoding


def poison_topic(bootstrap: str) -> str:
    topic = new_topic(bootstrap, "poison", 1)
    values = [json.dumps({"n": i}).encode() for i in range(8)]
    values[5] = b"\xffnot json"
    produce(bootstrap, topic, [(f"k{i}", v) for i, v in enumerate(values)])
    return topic


def test_poison_record_fail_stops_with_topic_partition_and_offset(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = poison_topic(kafka_bootstrap)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 value_deserializer="json", on_decode_error="fail")
    seen = watch(stream)
    ssc.start()
    with pytest.raises(BatchFailedError) as caught:
        ssc.step()
    cause = caught.value.__cause__
    assert isinstance(cause, DeserializationError)
    assert (cause.topic, cause.partition, cause.offset) == (topic, 0, 5)
    assert f"{topic}[0] offset 5" in str(caught.value) and "on_decode_error" in str(caught.value)
    assert seen == [] and ssc.state in ("stopping", "stopped")


def test_poison_record_skip_drops_and_counts_it(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = poison_topic(kafka_bootstrap)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 key_deserializer="utf-8", value_deserializer="json", on_decode_error="skip",
                                 name=unique("skipping"))
    seen = watch(stream)
    ssc.start()
    ssc.step(2)
    assert [(r.offset, r.key, r.value) for r in all_records(seen)] == \
        [(i, f"k{i}", {"n": i}) for i in range(8) if i != 5]
    assert stream.metrics()["decode_errors_skipped"] == 1
    assert_tiles(seen, {(topic, 0): 8})


def test_poison_record_goes_to_the_dead_letter_topic_with_provenance_headers(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = poison_topic(kafka_bootstrap)
    dlq = new_topic(kafka_bootstrap, "dlq", 1)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 value_deserializer="json", on_decode_error=DeadLetterTopic(dlq),
                                 name=unique("dead-lettering"))
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert [r.value for r in all_records(seen)] == [{"n": i} for i in range(8) if i != 5]
    assert stream.metrics()["dead_lettered"] == 1
    [msg] = read_raw(kafka_bootstrap, dlq, expected=1)
    assert (msg.key(), msg.value()) == (b"k5", b"\xffnot json")
    headers = dict(msg.headers())
    assert headers["ingest.source.topic"] == topic.encode()
    assert headers["ingest.source.partition"] == b"0"
    assert headers["ingest.source.offset"] == b"5"
    assert headers["ingest.error"].startswith(b"UnicodeDecodeError") or \
        headers["ingest.error"].startswith(b"JSONDecodeError")
    assert len(read_to_end(kafka_bootstrap, dlq)) == 1


AVRO_SCHEMA = {"type": "record", "name": "Reading", "namespace": "test.ingest", "fields": [
    {"name": "sensor", "type": "string"}, {"name": "value", "type": "double"},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "note", "type": ["null", "string"], "default": None}]}


@pytest.mark.parametrize("framing", [False, True], ids=["plain", "confluent-framing"])
def test_avro_values_round_trip(kafka_bootstrap: str, client: str, make_context: Any, framing: bool) -> None:
    import fastavro

    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    readings = [{"sensor": f"s{i}", "value": i / 4, "tags": ["a"] * (i % 3), "note": None if i % 2 else f"n{i}"}
                for i in range(20)]

    def encode(reading: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        if framing:
            buf.write(b"\x00\x00\x00\x00\x07")  # magic byte, schema id 7
        fastavro.schemaless_writer(buf, parsed, reading)
        return buf.getvalue()

    topic = new_topic(kafka_bootstrap, "avro", 2)
    produce(kafka_bootstrap, topic, [(r["sensor"], encode(r)) for r in readings])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client,
                                 value_deserializer=avro(json.dumps(AVRO_SCHEMA), confluent_framing=framing))
    seen = watch(stream)
    ssc.start()
    ssc.step()
    got = sorted((r.value for r in all_records(seen)), key=lambda v: int(v["sensor"][1:]))
    assert got == readings


# --------------------------------------------------------------------------- committing offsets


def test_offsets_are_committed_to_the_group_after_each_batch(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "commit", 2)
    for p in range(2):
        produce(kafka_bootstrap, topic, [f"{p}-{i}" for i in range(30)], partition=p)
    kp = params(kafka_bootstrap)
    ssc = make_context()
    seen: list[Seen] = []
    at_output: list[dict[TP, int]] = []
    stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client, max_rate_per_partition=10)
    seen = watch(stream, before=lambda b: at_output.append(
        committed_offsets(kafka_bootstrap, kp["group.id"], [(topic, 0), (topic, 1)])))
    ssc.start()
    ssc.step()
    assert stream.flush_commits(10)  # group commits run off the scheduler's thread
    after_first = committed_offsets(kafka_bootstrap, kp["group.id"], [(topic, 0), (topic, 1)])
    ssc.step()
    assert stream.flush_commits(10)
    after_second = committed_offsets(kafka_bootstrap, kp["group.id"], [(topic, 0), (topic, 1)])
    assert at_output[0] == {(topic, 0): -1001, (topic, 1): -1001}  # not before the batch's outputs ran
    assert after_first == {(topic, 0): 10, (topic, 1): 10}
    assert at_output[1] in ({(topic, 0): -1001, (topic, 1): -1001}, after_first)  # never ahead of a commit
    assert after_second == {(r.topic, r.partition): r.until_offset for r in seen[1].ranges} == \
        {(topic, 0): 20, (topic, 1): 20}


def test_commit_offsets_false_leaves_the_group_alone(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "nocommit", 1)
    produce(kafka_bootstrap, topic, ["a", "b", "c"])
    kp = params(kafka_bootstrap)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client, commit_offsets=False)
    seen = watch(stream)
    ssc.start()
    ssc.step(2)
    assert [r.value for r in all_records(seen)] == [b"a", b"b", b"c"]
    assert committed_offsets(kafka_bootstrap, kp["group.id"], [(topic, 0)]) == {(topic, 0): -1001}


# --------------------------------------------------------------------------- starting positions


def test_committed_group_offsets_are_the_start_without_a_checkpoint(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "resume-group", 3)
    for p in range(3):
        produce(kafka_bootstrap, topic, [f"{p}-{i}" for i in range(10)], partition=p)
    kp = params(kafka_bootstrap)  # auto.offset.reset=earliest: for partition 2, which has no commit
    commit_for_group(kafka_bootstrap, kp["group.id"], {(topic, 0): 3, (topic, 1): 7})
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert [(r.partition, r.from_offset, r.until_offset) for r in seen[0].ranges] == \
        [(0, 3, 10), (1, 7, 10), (2, 0, 10)]
    assert contents(all_records(seen)) == [r for r in in_kafka(kafka_bootstrap, topic)
                                            if r[2] >= {0: 3, 1: 7, 2: 0}[r[1]]]


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_auto_offset_reset_decides_the_start_without_commits(
        kafka_bootstrap: str, client: str, make_context: Any, reset: str) -> None:
    topic = new_topic(kafka_bootstrap, f"reset-{reset}", 2)
    produce(kafka_bootstrap, topic, ["early-0", "early-1", "early-2"], partition=0)
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap, **{"auto.offset.reset": reset}),
                                 client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    produce(kafka_bootstrap, topic, ["late"], partition=1)
    ssc.step()
    values = [r.value for r in all_records(seen)]
    if reset == "earliest":
        assert values == [b"early-0", b"early-1", b"early-2", b"late"]
        assert_tiles(seen, {(topic, 0): 3, (topic, 1): 1})
    else:
        assert values == [b"late"]
        assert [(r.partition, r.from_offset, r.until_offset) for r in seen[0].ranges] == [(0, 3, 3), (1, 0, 0)]
        assert_tiles(seen, {(topic, 0): 3, (topic, 1): 1}, starts={(topic, 0): 3})


def test_with_latest_reset_records_produced_between_start_and_the_first_batch_are_read(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "reset-at-start", 1)
    produce(kafka_bootstrap, topic, ["before-start"])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap, **{"auto.offset.reset": "latest"}),
                                 client=client)
    seen = watch(stream)
    ssc.start()
    produce(kafka_bootstrap, topic, ["after-start-0", "after-start-1"])  # before the first batch is planned
    ssc.step()
    assert [r.value for r in all_records(seen)] == [b"after-start-0", b"after-start-1"]
    assert_tiles(seen, {(topic, 0): 3}, starts={(topic, 0): 1})


def test_a_restart_from_the_checkpoint_resumes_after_the_last_planned_range(
        kafka_bootstrap: str, client: str, make_context: Any, tmp_path: Any) -> None:
    topic = new_topic(kafka_bootstrap, "checkpoint", 2)
    produce(kafka_bootstrap, topic, [f"v{i}" for i in range(60)])
    kp = params(kafka_bootstrap, **{"auto.offset.reset": "latest"})  # a fresh start would skip everything

    def job() -> tuple[StreamingContext, list[Seen]]:
        ssc = make_context()
        ssc.checkpoint(str(tmp_path / "cp"))
        stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client, max_rate_per_partition=8,
                                     commit_offsets=False, name="events")
        return ssc, watch(stream)

    # The first run starts at the end (latest), then reads what arrives.
    ssc, first = job()
    ssc.start()
    ssc.step()
    produce(kafka_bootstrap, topic, [f"w{i}" for i in range(40)])
    ssc.step(2)
    ssc.stop()
    produce(kafka_bootstrap, topic, [f"x{i}" for i in range(10)])
    ssc, second = job()
    ssc.start()
    step_until(ssc, lambda: second[-1].records == [] and second[-1].ranges[0].count == 0, limit=20)

    assert not any(s.recovered for s in second)
    starts = {(r.topic, r.partition): r.from_offset for r in first[0].ranges}
    assert_tiles(first + second, end_offsets(kafka_bootstrap, topic), starts=starts)
    assert {(r.topic, r.partition): r.from_offset for r in second[0].ranges} == \
        {(r.topic, r.partition): r.until_offset for r in first[-1].ranges}
    assert contents(all_records(first + second)) == [r for r in in_kafka(kafka_bootstrap, topic)
                                                     if r[2] >= starts[(r[0], r[1])]]
    assert sorted(r.value for r in all_records(first + second)) == \
        sorted([f"w{i}".encode() for i in range(40)] + [f"x{i}".encode() for i in range(10)])


def test_a_batch_with_an_intent_and_no_commit_is_re_run_with_the_same_ranges(
        kafka_bootstrap: str, client: str, make_context: Any, tmp_path: Any) -> None:
    topic = new_topic(kafka_bootstrap, "rerun", 2)
    produce(kafka_bootstrap, topic, [f"v{i}" for i in range(40)])
    kp = params(kafka_bootstrap)
    planned: list[list[OffsetRange]] = []

    def job(fail_second: bool) -> tuple[StreamingContext, list[Seen]]:
        ssc = make_context()
        ssc.checkpoint(str(tmp_path / "cp"))
        stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client, max_rate_per_partition=6,
                                     name="events")

        def before(batch: Any) -> None:
            planned.append(batch.offset_ranges)
            if fail_second and len(planned) == 2:
                raise RuntimeError("the sink is down")

        return ssc, watch(stream, before)

    ssc, first = job(fail_second=True)
    ssc.start()
    ssc.step()
    with pytest.raises(BatchFailedError, match="the sink is down"):
        ssc.step()
    with pytest.raises(BatchFailedError):  # the failed job lets go of its checkpoint once it stopped
        ssc.await_termination(timeout=30)
    failed_ranges = planned[1]
    assert len(first) == 1 and [r.from_offset for r in failed_ranges] == [r.until_offset for r in first[0].ranges]
    # Group offsets follow committed batches only.
    assert committed_offsets(kafka_bootstrap, kp["group.id"], [(topic, 0), (topic, 1)]) == \
        {(r.topic, r.partition): r.until_offset for r in first[0].ranges}
    produce(kafka_bootstrap, topic, [f"more{i}" for i in range(30)])  # a new plan would differ
    ssc, second = job(fail_second=False)
    ssc.start()
    step_until(ssc, lambda: second[-1].records == [] and second[-1].ranges[0].count == 0, limit=20)

    assert second[0].recovered and second[0].ranges == failed_ranges
    assert not any(s.recovered for s in second[1:])
    assert_tiles(first + second, end_offsets(kafka_bootstrap, topic))
    assert contents(all_records(first + second)) == in_kafka(kafka_bootstrap, topic)


def test_a_re_run_batch_whose_records_are_gone_fails_whatever_on_data_loss_says(
        kafka_bootstrap: str, client: str, make_context: Any, tmp_path: Any) -> None:
    topic = new_topic(kafka_bootstrap, "rerun-lost", 1)
    produce(kafka_bootstrap, topic, [f"v{i}" for i in range(20)])
    kp = params(kafka_bootstrap)

    def job(fail: bool) -> StreamingContext:
        ssc = make_context()
        ssc.checkpoint(str(tmp_path / "cp"))
        stream = kafka_direct_stream(ssc, [topic], kafka_params=kp, client=client, name="events",
                                     on_data_loss="earliest")

        def before(batch: Any) -> None:
            if fail:
                raise RuntimeError("the sink is down")

        watch(stream, before)
        return ssc

    ssc = job(fail=True)
    ssc.start()
    with pytest.raises(BatchFailedError, match="the sink is down"):
        ssc.step()  # the intent for [0, 20) is written, the batch is not committed
    delete_records_before(kafka_bootstrap, topic, 0, 10)  # retention removes half of its range
    ssc = job(fail=False)
    ssc.start()
    with pytest.raises(BatchFailedError) as caught:
        ssc.step()
    assert isinstance(caught.value.__cause__, DataLossError)
    message = str(caught.value)
    assert f"{topic}[0]" in message and "on_data_loss does not apply" in message


def test_without_a_checkpoint_the_sinks_offsets_are_the_start_and_every_record_is_written_once(
        kafka_bootstrap: str, client: str, make_context: Any, tmp_path: Any) -> None:
    import sqlite3

    from ingest.sinks import SqlSink

    topic = new_topic(kafka_bootstrap, "sql-sink", 2)
    produce(kafka_bootstrap, topic, [f"v{i}" for i in range(30)])
    database = tmp_path / "out.db"

    def write(cursor: Any, batch: Any) -> None:
        cursor.execute("CREATE TABLE IF NOT EXISTS events (part INTEGER, off INTEGER, value BLOB)")
        cursor.executemany("INSERT INTO events VALUES (?, ?, ?)",
                           [(r.partition, r.offset, r.value) for r in batch.collect()])

    def job(reset: str) -> tuple[StreamingContext, SqlSink, list[Seen]]:
        ssc = make_context()
        sink = SqlSink(lambda: sqlite3.connect(database), write)
        stream = kafka_direct_stream(ssc, [topic], client=client, name="events", offset_store=sink,
                                     commit_offsets=False, max_rate_per_partition=5,
                                     kafka_params=params(kafka_bootstrap, **{"auto.offset.reset": reset}))
        stream.foreach_batch(sink)
        return ssc, sink, watch(stream)

    ssc, sink, first = job("earliest")
    ssc.start()
    ssc.step(2)
    ssc.stop()
    sink.close()
    produce(kafka_bootstrap, topic, [f"w{i}" for i in range(10)])
    # latest: a start that ignored the sink's offsets would skip what is left
    ssc, sink, second = job("latest")
    ssc.start()
    ssc.step(6)
    ssc.stop()
    sink.close()

    assert {(r.topic, r.partition): r.from_offset for r in second[0].ranges} == \
        {(r.topic, r.partition): r.until_offset for r in first[-1].ranges}
    assert_tiles(first + second, end_offsets(kafka_bootstrap, topic))
    with sqlite3.connect(database) as conn:
        rows = sorted(conn.execute("SELECT part, off, value FROM events"))
    assert rows == [(r[1], r[2], r[4]) for r in in_kafka(kafka_bootstrap, topic)]
    assert len(rows) == 40


# --------------------------------------------------------------------------- bad input and faults


def test_an_unknown_topic_fails_the_start_naming_it(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    missing = unique("no-such-topic")
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [missing], kafka_params=params(kafka_bootstrap), client=client)
    watch(stream)
    with pytest.raises(SourceError) as caught:
        ssc.start()
    assert missing in str(caught.value) and "do not exist" in str(caught.value)
    assert ssc.state == "stopped"
    assert missing not in admin(kafka_bootstrap).list_topics(timeout=10).topics  # and it was not auto-created


def test_an_unreachable_broker_is_a_clear_error_at_start_not_a_hang(client: str, make_context: Any) -> None:
    from ingest.testing.jvm import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    ssc = make_context()
    stream = kafka_direct_stream(ssc, ["events"], kafka_params={"bootstrap.servers": address, "group.id": "g"},
                                 client=client, broker_wait_timeout=2)
    watch(stream)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        ssc.start()
    waited = time.monotonic() - started
    assert f"no Kafka broker answered at {address} (kafka_params['bootstrap.servers'])" in str(caught.value)
    assert waited < 40, f"start() took {waited:.0f} s with broker_wait_timeout=2"
    assert ssc.state == "stopped"


@pytest.mark.slow
def test_start_gives_up_on_an_unreachable_broker_within_broker_wait_timeout(
        client: str, make_context: Any) -> None:
    from ingest.testing.jvm import free_port

    ssc = make_context()
    stream = kafka_direct_stream(ssc, ["events"], client=client, broker_wait_timeout=2,
                                 kafka_params={"bootstrap.servers": f"127.0.0.1:{free_port()}", "group.id": "g"})
    watch(stream)
    started = time.monotonic()
    with pytest.raises(SourceError, match="tried for 2 s to read the cluster's metadata"):
        ssc.start()
    waited = time.monotonic() - started
    assert waited < 2 + 5, f"start() gave up after {waited:.0f} s with broker_wait_timeout=2"


def test_a_topic_deleted_while_running_fails_the_batch_saying_so(
        kafka_bootstrap: str, client: str, make_context: Any) -> None:
    topic = new_topic(kafka_bootstrap, "doomed", 2)
    produce(kafka_bootstrap, topic, ["a", "b"])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert len(all_records(seen)) == 2
    client_admin = admin(kafka_bootstrap)
    client_admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    deadline = time.monotonic() + 30
    while topic in admin(kafka_bootstrap).list_topics(timeout=10).topics:
        assert time.monotonic() < deadline, "the broker still lists the deleted topic"
        time.sleep(0.2)
    with pytest.raises(SourceError) as caught:
        ssc.step()
    assert topic in str(caught.value) and "no longer exist" in str(caught.value)
    assert len(seen) == 1


def test_a_job_in_a_fresh_process_starts_and_reads(
        kafka_bootstrap: str, client: str) -> None:
    """Nothing else imported in the process: the client backend must import
    everything it uses itself."""
    topic = new_topic(kafka_bootstrap, "fresh", 1)
    produce(kafka_bootstrap, topic, ["a", "b", "c"])
    script = textwrap.dedent(f"""
        from direct import kafka_direct_stream
        from ingest import ManualClock, StreamingContext

        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
        stream = kafka_direct_stream(ssc, [{topic!r}], client={client!r}, kafka_params={{
            "bootstrap.servers": {kafka_bootstrap!r}, "group.id": {unique("group")!r},
            "auto.offset.reset": "earliest"}})
        values = []
        stream.foreach_batch(lambda batch: values.extend(r.value for r in batch.collect()))
        ssc.start()
        ssc.step()
        ssc.stop(graceful=False)
        print("read", values)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "read [b'a', b'b', b'c']"


def test_headers_and_timestamps_reach_the_records(kafka_bootstrap: str, client: str, make_context: Any) -> None:
    from confluent_kafka import Producer

    topic = new_topic(kafka_bootstrap, "headers", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topic, key=b"k", value=b"with", headers=[("h1", b"x"), ("h2", None), ("h1", b"y")],
                     timestamp=1_700_000_000_123)
    producer.produce(topic, value=None, timestamp=1_700_000_000_456)
    assert producer.flush(30) == 0
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(kafka_bootstrap), client=client)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    assert all_records(seen) == [
        KafkaRecord(topic, 0, 0, 1_700_000_000_123, b"k", b"with", (("h1", b"x"), ("h2", None), ("h1", b"y"))),
        KafkaRecord(topic, 0, 1, 1_700_000_000_456, None, None, None)]


# --------------------------------------------------------------------------- broker restart


@pytest.fixture(scope="module")
def own_broker() -> Any:
    """A broker of this module's own, which the restart test stops and starts."""
    from ingest.testing.kafka import KafkaBroker, missing_requirements
    from ingest.testing.plugin import skip_or_fail

    missing = missing_requirements()
    if missing:
        skip_or_fail("the broker-restart test needs " + " and ".join(missing))
    broker = KafkaBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.slow
def test_the_job_waits_for_a_restarting_broker_and_goes_on_without_losing_records(
        own_broker: Any, client: str, make_context: Any) -> None:
    bootstrap = own_broker.bootstrap
    topic = new_topic(bootstrap, "restart", 2)
    produce(bootstrap, topic, [f"before-{i}" for i in range(50)])
    ssc = make_context()
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params(bootstrap), client=client,
                                 broker_wait_timeout=120, poll_timeout=60)
    seen = watch(stream)
    ssc.start()
    ssc.step()
    produce(bootstrap, topic, [f"during-{i}" for i in range(50)])  # read by the batch that runs over the restart
    failures: list[BaseException] = []

    def batch_over_the_restart() -> None:
        try:
            ssc.step(timeout=240)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    own_broker.stop_process()  # data, ports and configuration stay
    stepper = threading.Thread(target=batch_over_the_restart, name="step-over-restart")
    stepper.start()
    time.sleep(3)  # the batch is planned while the broker is down
    own_broker.start_process()
    stepper.join(300)
    assert not stepper.is_alive()
    assert failures == []
    produce(bootstrap, topic, [f"after-{i}" for i in range(50)])
    step_until(ssc, lambda: len(all_records(seen)) >= 150, limit=10)

    assert contents(all_records(seen)) == in_kafka(bootstrap, topic)
    assert len(all_records(seen)) == 150
    assert_tiles(seen, end_offsets(bootstrap, topic))
