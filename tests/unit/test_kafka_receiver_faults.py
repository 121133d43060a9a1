"""The Kafka receiver's consumer loop against a scripted consumer, without a broker.

`ScriptedConsumer` stands in for confluent-kafka's `Consumer`: each
`consume()` call plays the next step of a script (return messages, run a
rebalance through the receiver's own callbacks, report a client error), so
rebalances and broker faults happen at exact points of a block.

- an eager rebalance inside one block drops the records of the revoked
  partitions fetched before it, so records fetched again are stored once;
- a block being stored when its partition is revoked is stored and
  committed before the partition is given up;
- an offset commit that gets no answer restarts the receiver after its timeout;
- a cooperative assignment changes only through incremental assign/unassign;
- client errors with nothing stored warn after 30 s naming the cause, then
  every minute, and the receiver's last error in `ssc.status()` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import pytest

from receivers import kafka_stream

TOPIC = "t"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Message:
    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)

    def headers(self) -> None:
        return None

    def key(self) -> None:
        return None

    def value(self) -> bytes:
        return f"p{self._partition}-{self._offset}".encode()


def messages(partition: int, offsets: range) -> list[Message]:
    return [Message(partition, o) for o in offsets]


class ScriptedConsumer:
    """Plays `script` (set on the class by each test) one step per consume();
    a step is a list of messages or a function of the consumer that returns one."""

    script: list[Any] = []
    instances: list["ScriptedConsumer"] = []
    silent_coordinator = False
    released = threading.Event()

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.assignment_: list[Any] = []
        self.calls: list[str] = []
        self.commits: list[dict[tuple[str, int], int]] = []
        self.on_assign: Any = None
        self.on_revoke: Any = None
        self.answers: list[Any] = []  # commit answers, served by the next consume()/poll()
        ScriptedConsumer.instances.append(self)

    # the API the receiver uses
    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None, on_lost: Any = None) -> None:
        self.on_assign, self.on_revoke = on_assign, on_revoke

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        while self.answers:
            self.conf["on_commit"](None, self.answers.pop(0))
        if not self.script:
            time.sleep(min(timeout, 0.01))
            return []
        step = self.script.pop(0)
        return list(step(self) if callable(step) else step)

    def assign(self, partitions: list[Any]) -> None:
        if "cooperative" in str(self.conf.get("partition.assignment.strategy", "")):
            import confluent_kafka as ck

            # librdkafka refuses it so under a cooperative protocol (error state)
            raise ck.KafkaException(ck.KafkaError(ck.KafkaError._STATE))
        self.calls.append("assign")
        self.assignment_ = list(partitions)

    def unassign(self) -> None:
        self.calls.append("unassign")
        self.assignment_ = []

    def incremental_assign(self, partitions: list[Any]) -> None:
        self.calls.append("incremental_assign")
        self.assignment_ += list(partitions)

    def incremental_unassign(self, partitions: list[Any]) -> None:
        self.calls.append("incremental_unassign")
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.assignment_ = [tp for tp in self.assignment_ if (tp.topic, tp.partition) not in gone]

    def assignment(self) -> list[Any]:
        return list(self.assignment_)

    def pause(self, partitions: list[Any]) -> None:
        self.calls.append("pause")

    def resume(self, partitions: list[Any]) -> None:
        self.calls.append("resume")

    def committed(self, partitions: list[Any], timeout: float = 0) -> list[Any]:
        return list(partitions)

    def poll(self, timeout: float) -> Any:
        found = self.consume(1, timeout)
        return found[0] if found else None

    def commit(self, offsets: list[Any] | None = None, asynchronous: bool = True) -> None:
        if ScriptedConsumer.silent_coordinator:
            if not asynchronous:  # a synchronous commit waits for the answer
                ScriptedConsumer.released.wait(30)
            return
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets or ()})
        self.calls.append("commit")
        if asynchronous:
            self.answers.append(list(offsets or ()))

    def close(self) -> None:
        pass


def rebalance(revoke: list[int], assign: list[int], then: list[Message]) -> Callable[[ScriptedConsumer], list[Any]]:
    def step(consumer: ScriptedConsumer) -> list[Any]:
        import confluent_kafka as ck

        if revoke:
            consumer.on_revoke(consumer, [ck.TopicPartition(TOPIC, p) for p in revoke])
        if assign:
            consumer.on_assign(consumer, [ck.TopicPartition(TOPIC, p) for p in assign])
        return then

    return step


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Any:
    import confluent_kafka as ck

    ScriptedConsumer.instances = []
    ScriptedConsumer.silent_coordinator = False
    ScriptedConsumer.released = threading.Event()
    monkeypatch.setattr(ck, "Consumer", ScriptedConsumer)
    yield ScriptedConsumer
    ScriptedConsumer.released.set()


def receiver_job(make_context: Any, **params: Any) -> tuple[Any, Any, list[list[Any]]]:
    ssc = make_context(log_batches=False)
    stream = kafka_stream(ssc, [TOPIC], {"bootstrap.servers": "scripted:9092", "group.id": "g", **params},
                          name="orders")
    batches: list[list[Any]] = []
    stream.foreach_batch(lambda b: batches.append(b.collect()))
    return ssc, stream, batches


def test_an_eager_rebalance_inside_a_block_stores_each_record_once(
        scripted: type[ScriptedConsumer], make_context: Any) -> None:
    scripted.script = [
        rebalance([], [0], []),
        messages(0, range(0, 5)),  # the block begins: fetched, not stored yet
        rebalance([0], [0], messages(0, range(0, 10))),  # revoked and given back: fetched again from 0
    ]
    ssc, stream, batches = receiver_job(make_context)
    ssc.start()
    wait_for(lambda: not scripted.script and stream.records_received >= 10, "the block to be stored")
    ssc.step()
    offsets = [r.offset for b in batches for r in b]
    assert offsets == list(range(10))
    assert stream.receiver.dropped_after_revoke == 5
    # The block's offsets are committed after it is stored, on the receiver's thread.
    wait_for(lambda: bool(scripted.instances[-1].commits), "the block's offsets to be committed")
    assert scripted.instances[-1].commits[-1] == {(TOPIC, 0): 10}


def test_a_block_being_stored_when_its_partition_is_revoked_is_committed_before_the_revocation_completes(
        scripted: type[ScriptedConsumer], make_context: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    def revoke_while_storing(consumer: ScriptedConsumer) -> list[Any]:
        assert entered.wait(10)
        release.set()  # the store may now finish; the revocation below waits for it either way
        return rebalance([0], [0], [])(consumer)

    scripted.script = [rebalance([], [0], messages(0, range(5))), [], revoke_while_storing,
                       messages(0, range(5, 10))]  # given back: read on from the committed offset
    ssc, stream, batches = receiver_job(make_context)
    receiver = stream.receiver
    store_batch = receiver.store_batch

    def slow_store(items: Any, metadata: Any = None) -> str:
        entered.set()
        assert release.wait(10)
        return store_batch(items, metadata)

    receiver.store_batch = slow_store
    receiver.pause_after = 0.0
    ssc.start()
    wait_for(lambda: not scripted.script and stream.records_received >= 10, "both blocks to be stored")
    ssc.step()
    consumer = scripted.instances[-1]
    assert [r.offset for b in batches for r in b] == list(range(10))
    calls = [c for c in consumer.calls if c in ("commit", "unassign", "pause", "resume")]
    assert calls[:3] == ["pause", "commit", "unassign"]  # stored and committed, then given up
    assert consumer.commits[0] == {(TOPIC, 0): 5}
    assert receiver.pauses >= 1 and receiver.dropped_after_revoke == 0


def test_a_cooperative_assignment_changes_incrementally(scripted: type[ScriptedConsumer], make_context: Any) -> None:
    scripted.script = [
        rebalance([], [0, 1], messages(0, range(3)) + messages(1, range(2))),
        [],
        rebalance([1], [], messages(0, range(3, 5))),
    ]
    ssc, stream, batches = receiver_job(make_context, **{"partition.assignment.strategy": "cooperative-sticky"})
    ssc.start()
    wait_for(lambda: not scripted.script and stream.records_received >= 7, "both blocks to be stored")
    ssc.step()
    consumer = scripted.instances[-1]
    assert [c for c in consumer.calls if "assign" in c] == ["incremental_assign", "incremental_unassign"]
    assert [(tp.topic, tp.partition) for tp in consumer.assignment()] == [(TOPIC, 0)]
    assert sorted((r.partition, r.offset) for b in batches for r in b) == \
        [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1)]
    assert stream.supervisor.restarts == 0


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_client_errors_without_progress_warn_after_30_s_then_every_minute_naming_the_cause(
        scripted: type[ScriptedConsumer], make_context: Any, caplog: pytest.LogCaptureFixture) -> None:
    import confluent_kafka as ck

    caplog.set_level(logging.WARNING, logger="receivers.kafka")
    fake_time = FakeTime()
    steps = []

    def broker_down(consumer: ScriptedConsumer) -> list[Any]:
        consumer.conf["error_cb"](ck.KafkaError(ck.KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        fake_time.advance(10)
        return []

    steps.append(rebalance([], [0], []))
    steps += [broker_down] * 16  # 160 s of errors, nothing received
    scripted.script = steps
    ssc, stream, _ = receiver_job(make_context)
    stream.receiver._clock = fake_time.clock
    ssc.start()
    wait_for(lambda: not scripted.script, "the script to run")
    wait_for(lambda: fake_time.clock() >= 160 and len(stalls(caplog)) >= 3, "three stall warnings")
    warned = stalls(caplog)
    assert len(warned) == 3  # at 30 s, 90 s and 150 s
    assert all("1/1 brokers are down" in w for w in warned)
    status = ssc.status()["receivers"]["orders"]
    assert "no progress" in status["last_error"] and "brokers are down" in status["last_error"]
    assert stream.receiver.health()["stalled"] is True


def stalls(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "no progress" in r.getMessage()]


def test_an_unanswered_commit_restarts_the_receiver_after_its_timeout(
        scripted: type[ScriptedConsumer], make_context: Any) -> None:
    scripted.silent_coordinator = True
    scripted.script = [rebalance([], [0], messages(0, range(3)))]
    ssc, stream, _ = receiver_job(make_context)
    stream.receiver.commit_timeout = 1.0
    ssc.start()
    wait_for(lambda: stream.records_received >= 3, "the block to be stored")
    wait_for(lambda: stream.supervisor.restarts >= 1, "the receiver to give up on the commit", timeout=10)
    assert "not answered within 1 s" in ssc.status()["receivers"]["orders"]["last_error"]
