"""The direct Kafka stream and its clients under broker faults, without a broker.

- a broker call retries retriable errors within its deadline and gives up
  at once on permanent ones (`ingest.kafka.calls`), in every client call;
- a group commit is bounded by a timeout and never runs on the thread that
  acknowledges the batch; a slow or failed one is caught up by the next;
- planning that makes no progress warns after 30 s naming the cause, again
  every minute, shows the cause in `ssc.status()`, and fails after
  broker_wait_timeout with it.

Time is a fake clock that the stream's pauses advance; faults are fakes that raise.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Mapping

import pytest

from direct import kafka_direct_stream
from ingest import ManualClock, SourceError, StreamingContext
from ingest.kafka.calls import BrokerCallError, call

pytestmark = pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning")

TP = tuple[str, int]


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeClient:
    """Answers from dicts; `failure` (when set) is raised by watermarks()."""

    name = "fake"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)
        self.topics = {"t": [0]}
        self.marks: dict[TP, tuple[int, int]] = {("t", 0): (0, 10)}
        self.failure: BaseException | None = None
        self.commits: list[dict[TP, int]] = []
        self.commit_gate: threading.Event | None = None
        self.commit_entered = threading.Event()
        self.commit_failure: BaseException | None = None

    def reader(self) -> None:
        return None

    def list_topics(self, timeout: float = 15.0) -> dict[str, list[int]]:
        return dict(self.topics)

    def watermarks(self, tps: list[TP], timeout: float = 15.0) -> dict[TP, tuple[int, int]]:
        if self.failure is not None:
            raise self.failure
        return {tp: self.marks[tp] for tp in tps}

    def committed(self, group: str, tps: list[TP], timeout: float = 15.0) -> dict[TP, int | None]:
        return {tp: None for tp in tps}

    def commit(self, group: str, offsets: Mapping[TP, int], timeout: float = 10.0) -> None:
        self.commit_entered.set()
        if self.commit_gate is not None:
            assert self.commit_gate.wait(30), "the test never released the commit"
        if self.commit_failure is not None:
            failure, self.commit_failure = self.commit_failure, None
            raise failure
        self.commits.append(dict(offsets))

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[tuple[StreamingContext, Any]] = []

    def build(**options: Any) -> tuple[StreamingContext, Any, FakeClient, FakeTime]:
        client = FakeClient({"bootstrap.servers": "fake:9092", "group.id": "g", "auto.offset.reset": "earliest"})
        monkeypatch.setattr("direct.stream.make_client", lambda name, params: client)
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        stream = kafka_direct_stream(ssc, ["t"], kafka_params=client.params, name=f"f-{uuid.uuid4().hex[:8]}",
                                     **options)
        fake_time = FakeTime()
        stream._clock, stream._sleep = fake_time.clock, fake_time.sleep
        stream._stall.progress()  # counted from the fake clock's start
        made.append((ssc, stream))
        return ssc, stream, client, fake_time

    yield build
    for _, stream in made:
        if stream.client.commit_gate is not None:
            stream.client.commit_gate.set()
        stream.close()


def ranges(plan: dict[str, Any]) -> list[list[Any]]:
    return plan["offset_ranges"]


# --------------------------------------------------------------------------- one helper for every call


def test_a_retriable_error_is_retried_until_the_call_succeeds() -> None:
    fake_time = FakeTime()
    answers: list[Any] = [BrokerCallError("NOT_COORDINATOR", True), BrokerCallError("NOT_COORDINATOR", True), 42]

    def attempt(seconds: float) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert call("read committed offsets", attempt, timeout=10, clock=fake_time.clock, sleep=fake_time.sleep) == 42
    assert len(fake_time.sleeps) == 2


def test_a_permanent_error_is_raised_at_once() -> None:
    fake_time = FakeTime()
    calls: list[float] = []

    def attempt(seconds: float) -> Any:
        calls.append(seconds)
        raise BrokerCallError("TOPIC_AUTHORIZATION_FAILED", False)

    with pytest.raises(BrokerCallError, match="TOPIC_AUTHORIZATION_FAILED"):
        call("list offsets", attempt, timeout=60, clock=fake_time.clock, sleep=fake_time.sleep)
    assert len(calls) == 1 and fake_time.sleeps == []


def test_a_call_gives_up_at_its_deadline_naming_the_last_cause() -> None:
    fake_time = FakeTime()

    def attempt(seconds: float) -> Any:
        fake_time.now += seconds
        raise BrokerCallError("No leaders found", True)

    with pytest.raises(BrokerCallError, match=r"could not list offsets for \d+ s: No leaders found"):
        call("list offsets", attempt, timeout=20, clock=fake_time.clock, sleep=fake_time.sleep)
    assert fake_time.now <= 1000 + 20 + 1


class NotCoordinatorOnce:
    """A confluent-kafka consumer whose first `committed()` meets a moving coordinator."""

    def __init__(self) -> None:
        self.calls = 0

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        import confluent_kafka as ck

        self.calls += 1
        if self.calls == 1:
            raise ck.KafkaException(ck.KafkaError(ck.KafkaError.NOT_COORDINATOR))
        return [ck.TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]


def test_the_confluent_client_retries_a_retriable_error_of_committed() -> None:
    from ingest.kafka.clients import ConfluentClient

    client = ConfluentClient({"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
    consumer = NotCoordinatorOnce()
    client._group_consumer = lambda group: consumer  # type: ignore[method-assign]
    assert client.committed("g", [("t", 0)], timeout=10) == {("t", 0): 7}
    assert consumer.calls == 2


class UnansweredCommits:
    """A confluent-kafka consumer whose commits are never answered (a coordinator that went away)."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        if not asynchronous:  # a synchronous commit waits for the answer: here, until the test ends
            self.released.wait(30)

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)

    def close(self) -> None:
        self.released.set()


