"""The direct Kafka stream's planning logic, without a broker.

- `PIDRateEstimator` computes exactly Spark's formula (checked against a
  transcription of `PIDRateEstimator.compute` and Spark's own test cases);
- `RateController` learns only from completed, first-run batches of its input;
- offset ranges are capped as Spark's `maxMessagesPerPartition` caps them,
  plus `max_records_per_batch`;
- the data-loss policies and the order of starting positions;
- `kafka_params` are checked at construction, naming the key at fault.

Planning runs against `FakeClient`, a few lines that answer metadata and
offset questions from dicts; reading is never exercised here (see
tests/integration/test_direct_kafka.py).
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Any, Mapping

import pytest

from direct import DataLossError, kafka_direct_stream
from ingest import ConfigError, ManualClock, SourceError, StreamingContext
from ingest.listener import BatchCompleted, BatchInfo, InputInfo
from ingest.rate import PIDRateEstimator, RateController
from offsets import KafkaRanges

pytestmark = pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning")

TP = tuple[str, int]


# --------------------------------------------------------------------------- the PID estimator


class SparkPID:
    """Spark's `PIDRateEstimator.compute`, transcribed line by line from the Scala."""

    def __init__(self, batch_interval_ms: int, kp: float = 1.0, ki: float = 0.2, kd: float = 0.0,
                 min_rate: float = 100.0) -> None:
        self.batch_interval_ms, self.kp, self.ki, self.kd, self.min_rate = batch_interval_ms, kp, ki, kd, min_rate
        self.first_run = True
        self.latest_time = -1
        self.latest_rate = -1.0
        self.latest_error = -1.0

    def compute(self, time: int, num_elements: int, processing_delay: float, scheduling_delay: float
                ) -> float | None:
        if time > self.latest_time and num_elements > 0 and processing_delay > 0:
            delay_since_update = (time - self.latest_time).__float__() / 1000
            processing_rate = num_elements.__float__() / processing_delay * 1000
            error = self.latest_rate - processing_rate
            historical_error = scheduling_delay.__float__() * processing_rate / self.batch_interval_ms
            d_error = (error - self.latest_error) / delay_since_update
            new_rate = max(self.latest_rate - self.kp * error - self.ki * historical_error - self.kd * d_error,
                           self.min_rate)
            self.latest_time = time
            if self.first_run:
                self.latest_rate = processing_rate
                self.latest_error = 0.0
                self.first_run = False
                return None
            self.latest_rate = new_rate
            self.latest_error = error
            return new_rate
        return None


@pytest.mark.parametrize("seed", range(8))
def test_pid_estimates_equal_sparks_formula_on_random_batches(seed: int) -> None:
    rng = random.Random(seed)
    interval = rng.choice([200, 1000, 2000])
    gains = {"proportional": rng.uniform(0, 2), "integral": rng.uniform(0, 1), "derivative": rng.uniform(0, 0.5),
             "min_rate": rng.choice([1.0, 100.0, 500.0])}
    ours = PIDRateEstimator(interval, **gains)
    spark = SparkPID(interval, gains["proportional"], gains["integral"], gains["derivative"], gains["min_rate"])
    t = 0
    outputs = []
    for _ in range(200):
        t += rng.choice([0, interval, interval, 2 * interval, -interval])  # repeats and old batches too
        n = rng.choice([0, 1, rng.randint(1, 100_000)])
        processing = rng.choice([0.0, rng.uniform(0.1, 5 * interval)])
        scheduling = rng.choice([0.0, rng.uniform(0, 10 * interval)])
        expected = spark.compute(t, n, processing, scheduling)
        assert ours.compute(t, n, processing, scheduling) == expected
        outputs.append(expected)
    assert any(o is not None for o in outputs) and any(o is None for o in outputs[1:])


def test_pid_defaults_are_sparks() -> None:
    pid = PIDRateEstimator(1000)
    assert (pid.kp, pid.ki, pid.kd, pid.min_rate) == (1.0, 0.2, 0.0, 100.0)


def test_pid_first_estimate_is_none_and_the_second_is_not() -> None:
    pid = PIDRateEstimator(20, 1.0, 0.2, 0.0, 10.0)
    assert pid.compute(0, 10, 10, 0) is None
    assert pid.compute(10, 10, 10, 0) is not None


