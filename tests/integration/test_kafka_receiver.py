"""The reliable Kafka receiver (`receivers.kafka_stream`) against a real broker.

With the write-ahead log on, the receiver stores each consumed block and only
then commits its offsets to the group: every record produced is received, the
group's committed offsets never run ahead of what is stored, and a second
member joining the group (a rebalance that revokes and reassigns partitions)
costs the receiver nothing of the partitions it keeps.
"""

from __future__ import annotations

import functools

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from wal_faults import DiskFull

from ingest import StreamingContext
from ingest.errors import ReceiverError, StorageError
from ingest.kafka.records import KafkaRecord
from ingest.testing.kafka import create_topic, produce
from receivers import kafka_stream

pytestmark = pytest.mark.kafka

STREAM = "orders"


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition, read back from the broker
    (-1001, OFFSET_INVALID, where nothing was committed)."""
    from confluent_kafka import Consumer, TopicPartition

    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        reader.close()


@pytest.fixture
def contexts(make_context: Any) -> Any:
    """Contexts with the write-ahead log on and quiet batch logs (options may override)."""
    return functools.partial(make_context, log_batches=False, write_ahead_log=True)


def receiver_job(contexts, checkpoint: Path, bootstrap: str, topic: str, group: str,
                 kafka_params: dict[str, Any] | None = None,
                 **stream_options: Any) -> tuple[StreamingContext, Any, list[list[KafkaRecord]]]:
    ssc = contexts()
    ssc.checkpoint(str(checkpoint))
    params = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
              "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, **(kafka_params or {})}
    stream = kafka_stream(ssc, [topic], params, name=STREAM, **stream_options)
    batches: list[list[KafkaRecord]] = []
    stream.foreach_batch(lambda b: batches.append(b.collect()))
    return ssc, stream, batches


def values(batches: list[list[KafkaRecord]]) -> list[bytes]:
    return [r.value for b in batches for r in b]


def test_every_record_produced_is_received_with_its_position(contexts, tmp_path: Path, kafka_bootstrap: str) -> None:
    topic, group = unique("receiver-all"), unique("group")
    create_topic(kafka_bootstrap, topic, partitions=2)
    sent = [(f"k{i % 7}".encode(), f"value-{i}".encode()) for i in range(600)]
    positions = produce(kafka_bootstrap, topic, sent[:300])
    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group, block_records=50)
    ssc.start()
    positions += produce(kafka_bootstrap, topic, sent[300:])
    wait_for(lambda: stream.records_received >= len(sent), f"{len(sent)} records received")
    ssc.step()
    got = [r for b in batches for r in b]
    assert len(got) == len(sent)
    by_position = {(r.partition, r.offset): (r.key, r.value) for r in got}
    assert by_position == dict(zip(positions, sent))
    assert all(r.topic == topic and r.timestamp is not None for r in got)
    for partition in (0, 1):  # in offset order within a partition
        offsets = [r.offset for r in got if r.partition == partition]
        assert offsets == sorted(offsets)


def test_offsets_are_committed_to_the_group_only_after_the_block_is_stored(
        contexts, tmp_path: Path, kafka_bootstrap: str) -> None:
    topic, group = unique("receiver-commit"), unique("group")
    create_topic(kafka_bootstrap, topic)
    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group, block_records=40)
    block_log_put = None
    seen: list[tuple[int, int, int, int]] = []  # (first offset, next offset, committed before, committed after put)

    def put_and_watch(stream_name: str, block: Any) -> Any:
        first, nxt = block.records[0].offset, block.records[-1].offset + 1
        before = committed_offsets(kafka_bootstrap, group, topic, 1)[0]
        info = block_log_put(stream_name, block)
        after = committed_offsets(kafka_bootstrap, group, topic, 1)[0]  # stored, store_batch not returned yet
        seen.append((first, nxt, before, after))
        return info

    ssc.start()
    block_log_put = stream.store.put
    stream.store.put = put_and_watch  # the BlockLog opened by start()
    produce(kafka_bootstrap, topic, [f"v{i}".encode() for i in range(200)])
    wait_for(lambda: stream.records_received >= 200, "200 records received")
    ssc.step()
    assert values(batches) == [f"v{i}".encode() for i in range(200)]
    assert seen, "blocks went through the block log"
    for first, nxt, before, after in seen:
        assert before <= first and after <= first, (first, nxt, before, after)
    # ...and once store_batch returned, the block's offsets were committed.
    wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic, 1)[0] == 200,
             "the group's committed offset to reach the end of the topic")
    assert [s[2] for s in seen[1:]] == [s[1] for s in seen[:-1]], \
        "each block's offsets were committed before the next block was stored"


def test_a_second_group_member_joining_and_leaving_costs_the_receiver_nothing(
        contexts, tmp_path: Path, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import Consumer

    caplog.set_level(logging.INFO, logger="receivers.kafka")

    topic, group = unique("receiver-rebalance"), unique("group")
    create_topic(kafka_bootstrap, topic, partitions=2)

    def produce_round(label: str) -> list[tuple[int, bytes]]:
        out = []
        for partition in (0, 1):
            records = [f"{label}-p{partition}-{i}".encode() for i in range(100)]
            produce(kafka_bootstrap, topic, records, partition=partition)
            out += [(partition, r) for r in records]
        return out

    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group, block_records=25)
    ssc.start()
    alone = produce_round("alone")
    wait_for(lambda: stream.records_received >= 200, "the receiver alone to get both partitions")

    other = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    other_got: list[tuple[int, bytes]] = []
    other_stop = threading.Event()
    assignment: list[int] = []

    def other_member() -> None:
        other.subscribe([topic], on_assign=lambda c, ps: assignment.extend(p.partition for p in ps))
        while not other_stop.is_set():
            msg = other.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            other_got.append((msg.partition(), msg.value()))
            other.commit(message=msg, asynchronous=False)
        other.close()  # leaves the group: the receiver gets its partition back

    member = threading.Thread(target=other_member, name="second-group-member")
    member.start()
    try:
        wait_for(lambda: len(assignment) == 1, "the second member to get one partition", timeout=60)
        mine = 1 - assignment[0]
        shared = produce_round("shared")
        wait_for(lambda: len(other_got) >= 100, "the second member to read its partition")
        wait_for(lambda: stream.records_received >= 300, "the receiver to read the partition it kept")
    finally:
        other_stop.set()
        member.join(30)
    after = produce_round("after")
    wait_for(lambda: stream.records_received >= 500, "the receiver to get both partitions back", timeout=60)
    ssc.step()

    received = [(r.partition, r.value) for b in batches for r in b]
    assert set(alone) <= set(received)
    assert {x for x in shared if x[0] == mine} <= set(received), "lost records of the partition it kept"
    assert set(after) <= set(received)
    assert set(received) | set(other_got) == set(alone) | set(shared) | set(after)
    assert {p for p, _ in other_got} == {assignment[0]}
    duplicates = len(received) - len(set(received))
    assert duplicates == 0, f"{duplicates} records received twice"
    assert not {x for x in shared if x[0] == mine} & set(other_got)
    assert stream.receiver.is_started() and stream.supervisor.restarts == 0
    revocations = [r for r in caplog.records if "partitions revoked" in r.getMessage()]
    assert len(revocations) >= 2, "the receiver went through the revocation path on join and on leave"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_block_that_cannot_be_stored_is_not_committed_and_is_read_after_a_restart(
        contexts, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    topic, group = unique("receiver-full"), unique("group")
    create_topic(kafka_bootstrap, topic)
    disk = DiskFull(monkeypatch)
    first, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group)
    first.start()
    produce(kafka_bootstrap, topic, [f"stored-{i}".encode() for i in range(50)])
    wait_for(lambda: stream.records_received >= 50, "the first records stored")
    first.step()
    disk.full = True
    produce(kafka_bootstrap, topic, [f"refused-{i}".encode() for i in range(50)])
    wait_for(lambda: disk.failures > 0, "a write to fail")
    time.sleep(1.0)  # a receiver that went on anyway would commit by now
    assert committed_offsets(kafka_bootstrap, group, topic, 1)[0] == 50
    first.stop(graceful=False)
    disk.full = False

    second, stream2, batches2 = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group)
    second.start()
    wait_for(lambda: stream2.records_received >= 50, "the refused records read again")
    second.step()
    assert values(batches) == [f"stored-{i}".encode() for i in range(50)]
    assert values(batches2) == [f"refused-{i}".encode() for i in range(50)]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_block_that_cannot_be_stored_stops_the_job_with_the_storage_error(
        contexts, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    topic, group = unique("receiver-full-stop"), unique("group")
    create_topic(kafka_bootstrap, topic)
    disk = DiskFull(monkeypatch)
    ssc, stream, _ = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group)
    ssc.start()
    disk.full = True
    produce(kafka_bootstrap, topic, [b"refused"])
    wait_for(lambda: disk.failures > 0, "a write to fail")
    try:
        wait_for(lambda: ssc.state != "active", "the job to stop", timeout=5)
    except AssertionError:
        pass
    assert ssc.state != "active", "the job runs on with a receiver thread that died"
    assert isinstance(ssc.error, (ReceiverError, StorageError)) and "ENOSPC" in str(ssc.error)


def test_a_failed_commit_does_not_make_the_restarted_receiver_read_a_stored_block_again(
        contexts, tmp_path: Path, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka as ck

    topic, group = unique("receiver-commit-fails"), unique("group")
    create_topic(kafka_bootstrap, topic)
    failures: list[int] = []

    class CommitFailsOnce(ck.Consumer):
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            if not failures:
                failures.append(1)
                raise ck.KafkaException(ck.KafkaError(ck.KafkaError.REBALANCE_IN_PROGRESS))
            return super().commit(*args, **kwargs)

    monkeypatch.setattr(ck, "Consumer", CommitFailsOnce)
    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group,
                                        restart_delay=0.1, max_restart_delay=0.2)
    ssc.start()
    produce(kafka_bootstrap, topic, [f"first-{i}".encode() for i in range(100)])
    wait_for(lambda: bool(failures) and stream.supervisor.restarts >= 1, "the failed commit to restart the receiver")
    produce(kafka_bootstrap, topic, [f"second-{i}".encode() for i in range(50)])
    wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic, 1)[0] == 150,
             "the receiver to commit up to the end of the topic")
    ssc.step()
    got = values(batches)
    assert sorted(set(got)) == sorted([f"first-{i}".encode() for i in range(100)]
                                      + [f"second-{i}".encode() for i in range(50)])
    assert len(got) - len(set(got)) == 0, f"{len(got) - len(set(got))} records stored twice"


def test_while_a_block_waits_to_be_stored_the_receiver_keeps_polling_and_stays_in_the_group(
        contexts, tmp_path: Path, kafka_bootstrap: str) -> None:
    topic, group = unique("receiver-backpressure"), unique("group")
    create_topic(kafka_bootstrap, topic)
    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group,
                                        kafka_params={"max.poll.interval.ms": 7000}, block_records=50)
    ssc.start()
    release = threading.Event()
    held: list[Any] = []
    put = stream.store.put

    def full_store(stream_name: str, block: Any) -> Any:
        if not held:  # the first block waits, as behind a full store
            held.append(block)
            assert release.wait(60)
        return put(stream_name, block)

    stream.store.put = full_store
    produce(kafka_bootstrap, topic, [f"first-{i}".encode() for i in range(100)])
    wait_for(lambda: bool(held), "a block held")
    time.sleep(10)  # longer than max.poll.interval.ms: a consumer that stopped polling has left the group by now
    release.set()
    produce(kafka_bootstrap, topic, [f"second-{i}".encode() for i in range(100)])
    wait_for(lambda: stream.records_received >= 200, "every record stored")
    ssc.step()
    got = values(batches)
    assert sorted(got) == sorted([f"first-{i}".encode() for i in range(100)]
                                 + [f"second-{i}".encode() for i in range(100)])
    assert len(got) == len(set(got)), f"{len(got) - len(set(got))} records stored twice"
    assert stream.supervisor.restarts == 0, "the receiver left the group and restarted"
    assert stream.receiver.revocations == 0 and stream.receiver.pauses == 1
    wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic, 1)[0] == 200, "the group to commit to the end")


def test_a_cooperative_assignment_strategy_receives_every_record(
        contexts, tmp_path: Path, kafka_bootstrap: str) -> None:
    topic, group = unique("receiver-cooperative"), unique("group")
    create_topic(kafka_bootstrap, topic, partitions=2)
    ssc, stream, batches = receiver_job(contexts, tmp_path, kafka_bootstrap, topic, group,
                                        kafka_params={"partition.assignment.strategy": "cooperative-sticky"})
    ssc.start()
    produce(kafka_bootstrap, topic, [f"v{i}".encode() for i in range(100)])
    wait_for(lambda: stream.records_received >= 100, "every record received")
    ssc.step()
    assert sorted(values(batches)) == sorted(f"v{i}".encode() for i in range(100))
    assert stream.supervisor.restarts == 0