def test_a_confluent_group_commit_gives_up_after_its_timeout() -> None:
    from ingest.kafka.clients import ConfluentClient

    client = ConfluentClient({"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
    consumer = UnansweredCommits()
    client._group_consumer = lambda group: consumer  # type: ignore[method-assign]
    client._meta_consumer = consumer
    started = time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"commit.*not answered"):
            client.commit("g", {("t", 0): 5}, timeout=1.0)
    finally:
        consumer.released.set()
    assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- group commits


def test_acknowledging_a_batch_never_waits_for_the_group_commit(fake: Any) -> None:
    _, stream, client, _ = fake()
    client.commit_gate = threading.Event()  # the commit hangs until released
    plan = stream.plan(1000)
    acknowledged = threading.Event()
    acker = threading.Thread(target=lambda: (stream.on_batch_committed(1000, plan), acknowledged.set()))
    acker.start()
    try:
        assert acknowledged.wait(5), "on_batch_committed waited for the group commit"
    finally:
        client.commit_gate.set()
        acker.join(30)
    assert stream._committer.flush(10)
    assert client.commits == [{("t", 0): 10}]


def test_commits_queued_behind_a_slow_one_send_only_the_newest_offsets(fake: Any) -> None:
    _, stream, client, _ = fake()
    client.commit_gate = threading.Event()
    for t, latest in ((1000, 10), (2000, 20), (3000, 30)):
        client.marks[("t", 0)] = (0, latest)
        stream.on_batch_committed(t, stream.plan(t))
        assert client.commit_entered.wait(10)  # the first commit is in flight (and hangs) before the next come
    client.commit_gate.set()
    assert stream._committer.flush(10)
    assert client.commits == [{("t", 0): 10}, {("t", 0): 30}]


def test_a_failed_group_commit_is_a_warning_and_the_next_commit_catches_up(
        fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    _, stream, client, _ = fake()
    client.commit_failure = BrokerCallError("commit of group 'g' not answered within 10.0 s", True)
    stream.on_batch_committed(1000, stream.plan(1000))
    assert stream._committer.flush(10)
    assert client.commits == []
    assert "committing offsets to the group failed" in caplog.text and "not answered" in caplog.text
    client.marks[("t", 0)] = (0, 15)
    stream.on_batch_committed(2000, stream.plan(2000))
    assert stream._committer.flush(10)
    assert client.commits == [{("t", 0): 15}]


# --------------------------------------------------------------------------- stalls


def stall_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "no progress" in r.getMessage()]


def test_a_stalled_plan_warns_after_30_s_naming_the_cause_then_every_minute_then_fails(
        fake: Any, caplog: pytest.LogCaptureFixture) -> None:
    ssc, stream, client, fake_time = fake(broker_wait_timeout=300)
    stream.plan(1000)
    client.failure = BrokerCallError("cannot list offsets on fake:9092: No leaders found", True)
    with pytest.raises(SourceError, match=r"No leaders found.*broker_wait_timeout=300"):
        stream.plan(2000)
    warnings = stall_warnings(caplog)
    assert 4 <= len(warnings) <= 5  # at 30 s, then each minute until 300 s
    assert all("No leaders found" in w for w in warnings)
    assert 300 <= fake_time.now - 1000 <= 320


def test_the_status_shows_a_stalled_input_and_its_cause(fake: Any) -> None:
    ssc, stream, client, fake_time = fake(broker_wait_timeout=300)
    stream.plan(1000)
    client.failure = BrokerCallError("cannot list offsets on fake:9092: No leaders found", True)
    seen: list[dict[str, Any]] = []
    sleep = fake_time.sleep

    def sleep_then_look(seconds: float) -> None:
        sleep(seconds)
        seen.append(ssc.status()["inputs"][stream.name])
        if fake_time.now - 1000 > 45:
            client.failure = None  # the broker is back

    stream._sleep = sleep_then_look
    stream.plan(2000)
    stalled = [s for s in seen if s["stalled"]]
    assert stalled and "No leaders found" in stalled[0]["last_error"] and stalled[0]["stalled_for_s"] >= 30
    assert ssc.status()["inputs"][stream.name]["stalled"] is False


def test_a_permanent_broker_error_fails_the_plan_at_once_naming_it(fake: Any) -> None:
    _, stream, client, fake_time = fake(broker_wait_timeout=300)
    client.failure = BrokerCallError("cannot list offsets on fake:9092: TOPIC_AUTHORIZATION_FAILED", False)
    with pytest.raises(SourceError, match="TOPIC_AUTHORIZATION_FAILED") as caught:
        stream.plan(1000)
    assert "broker_wait_timeout" not in str(caught.value)
    assert fake_time.sleeps == []