def test_pid_gives_no_estimate_without_time_passing_records_or_processing_delay() -> None:
    pid = PIDRateEstimator(20, 1.0, 0.2, 0.0, 10.0)
    pid.compute(0, 10, 10, 0)
    assert pid.compute(10, 10, 10, 0) is not None
    assert pid.compute(10, 10, 10, 0) is None  # same batch time again
    assert pid.compute(5, 10, 10, 0) is None  # an older batch
    assert pid.compute(20, 0, 10, 0) is None  # no records
    assert pid.compute(30, -5, 10, 0) is None
    assert pid.compute(40, 10, 0, 0) is None  # no processing delay
    assert pid.compute(50, 10, -1, 0) is None


def test_pid_estimate_is_never_below_the_minimum_rate() -> None:
    pid = PIDRateEstimator(20, 1.0, 1.0, 0.0, min_rate=5.0)
    results = [pid.compute(i * 20, 1, 20, 100) for i in range(50)]
    assert results == [None] + [5.0] * 49


def test_pid_follows_the_processing_speed_without_accumulated_error() -> None:
    rising = PIDRateEstimator(20, 1.0, 1.0, 0.0, 10.0)
    assert [rising.compute(i * 20, (i + 1) * 20, 20, 0) for i in range(50)] == \
        [None] + [(i + 1) * 1000.0 for i in range(1, 50)]
    falling = PIDRateEstimator(20, 1.0, 1.0, 0.0, 10.0)
    assert [falling.compute(i * 20, (50 - i) * 20, 20, 0) for i in range(50)] == \
        [None] + [(50 - i) * 1000.0 for i in range(1, 50)]


def test_pid_stays_below_the_processing_speed_with_a_backlog() -> None:
    rng = random.Random(7)
    pid = PIDRateEstimator(20, 1.0, 0.01, 0.0, 10.0)
    elements = [rng.randint(1000, 1999) for _ in range(50)]
    waits = [rng.randint(1, 19) for _ in range(50)]
    results = [pid.compute(i * 20, elements[i], 20, waits[i]) for i in range(50)]
    assert results[0] is None
    for n in range(1, 50):
        assert results[n] is not None and 10.0 <= results[n] < elements[n] / 20 * 1000


@pytest.mark.parametrize("options, message", [
    ({"batch_interval_ms": 0}, "batch interval must be positive"),
    ({"proportional": -1}, "proportional gain must be >= 0"),
    ({"integral": -1}, "integral gain must be >= 0"),
    ({"derivative": -1}, "derivative gain must be >= 0"),
    ({"min_rate": 0}, "min_rate must be > 0"),
    ({"min_rate": -1}, "min_rate must be > 0"),
])
def test_pid_checks_its_ranges(options: dict[str, Any], message: str) -> None:
    options = {"batch_interval_ms": 1000, **options}
    with pytest.raises(ConfigError, match=message):
        PIDRateEstimator(**options)


def completed(time_ms: int, records: dict[str, int], processing_ms: float = 100.0, scheduling_ms: float = 0.0,
              failure: str | None = None, recovered: bool = False) -> BatchCompleted:
    return BatchCompleted(BatchInfo(
        batch_time_ms=time_ms, submission_time=0.0,
        inputs={name: InputInfo(name, n) for name, n in records.items()},
        processing_start_time=10.0, processing_end_time=10.0 + processing_ms / 1000.0,
        scheduling_delay_ms=scheduling_ms, failure=failure, recovered=recovered))


def test_rate_controller_learns_from_completed_first_runs_of_its_own_input_only() -> None:
    published: list[float] = []
    controller = RateController("events", PIDRateEstimator(1000), publish=published.append)
    spark = SparkPID(1000)
    controller.on_batch_completed(completed(1000, {"events": 500}, processing_ms=250))
    spark.compute(1000, 500, 250, 0)
    assert controller.latest_rate is None  # the first batch only calibrates
    controller.on_batch_completed(completed(2000, {"events": 800}, failure="RuntimeError: x"))
    controller.on_batch_completed(completed(2000, {"events": 800}, recovered=True))
    controller.on_batch_completed(completed(2000, {"other": 800}))
    controller.on_batch_completed(completed(2000, {"events": 0}))
    assert controller.latest_rate is None and published == []
    controller.on_batch_completed(completed(3000, {"events": 400, "other": 10_000}, processing_ms=200,
                                           scheduling_ms=300))
    expected = spark.compute(3000, 400, 200, 300)
    assert expected is not None and controller.latest_rate == pytest.approx(expected) and \
        published == [controller.latest_rate]


# --------------------------------------------------------------------------- planning against a fake client


class FakeClient:
    """Answers the driver's questions from dicts. Readers are never used."""

    name = "fake"

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)
        self.topics: dict[str, list[int]] = {}
        self.marks: dict[TP, tuple[int, int]] = {}
        self.group_offsets: dict[TP, int] = {}
        self.commits: list[dict[TP, int]] = []

    def reader(self) -> None:
        return None

    def list_topics(self, timeout: float = 15.0) -> dict[str, list[int]]:
        return dict(self.topics)

    def watermarks(self, tps: list[TP], timeout: float = 15.0) -> dict[TP, tuple[int, int]]:
        return {tp: self.marks[tp] for tp in tps}

    def committed(self, group: str, tps: list[TP], timeout: float = 15.0) -> dict[TP, int | None]:
        return {tp: self.group_offsets.get(tp) for tp in tps}

    def commit(self, group: str, offsets: Mapping[TP, int], timeout: float = 10.0) -> None:
        self.commits.append(dict(offsets))

    def close(self) -> None:
        pass


class Store:
    def __init__(self, offsets: Mapping[TP, int]) -> None:
        self.offsets = dict(offsets)

    def load_offsets(self, stream: str) -> Mapping[TP, int]:
        return self.offsets


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`fake(lags or marks, **options)` builds a stream over one topic 't'
    whose partitions have the given (earliest, latest) offsets; returns the
    stream and its FakeClient."""
    contexts: list[StreamingContext] = []

    def build(marks: list[tuple[int, int]], batch_interval: float = 1.0, reset: str = "earliest",
              **options: Any) -> tuple[Any, FakeClient]:
        client = FakeClient({"bootstrap.servers": "fake:9092", "group.id": "g", "auto.offset.reset": reset})
        client.topics = {"t": list(range(len(marks)))}
        client.marks = {("t", p): m for p, m in enumerate(marks)}
        monkeypatch.setattr("direct.stream.make_client", lambda name, params: client)
        ssc = StreamingContext(batch_interval=batch_interval, clock=ManualClock(), stop_on_signal=False,
                               log_batches=False)
        contexts.append(ssc)
        options.setdefault("name", f"fake-{uuid.uuid4().hex[:8]}")
        stream = kafka_direct_stream(ssc, ["t"], kafka_params=client.params, **options)
        return stream, client

    return build


def counts(plan: KafkaRanges) -> list[int]:
    return [r.count for r in plan.ranges]


def froms(plan: KafkaRanges) -> list[int]:
    return [r.from_offset for r in plan.ranges]


def as_lists(plan: KafkaRanges) -> list[list[Any]]:
    return [r.to_json() for r in plan.ranges]


def test_without_limits_a_batch_reads_up_to_the_latest_offsets(fake: Any) -> None:
    stream, client = fake([(0, 500), (0, 0), (3, 7)])
    plan = stream.plan(1000)
    assert as_lists(plan) == [["t", 0, 0, 500], ["t", 1, 0, 0], ["t", 2, 3, 7]]
    assert plan.records == 504
    client.marks[("t", 0)] = (0, 510)
    assert as_lists(stream.plan(2000)) == [["t", 0, 500, 510], ["t", 1, 0, 0], ["t", 2, 7, 7]]


@pytest.mark.parametrize("interval, rate, expected", [
    (1.0, 10, [10, 5, 0]),
    (2.0, 10, [20, 5, 0]),
    (0.5, 10, [5, 5, 0]),
    (1.0, 0.3, [1, 1, 0]),  # at least one record per partition with a backlog, as Spark's minRatePerPartition
])
def test_max_rate_per_partition_caps_each_range(fake: Any, interval: float, rate: float, expected: list[int]) -> None:
    stream, _ = fake([(0, 100), (0, 5), (0, 0)], batch_interval=interval, max_rate_per_partition=rate)
    assert counts(stream.plan(1000)) == expected


def test_backpressure_shares_the_rate_in_proportion_to_each_partitions_lag(fake: Any) -> None:
    stream, _ = fake([(0, 300), (0, 100), (0, 0)], backpressure=True, initial_rate=100)
    assert counts(stream.plan(1000)) == [75, 25, 0]
    capped, _ = fake([(0, 300), (0, 100), (0, 0)], backpressure=True, initial_rate=100, max_rate_per_partition=50)
    assert counts(capped.plan(1000)) == [50, 25, 0]


def test_backpressure_without_initial_rate_starts_at_1000_records_per_second(fake: Any) -> None:
    stream, _ = fake([(0, 5000), (0, 5000)], backpressure=True)
    assert stream.metrics()["rate_limit"] == 1000
    assert counts(stream.plan(1000)) == [500, 500]


def test_the_estimated_rate_replaces_the_initial_rate(fake: Any) -> None:
    stream, _ = fake([(0, 10_000), (0, 10_000)], backpressure=True, initial_rate=100)
    assert counts(stream.plan(1000)) == [50, 50]
    stream.rate_controller.on_batch_completed(completed(1000, {stream.name: 100}, processing_ms=50))
    assert stream.metrics()["rate_limit"] == 100  # one batch only calibrates
    stream.rate_controller.on_batch_completed(completed(2000, {stream.name: 100}, processing_ms=100))
    assert stream.metrics()["rate_limit"] == pytest.approx(1000.0)  # 100 records in 0.1 s
    assert counts(stream.plan(2000)) == [500, 500]


def spark_max_messages(current: Mapping[TP, int], latest: Mapping[TP, int], rate: float | None,
                       max_rate: float, batch_s: float) -> dict[TP, int]:
    """Spark's `DirectKafkaInputDStream.maxMessagesPerPartition` and `clamp`
    (minRatePerPartition 1), transcribed."""
    if rate is not None and rate > 0:
        lag = {tp: max(latest[tp] - current[tp], 0) for tp in latest}
        total = sum(lag.values())
        limits = {}
        for tp, n in lag.items():
            backpressure_rate = n / float(total) * rate
            limits[tp] = min(backpressure_rate, max_rate) if max_rate > 0 else backpressure_rate
    else:
        limits = {tp: float(max_rate) for tp in latest}
    if sum(limits.values()) > 0:
        messages = {tp: max(math.trunc(batch_s * limit), 1) for tp, limit in limits.items()}
        return {tp: min(current[tp] + messages[tp], latest[tp]) for tp in latest}
    return dict(latest)


@pytest.mark.parametrize("seed", range(20))
def test_ranges_are_capped_as_spark_caps_them(fake: Any, seed: int) -> None:
    rng = random.Random(seed)
    marks = [(0, rng.choice([0, 1, rng.randint(0, 100_000)])) for _ in range(rng.randint(1, 12))]
    interval = rng.choice([0.1, 1.0, 2.5, 10.0])
    max_rate = rng.choice([None, rng.uniform(0.5, 5000)])
    rate = rng.choice([None, rng.uniform(1, 50_000)])
    # Spark's formula has no cap on a whole batch: lift ours.
    options: dict[str, Any] = {"max_rate_per_partition": max_rate, "max_records_per_batch": None}
    if rate is not None:
        options.update(backpressure=True, initial_rate=rate)
    stream, _ = fake(marks, batch_interval=interval, **options)
    current = {("t", p): 0 for p in range(len(marks))}
    latest = {("t", p): m[1] for p, m in enumerate(marks)}
    expected = spark_max_messages(current, latest, rate, max_rate or 0, interval)
    assert [r.until_offset for r in stream.plan(1000).ranges] == \
        [expected[("t", p)] for p in range(len(marks))]


@pytest.mark.parametrize("lags, budget", [
    ([40, 30, 20, 10], 25), ([1, 1, 1, 1, 1], 3), ([1000, 1, 1], 10), ([7, 0, 3], 9), ([5, 5], 100), ([0, 0], 4),
])
def test_max_records_per_batch_shares_the_budget_by_backlog(fake: Any, lags: list[int], budget: int) -> None:
    stream, _ = fake([(0, n) for n in lags], max_records_per_batch=budget)
    got = counts(stream.plan(1000))
    total = sum(lags)
    assert sum(got) == min(budget, total)
    assert all(0 <= g <= lag for g, lag in zip(got, lags))
    if total > budget:
        assert all(abs(g - lag * budget / total) <= 1 for g, lag in zip(got, lags)), got


def test_a_backlog_is_read_in_bounded_batches_by_default_and_none_lifts_the_cap(fake: Any) -> None:
    from direct.stream import DEFAULT_MAX_RECORDS_PER_BATCH

    backlog = [(0, 300_000), (0, 300_000), (0, 300_000), (0, 100_000)]
    stream, _ = fake(backlog)
    assert sum(counts(stream.plan(1000))) == DEFAULT_MAX_RECORDS_PER_BATCH
    unbounded, _ = fake(backlog, max_records_per_batch=None)
    assert counts(unbounded.plan(1000)) == [300_000, 300_000, 300_000, 100_000]


def test_max_records_per_batch_applies_after_the_rate_limits(fake: Any) -> None:
    stream, _ = fake([(0, 1000), (0, 1000)], max_rate_per_partition=30, max_records_per_batch=50)
    assert counts(stream.plan(1000)) == [25, 25]
    loose, _ = fake([(0, 1000), (0, 1000)], max_rate_per_partition=10, max_records_per_batch=50)
    assert counts(loose.plan(1000)) == [10, 10]


# --------------------------------------------------------------------------- starting positions and data loss


def test_starting_positions_come_from_the_store_then_the_group_then_auto_offset_reset(fake: Any) -> None:
    marks = [(2, 50), (2, 50), (2, 50), (2, 50)]
    stream, client = fake(marks, reset="latest", offset_store=Store({("t", 0): 10}))
    client.group_offsets = {("t", 0): 20, ("t", 1): 30}
    assert froms(stream.plan(1000)) == [10, 30, 50, 50]
    stream, client = fake(marks, reset="earliest")
    assert froms(stream.plan(1000)) == [2, 2, 2, 2]


def test_partitions_that_appear_later_start_at_their_earliest_offset(fake: Any) -> None:
    stream, client = fake([(0, 9)], reset="latest")
    assert froms(stream.plan(1000)) == [9]
    client.topics["t"] = [0, 1]
    client.marks[("t", 1)] = (4, 12)
    assert as_lists(stream.plan(2000)) == [["t", 0, 9, 9], ["t", 1, 4, 12]]


def test_auto_offset_reset_none_without_a_commit_is_an_error_naming_the_partition(fake: Any) -> None:
    stream, _ = fake([(0, 9)], reset="none")
    with pytest.raises(SourceError, match=r"t\[0\] has no committed offset for group 'g'"):
        stream.plan(1000)


def lose(fake: Any, policy: str) -> tuple[Any, FakeClient]:
    """A stream at offset 10 of t[0], after offsets below 50 were removed."""
    stream, client = fake([(0, 100)], max_rate_per_partition=10, on_data_loss=policy)
    assert as_lists(stream.plan(1000)) == [["t", 0, 0, 10]]
    client.marks[("t", 0)] = (50, 100)
    return stream, client


def test_data_loss_fail_raises_naming_topic_partition_and_offsets(fake: Any) -> None:
    stream, _ = lose(fake, "fail")
    with pytest.raises(DataLossError, match=r"offsets 10\.\.49 of t\[0\] are no longer in Kafka") as caught:
        stream.plan(2000)
    assert "on_data_loss='earliest'" in str(caught.value)
    assert stream.metrics()["records_lost"] == 0


def test_data_loss_earliest_moves_to_the_log_start_and_counts(fake: Any) -> None:
    stream, _ = lose(fake, "earliest")
    plan = stream.plan(2000)
    assert as_lists(plan) == [["t", 0, 50, 60]] and plan.records_lost == 40
    assert stream.metrics()["records_lost"] == 40


def test_data_loss_latest_moves_to_the_end_and_counts(fake: Any) -> None:
    stream, _ = lose(fake, "latest")
    plan = stream.plan(2000)
    assert as_lists(plan) == [["t", 0, 100, 100]] and plan.records_lost == 90
    assert stream.metrics()["records_lost"] == 90


@pytest.mark.parametrize("policy, expected_from", [("earliest", 0), ("latest", 3)])
def test_a_partition_behind_the_stream_is_data_loss_too(fake: Any, policy: str, expected_from: int) -> None:
    stream, client = fake([(0, 100)], on_data_loss=policy)
    stream.plan(1000)
    client.marks[("t", 0)] = (0, 3)  # deleted and recreated: it ends before the stream's position
    assert froms(stream.plan(2000)) == [expected_from]
    failing, client = fake([(0, 100)], on_data_loss="fail")
    failing.plan(1000)
    client.marks[("t", 0)] = (0, 3)
    with pytest.raises(DataLossError, match=r"t\[0\] ends at offset 3 but the stream is at 100"):
        failing.plan(2000)


def test_a_deleted_topic_stops_planning_naming_it(fake: Any) -> None:
    stream, client = fake([(0, 5)])
    stream.plan(1000)
    client.topics = {}
    with pytest.raises(SourceError, match=r"topic\(s\) \['t'\] no longer exist"):
        stream.plan(2000)


def test_committed_batches_commit_their_until_offsets_to_the_group(fake: Any) -> None:
    stream, client = fake([(0, 30), (0, 5)], max_rate_per_partition=10)
    plan = stream.plan(1000)
    assert client.commits == []
    stream.on_batch_committed(1000, plan)
    assert stream._committer.flush(10)
    assert client.commits == [{("t", 0): 10, ("t", 1): 5}]
    quiet, client = fake([(0, 30)], commit_offsets=False)
    quiet.on_batch_committed(1000, quiet.plan(1000))
    assert quiet._committer.flush(10)
    assert client.commits == []


def test_a_new_stream_counts_from_zero(fake: Any) -> None:
    first, _ = lose(fake, "earliest")
    first.plan(2000)
    assert first.metrics()["records_lost"] == 40
    second, _ = fake([(0, 100)], name=first.name)
    assert second.metrics()["records_lost"] == 0


# --------------------------------------------------------------------------- configuration errors


def context() -> StreamingContext:
    return StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)


CLIENTS = ["confluent", "kafka-python"]
GOOD = {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("params, key", [
    ({**GOOD, "no.such.property": "1"}, "no.such.property"),
    ({**GOOD, "enable.auto.commit": "true"}, "enable.auto.commit"),
    ({**GOOD, "enable.auto.commit": True}, "enable.auto.commit"),
    ({"group.id": "g"}, "bootstrap.servers"),
    ({**GOOD, "bootstrap.servers": ""}, "bootstrap.servers"),
    ({**GOOD, "auto.offset.reset": "sideways"}, "auto.offset.reset"),
    ({**GOOD, "isolation.level": "dirty"}, "isolation.level"),
])
def test_bad_kafka_params_are_a_config_error_naming_the_key(client: str, params: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        kafka_direct_stream(context(), ["t"], kafka_params=params, client=client)
    assert key in str(caught.value)


@pytest.mark.parametrize("client", CLIENTS)
def test_commit_offsets_needs_a_group_id(client: str) -> None:
    with pytest.raises(ConfigError, match=r"commit_offsets=True needs kafka_params\['group.id'\]"):
        kafka_direct_stream(context(), ["t"], kafka_params={"bootstrap.servers": "127.0.0.1:1"}, client=client)
    stream = kafka_direct_stream(context(), ["t"], kafka_params={"bootstrap.servers": "127.0.0.1:1"},
                                 client=client, commit_offsets=False)
    assert stream.group is None


@pytest.mark.parametrize("client", CLIENTS)
def test_a_config_error_does_not_show_secrets(client: str) -> None:
    params = {**GOOD, "sasl.password": "hunter2-secret", "no.such.property": "1"}
    with pytest.raises(ConfigError) as caught:
        kafka_direct_stream(context(), ["t"], kafka_params=params, client=client)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("options, message", [
    ({"client": "java"}, "unknown Kafka client 'java'"),
    ({"pattern": "t.*"}, "exactly one of topics"),
    ({"topics": None}, "exactly one of topics"),
    ({"topics": []}, "topics must be a non-empty list"),
    ({"topics": None, "pattern": "(unclosed"}, "not a valid regular expression"),
    ({"topics": None, "assign": [("t", -1)]}, r"assign= takes \(topic, partition\) pairs"),
    ({"max_rate_per_partition": 0}, "max_rate_per_partition must be a positive number"),
    ({"initial_rate": -5}, "initial_rate must be a positive number"),
    ({"max_records_per_batch": 0}, "max_records_per_batch must be a positive integer"),
    ({"max_records_per_batch": 2.5}, "max_records_per_batch must be a positive integer"),
    ({"on_data_loss": "ignore"}, "on_data_loss must be one of"),
    ({"on_decode_error": "retry"}, "on_decode_error must be 'fail', 'skip' or DeadLetterTopic"),
    ({"value_deserializer": "yaml"}, "unknown value_deserializer 'yaml'"),
    ({"backpressure": True, "pid": {"gain": 2}}, "pid= accepts proportional, integral, derivative and min_rate"),
    ({"backpressure": True, "pid": {"integral": -1}}, "integral gain must be >= 0"),
    ({"poll_timeout": 0}, "poll_timeout must be > 0"),
])
def test_bad_stream_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"topics": ["t"], "kafka_params": GOOD, **options}
    topics = args.pop("topics")
    with pytest.raises(ConfigError, match=message):
        kafka_direct_stream(context(), topics, **args)
