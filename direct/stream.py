"""The direct Kafka stream: no receiver; every batch is a set of offset ranges.

Planning batch `t` (on the driver): refresh the partitions of the
subscription (new partitions and new topics matching a pattern are picked
up), read each partition's earliest and latest offsets, apply the data-loss
policy, cap the ranges with the rate limits and backpressure, and return one
`OffsetRange` per partition as the batch's plan. The plan goes to the intent
log before anything is read, so a re-run batch reads exactly the same records.

Reading (partition tasks, one per range): see `ingest.kafka.clients`.

Starting positions, first found wins: the checkpoint (the next offsets stored
with the newest commit, or the `until` offsets of the newest batch to re-run), the sink's stored offsets (`offset_store=`), the group's
committed offsets, `auto.offset.reset` (default latest). Partitions that appear
while the job runs start at their earliest offset, so nothing written to them
is missed. `auto.offset.reset=latest` means the end when `start()` ran, so records
produced before the first batch are not skipped.
After a batch commits, its `until` offsets are committed to the consumer group
(by one committer thread, bounded by a timeout, off the scheduler's path;
`commit_offsets=False` turns it off), so lag tools see the job's progress.

Broker faults: every broker call retries retriable errors; once nothing moved
for 30 s a warning names the cause (repeated each minute; `ssc.status()`
shows it under "inputs"), and after `broker_wait_timeout` seconds without
progress the batch fails with that cause. A handshake the brokers refuse (wrong
password, untrusted certificate, SASL mechanism not offered) is not retried: the
first call fails with the cause and the setting to fix (`ingest.kafka.security`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, Sequence

from direct.lag import LagTracker
from ingest.dataset import Dataset, Partition
from ingest.dstream import InputDStream
from ingest.errors import ConfigError, SourceError
from ingest.input_stats import Counters, PartitionLag
from ingest.kafka.calls import BrokerCallError, call
from ingest.kafka.clients import CONSUMERS, TP, make_client, redact
from ingest.kafka.committer import GroupCommitter
from ingest.kafka.config import connection_settings
from ingest.kafka.deserializers import DeadLetterTopic, DeserializationError, check_policy, deserializer_for
from ingest.kafka.errors import DataLossError
from ingest.kafka.lazy_records import DecodedRecords, LazyRecords
from ingest.kafka.records import KafkaRecord, RecordColumns
from ingest.kafka.stall import StallWatch
from ingest.rate import PIDRateEstimator, RateController
from offsets import KafkaOffsets, KafkaRanges, OffsetRange, Position

if TYPE_CHECKING:
    from ingest.context import StreamingContext

log = logging.getLogger("direct.stream")

DATA_LOSS_POLICIES = ("fail", "earliest", "latest")
# Seconds a stream waits at start() for the cluster to answer at all: a cluster that
# never answered is most likely a wrong address (later outages wait broker_wait_timeout).
FIRST_CONTACT_TIMEOUT = 10.0

DEFAULT_MAX_RECORDS_PER_BATCH = 100_000
"""Records a batch reads at most unless told otherwise: a catch-up read (a job
started against a backlog, or after downtime) then goes through the backlog in
bounded batches instead of materializing all of it in one batch, whatever the
backlog's size. `None` lifts the cap."""

COMMIT_TIMEOUT = 10.0  # seconds one group commit may take before it is given up (the next one catches up)


class OffsetStore(Protocol):
    """Where a sink keeps the offsets it has written (read when the stream starts)."""

    def load_offsets(self, stream: str) -> Mapping[TP, int]: ...


def _counters() -> Counters:
    """Counts of one stream in this process (decode errors are counted by the
    tasks that meet them; with a process pool those stay in the workers)."""
    return Counters("records_lost", "decode_errors_skipped", "dead_lettered")


COUNTERS: dict[str, Counters] = {}


class KafkaRangeSource:
    """One partition of a batch: an offset range and how to read and decode it."""

    __slots__ = ("range", "reader", "poll_timeout", "key_de", "value_de", "policy", "stream", "connection")

    def __init__(self, r: OffsetRange, reader: Any, poll_timeout: float, key_de: Any, value_de: Any,
                 policy: Any, stream: str, connection: Mapping[str, Any]) -> None:
        self.range, self.reader, self.poll_timeout = r, reader, poll_timeout
        self.key_de, self.value_de, self.policy = key_de, value_de, policy
        # How to reach the cluster (SASL and TLS settings included), for a dead-letter producer.
        self.stream, self.connection = stream, connection

    @property
    def affinity(self) -> str:
        """The task of a topic-partition prefers one worker batch after batch,
        where its consumer is cached (`ingest.affinity`)."""
        return f"{self.range.topic}\x00{self.range.partition}"

    def read(self) -> Sequence[KafkaRecord]:
        r = self.range
        convert = self.reader.converter(r.topic, r.partition)
        if self.key_de is None and self.value_de is None:
            return LazyRecords(self.reader.read(r, self.poll_timeout), convert)
        chunks = self.reader.read_converted(r, self.poll_timeout, self._columns_or_raw)
        if all(type(c) is RecordColumns for c in chunks):  # every record decodes: records built as iterated
            return DecodedRecords(r.topic, r.partition, RecordColumns.concat(chunks))
        # A chunk with a record that cannot be decoded is a list of its messages.
        failed: list[tuple[Any, BaseException]] = []
        out: list[KafkaRecord] = []
        for c in chunks:
            out.extend(DecodedRecords(r.topic, r.partition, c) if type(c) is RecordColumns
                       else self._decode_each(c, convert, failed))
        if failed:
            counters = COUNTERS.setdefault(self.stream, _counters())
            if isinstance(self.policy, DeadLetterTopic):
                self._dead_letter(failed)
                counters.add("dead_lettered", len(failed))
            else:
                counters.add("decode_errors_skipped", len(failed))
                log.warning("stream %s: skipped %d record(s) of %s that cannot be decoded (first: offset %d: %s)",
                            self.stream, len(failed), self.range, failed[0][0].offset, failed[0][1])
        return out

    def _columns_or_raw(self, msgs: list[Any]) -> Any:
        """A fetched chunk's columns, keys and values decoded; the messages
        themselves when one cannot be decoded (`_decode_each` then applies the
        stream's policy record by record)."""
        try:
            return self.reader.columns(msgs, self.key_de, self.value_de)
        except Exception:  # noqa: BLE001 - any decoder failure: the chunk is decoded one record at a time
            return msgs

    def _decode_each(self, raw: list[Any], convert: Any, failed: list[tuple[Any, BaseException]]
                     ) -> list[KafkaRecord]:
        # Decoding fused into building the record (one tuple per record): the
        # profile of a decode-and-filter job had a raw record, then a decoded
        # copy through NamedTuple._replace, as its largest cost.
        r = self.range
        decode = self.reader.converter(r.topic, r.partition, self.key_de, self.value_de)
        out: list[KafkaRecord] = []
        append = out.append
        for m in raw:
            try:
                append(decode(m))
            except Exception as exc:  # noqa: BLE001 - any decoder failure goes through the policy
                rec = convert(m)
                if self.policy == "fail":
                    raise DeserializationError(
                        f"stream {self.stream}: record {rec.topic}[{rec.partition}] offset {rec.offset} cannot be "
                        f"decoded ({type(exc).__name__}: {exc}); set on_decode_error='skip' or "
                        "DeadLetterTopic(...) to go on without it", rec.topic, rec.partition, rec.offset) from exc
                failed.append((rec, exc))
        return out

    def _dead_letter(self, failed: list[tuple[KafkaRecord, BaseException]]) -> None:
        from confluent_kafka import Producer

        policy: DeadLetterTopic = self.policy
        producer = Producer({**self.connection, "acks": "all", "enable.idempotence": True,
                             **(policy.producer_config or {})})
        errors: list[str] = []
        for rec, exc in failed:
            headers = list(rec.headers or ()) + [
                ("ingest.source.topic", rec.topic.encode()),
                ("ingest.source.partition", str(rec.partition).encode()),
                ("ingest.source.offset", str(rec.offset).encode()),
                ("ingest.error", f"{type(exc).__name__}: {exc}"[:1000].encode()),
            ]
            producer.produce(policy.topic, value=rec.value, key=rec.key, headers=headers,
                             on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        left = producer.flush(30)
        if left or errors:
            raise SourceError(f"stream {self.stream}: writing {len(failed)} undecodable record(s) to dead-letter "
                              f"topic {policy.topic!r} failed: {errors[:3] or f'{left} not acknowledged'}")


class DirectKafkaInputDStream(InputDStream[KafkaRecord]):
    kind = "kafka"
    # The clock and pause of broker waits and stall tracking (tests drive them).
    _clock = staticmethod(time.monotonic)
    _sleep = staticmethod(time.sleep)

    def __init__(
        self,
        ssc: "StreamingContext",
        *,
        topics: Iterable[str] | None = None,
        pattern: str | None = None,
        assign: Iterable[tuple[str, int]] | None = None,
        kafka_params: Mapping[str, Any],
        name: str | None = None,
        client: str = "confluent",
        key_deserializer: Any = "bytes",
        value_deserializer: Any = "bytes",
        on_decode_error: Any = "fail",
        max_rate_per_partition: float | None = None,
        max_records_per_batch: int | None = DEFAULT_MAX_RECORDS_PER_BATCH,
        backpressure: bool = False,
        initial_rate: float | None = None,
        pid: Mapping[str, float] | None = None,
        on_data_loss: str = "fail",
        commit_offsets: bool = True,
        offset_store: OffsetStore | None = None,
        poll_timeout: float = 60.0,
        broker_wait_timeout: float = 300.0,
    ) -> None:
        chosen = [n for n, v in (("topics", topics), ("pattern", pattern), ("assign", assign)) if v is not None]
        if len(chosen) != 1:
            raise ConfigError("kafka_direct_stream needs exactly one of topics=[...], pattern='...' or "
                              f"assign=[(topic, partition), ...]; got {chosen or 'none'}")
        self._topics = None if topics is None else _topic_list(topics)
        try:
            self._pattern = None if pattern is None else re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        self._assign = None if assign is None else _assign_list(assign)
        for label, value in (("max_rate_per_partition", max_rate_per_partition), ("initial_rate", initial_rate)):
            if value is not None and (isinstance(value, bool) or not value > 0):
                raise ConfigError(f"{label} must be a positive number of records per second, got {value!r}")
        if max_records_per_batch is not None and (not isinstance(max_records_per_batch, int)
                                                  or max_records_per_batch < 1):
            raise ConfigError(f"max_records_per_batch must be a positive integer, got {max_records_per_batch!r}")
        if on_data_loss not in DATA_LOSS_POLICIES:
            raise ConfigError(f"on_data_loss must be one of {DATA_LOSS_POLICIES}, got {on_data_loss!r}")
        if poll_timeout <= 0 or broker_wait_timeout < 0:
            raise ConfigError("poll_timeout must be > 0 and broker_wait_timeout >= 0 (seconds)")
        self.client = make_client(client, kafka_params)  # checks kafka_params; no connection yet
        params = self.client.params  # type: ignore[attr-defined]
        self.group: str | None = params.get("group.id")
        if commit_offsets and not self.group:
            raise ConfigError("commit_offsets=True needs kafka_params['group.id'] (the group lag tools report on); "
                              "set one, or pass commit_offsets=False")
        self.bootstrap = str(params["bootstrap.servers"])
        self._connection = connection_settings(params)  # for dead-letter producers: the same cluster, same credentials
        self._reset = {"smallest": "earliest", "largest": "latest"}.get(
            str(params.get("auto.offset.reset", "latest")).lower(), str(params.get("auto.offset.reset", "latest")))
        self._key_de = deserializer_for(key_deserializer, "key_deserializer")
        self._value_de = deserializer_for(value_deserializer, "value_deserializer")
        self._policy = check_policy(on_decode_error)
        super().__init__(ssc, name)
        self.reader = self.client.reader()  # type: ignore[attr-defined]
        self.max_rate_per_partition = max_rate_per_partition
        self.max_records_per_batch = max_records_per_batch
        self.backpressure = backpressure
        self.initial_rate = initial_rate if initial_rate is not None else (1000.0 if backpressure else None)
        self.on_data_loss = on_data_loss
        self.commit_offsets = commit_offsets
        self.offset_store = offset_store
        self.poll_timeout = poll_timeout
        self.broker_wait_timeout = broker_wait_timeout
        self.rate_controller: RateController | None = None
        if backpressure:
            try:
                estimator = PIDRateEstimator(ssc.batch_interval_ms, **(pid or {}))
            except TypeError as exc:
                raise ConfigError(f"pid= accepts proportional, integral, derivative and min_rate: {exc}") from None
            self.rate_controller = RateController(self.name, estimator)
            ssc.add_listener(self.rate_controller)
        self.counters = COUNTERS[self.name] = _counters()  # a new stream counts from zero
        self._current: dict[TP, int] = {}
        self._restored = False
        self._planned_once = False
        self._start_marks: Mapping[TP, tuple[int, int]] | None = None  # watermarks when start() ran
        self._stall = StallWatch(self.describe(), log, clock=lambda: self._clock())
        self._lag = LagTracker()
        self._committer = GroupCommitter(
            self.describe(), lambda offsets: self.client.commit(self.group, offsets, timeout=COMMIT_TIMEOUT), log)

    def describe(self) -> str:
        what = self._topics or (self._pattern.pattern if self._pattern else self._assign)
        return f"kafka stream '{self.name}' ({what}, {self.site})"

    def positions(self) -> dict[TP, int]:
        """The next offset each partition's next batch starts at."""
        return dict(self._current)

    def health(self) -> dict[str, Any]:
        """For `ssc.status()`: whether planning is stalled on the brokers, for
        how long, and the last error met (see `ingest.kafka.stall`)."""
        return self._stall.status()

    def lag(self) -> tuple[PartitionLag, ...]:
        """Per partition: the last batch's range, the log's end, the lag in
        records and in time, from the watermarks the last plan read (no
        broker call; safe from any thread)."""
        return self._lag.snapshot()

    def flush_commits(self, timeout: float = 30.0) -> bool:
        """Wait until the group commit of every committed batch so far was
        tried (group commits run off the scheduler's thread); False on timeout."""
        return self._committer.flush(timeout)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters.snapshot())
        out["partitions"] = len(self._current)
        out["rate_limit"] = self._rate()
        return out

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        limit = min(30.0, self.broker_wait_timeout)
        topics = self._first_contact(min(FIRST_CONTACT_TIMEOUT, self.broker_wait_timeout))
        if self._topics is not None:
            missing = [t for t in self._topics if t not in topics]
            if missing:
                raise SourceError(f"{self.describe()}: topic(s) {missing} do not exist on {self.bootstrap}; "
                                  "create them first (or subscribe with pattern=... to pick them up when they appear)")
        elif self._pattern is not None and not any(self._pattern.fullmatch(t) for t in topics):
            log.warning("%s: no topic matches the pattern yet; matching topics are picked up when they appear",
                        self.describe())
        log.info("%s: connected to %s with %s (params %s)", self.describe(), self.bootstrap,
                 self.client.name, redact(self.client.params))  # type: ignore[attr-defined]
        if not self._restored:
            # auto.offset.reset takes effect now, as Spark fixes its starting
            # offsets when the stream starts: with "latest", records produced
            # between start() and the first batch belong to the stream. (The
            # offset store and the group are still read by the first batch, on
            # the scheduler's thread, where a sink's connection lives.)
            tps = self._partitions(topics)
            self._start_marks = self._with_broker_wait(
                "list offsets", lambda timeout: self.client.watermarks(tps, timeout), limit)
        self._stall.progress()

    def _first_contact(self, limit: float) -> dict[str, list[int]]:
        """The cluster's topics, read when the job starts. A cluster that never
        answered is most likely a wrong address, not a broker restarting: it
        fails after `limit` seconds with one error that says what was tried,
        for how long, and the client's own last complaint."""
        started = self._clock()

        def on_retry(exc: BrokerCallError, delay: float) -> None:
            log.debug("%s: cannot read topic metadata (%s); retrying in %.1f s", self.describe(), exc, delay)

        try:
            return call("read topic metadata", self.client.list_topics, timeout=limit, first_delay=1.0,
                        on_retry=on_retry, clock=self._clock, sleep=self._sleep)
        except BrokerCallError as exc:
            self._stall.failed(f"cannot read topic metadata: {exc}")
            if not exc.retriable:
                raise SourceError(f"{self.describe()}: {exc}") from exc
            cause = exc
            while isinstance(cause.__cause__, BrokerCallError):
                cause = cause.__cause__
            relay = getattr(self.client, "log_relay", None)
            told = relay.last_problem if relay is not None else None
            raise SourceError(
                f"{self.describe()}: no Kafka broker answered at {self.bootstrap} "
                f"(kafka_params['bootstrap.servers']): tried for {self._clock() - started:.0f} s to read the "
                f"cluster's metadata; last error: {cause}"
                + (f"; the client said: {told}" if told else "")
                + ". Check the address (host:port of a broker's listener, as the broker advertises it) and "
                "that the broker is running and reachable from here") from exc

    def close(self) -> None:
        self._committer.close(COMMIT_TIMEOUT + 5.0)
        self.client.close()
        CONSUMERS.clear()

    def next_position(self, position: Position) -> KafkaOffsets | None:
        return KafkaOffsets(position.next_offsets()) if isinstance(position, KafkaRanges) else None

    def restore(self, position: Position) -> None:
        """Resume at `position`: the next offsets stored with the newest commit
        (or those after the newest batch to re-run)."""
        if isinstance(position, KafkaOffsets):
            self._current.update(position.offsets)
            self._restored = True
        elif isinstance(position, KafkaRanges):
            self._current.update(position.next_offsets())
            self._restored = True

    # -- planning -----------------------------------------------------------------------

    def _with_broker_wait(self, what: str, fn: Any, limit: float | None = None) -> Any:
        """`fn(timeout)` until it succeeds, fails for good, or the brokers
        have failed for `limit` seconds (default broker_wait_timeout) counted
        from the first failure since the stream last made progress: a broker
        that stays down fails the job after broker_wait_timeout, whichever
        call meets it. Each failure is noted by the stall watch, which warns
        (naming the cause) once nothing moved for 30 s, and then every minute."""
        limit = self.broker_wait_timeout if limit is None else limit

        def on_retry(exc: BrokerCallError, delay: float) -> None:
            self._stall.failed(f"cannot {what}: {exc}")
            log.info("%s: cannot %s (%s); retrying in %.1f s", self.describe(), what, exc, delay)

        since = self._stall.failing_since
        deadline = (self._clock() if since is None else since) + limit
        try:
            return call(what, fn, deadline=deadline, first_delay=1.0, on_retry=on_retry, clock=self._clock,
                        sleep=self._sleep)
        except BrokerCallError as exc:
            self._stall.failed(f"cannot {what}: {exc}")
            if not exc.retriable:  # no wait mends it: the configuration or the permissions must change
                raise SourceError(f"{self.describe()}: {exc}") from exc
            raise SourceError(f"{self.describe()}: {exc}; gave up after broker_wait_timeout="
                              f"{limit:.0f} s without progress") from exc

    def _partitions(self, topics: Mapping[str, list[int]] | None = None) -> list[TP]:
        if self._assign is not None:
            return list(self._assign)
        if topics is None:
            topics = self._with_broker_wait("read topic metadata", self.client.list_topics)
        if self._topics is not None:
            gone = [t for t in self._topics if t not in topics]
            if gone:
                raise SourceError(f"{self.describe()}: topic(s) {gone} no longer exist on {self.bootstrap} "
                                  "(deleted?); the batch is not planned. Recreate the topic, or change the "
                                  "subscription and restart with allow_changes=True")
            names = self._topics
        else:
            assert self._pattern is not None
            names = sorted(t for t in topics if self._pattern.fullmatch(t) and not t.startswith("__"))
        return [(t, p) for t in names for p in topics[t]]

    def _starting_offsets(self, new: list[TP], marks: Mapping[TP, tuple[int, int]]) -> dict[TP, int]:
        start: dict[TP, int] = {}
        if self._planned_once or self._restored:
            # Partitions that appeared while running: read them from their beginning.
            return {tp: marks[tp][0] for tp in new}
        stored = dict(self.offset_store.load_offsets(self.name)) if self.offset_store is not None else {}
        unknown = [tp for tp in new if tp not in stored]
        committed = self._with_broker_wait(
            "read committed offsets", lambda timeout: self.client.committed(self.group, unknown, timeout)
        ) if self.group else {}
        for tp in new:
            if tp in stored:
                start[tp] = stored[tp]
            elif committed.get(tp) is not None:
                start[tp] = committed[tp]  # type: ignore[assignment]
            elif self._reset == "earliest":
                start[tp] = marks[tp][0]
            elif self._reset == "latest":
                # The end as start() saw it; a partition it did not see appeared after it: all of it is new.
                seen = self._start_marks if self._start_marks is not None else marks
                start[tp] = seen[tp][1] if tp in seen else marks[tp][0]
            else:
                raise SourceError(f"{self.describe()}: {tp[0]}[{tp[1]}] has no committed offset for group "
                                  f"{self.group!r} and auto.offset.reset is {self._reset!r}; set a starting point")
        self._say_where_reset_starts([tp for tp in new if tp not in stored and committed.get(tp) is None],
                                     start, marks)
        return start

    def _say_where_reset_starts(self, reset: list[TP], start: Mapping[TP, int],
                                marks: Mapping[TP, tuple[int, int]]) -> None:
        """Once, at the first batch: which partitions start from auto.offset.reset
        because nothing else knew where to start, and what that skips. A new job
        that silently starts at the end looks like a job that reads nothing."""
        if not reset:
            return
        skipped = sum(max(0, start[tp] - marks[tp][0]) for tp in reset)
        where = (f"{len(reset)} partition(s) of {sorted({tp[0] for tp in reset})} start from auto.offset.reset="
                 f"{self._reset!r}: no checkpoint, no offsets stored by a sink (offset_store=) and no committed "
                 f"offsets for group {self.group!r}")
        if skipped:
            log.warning("%s: %s; this skips the %d record(s) already in them. To read them, set "
                        "kafka_params[\"auto.offset.reset\"] = \"earliest\" (a new group.id, or no checkpoint, "
                        "starts there)", self.describe(), where, skipped)
        else:
            log.info("%s: %s; no record is skipped", self.describe(), where)

    def _rate(self) -> float | None:
        if not self.backpressure:
            return None
        latest = self.rate_controller.latest_rate if self.rate_controller else None
        return latest if latest is not None else self.initial_rate

    def _until(self, current: Mapping[TP, int], latest: Mapping[TP, int]) -> dict[TP, int]:
        lags = {tp: max(0, latest[tp] - current[tp]) for tp in current}
        batch_s = self.ssc.batch_interval_ms / 1000.0
        rate = self._rate()
        per_tp: dict[TP, float] | None = None
        if rate is not None:
            total = sum(lags.values())
            per_tp = {tp: (lag / total * rate if total else 0.0) for tp, lag in lags.items()}
            if self.max_rate_per_partition is not None:
                per_tp = {tp: min(r, self.max_rate_per_partition) for tp, r in per_tp.items()}
        elif self.max_rate_per_partition is not None:
            per_tp = {tp: self.max_rate_per_partition for tp in lags}
        counts = dict(lags)
        if per_tp is not None:
            counts = {tp: min(lags[tp], max(1, int(batch_s * per_tp[tp])) if lags[tp] else 0) for tp in lags}
        if self.max_records_per_batch is not None and sum(counts.values()) > self.max_records_per_batch:
            total = sum(counts.values())
            budget = self.max_records_per_batch
            scaled = {tp: c * budget // total for tp, c in counts.items()}
            left = budget - sum(scaled.values())
            for tp in sorted(counts, key=lambda k: counts[k] - scaled[k], reverse=True):
                if left <= 0:
                    break
                if scaled[tp] < counts[tp]:
                    scaled[tp] += 1
                    left -= 1
            counts = scaled
        return {tp: current[tp] + counts[tp] for tp in current}

    def plan(self, time_ms: int) -> KafkaRanges:
        tps = self._partitions()
        gone = [tp for tp in self._current if tp not in set(tps)]
        for tp in gone:
            log.warning("%s: partition %s[%d] left the subscription; no longer read", self.describe(), *tp)
            del self._current[tp]
        marks = self._with_broker_wait("list offsets", lambda timeout: self.client.watermarks(tps, timeout))
        new = [tp for tp in tps if tp not in self._current]
        if new:
            start = self._starting_offsets(new, marks)
            if self._planned_once:
                log.info("%s: new partition(s) %s start at their earliest offsets", self.describe(),
                         [f"{t}[{p}]" for t, p in new])
            self._current.update(start)
        self._planned_once = True
        lost = self._apply_data_loss_policy(marks)
        latest = {tp: max(self._current[tp], marks[tp][1]) for tp in self._current}
        until = self._until(self._current, latest)
        ranges = [OffsetRange(t, p, self._current[(t, p)], until[(t, p)]) for (t, p) in sorted(self._current)]
        self._current = dict(until)
        self._stall.progress()
        planned = KafkaRanges(tuple(ranges), lost)
        self._lag.observe(planned, latest)
        return planned

    def _apply_data_loss_policy(self, marks: Mapping[TP, tuple[int, int]]) -> int:
        lost_total = 0
        for tp, cur in list(self._current.items()):
            low, high = marks[tp]
            if low <= cur <= high:
                continue
            if cur < low:
                what = f"offsets {cur}..{low - 1} of {tp[0]}[{tp[1]}] are no longer in Kafka (removed by retention?)"
            else:
                what = (f"{tp[0]}[{tp[1]}] ends at offset {high} but the stream is at {cur} "
                        "(the topic was deleted and recreated, or truncated)")
            if self.on_data_loss == "fail":
                raise DataLossError(f"{self.describe()}: {what}. on_data_loss='fail' stops the job; restart with "
                                    "on_data_loss='earliest' to skip to the oldest record still there, or 'latest' "
                                    "to skip to the end")
            target = low if self.on_data_loss == "earliest" else high
            lost = max(0, target - cur)  # records skipped, expired or not
            log.warning("%s: %s; on_data_loss=%r moves to offset %d (%d records skipped)", self.describe(), what,
                        self.on_data_loss, target, lost)
            self._current[tp] = target
            lost_total += lost
        if lost_total:
            self.counters.add("records_lost", lost_total)
        return lost_total

    def materialize(self, time_ms: int, position: Position) -> Dataset[KafkaRecord]:
        parts = []
        ranges = [r for r in (position.ranges if isinstance(position, KafkaRanges) else ()) if r.count > 0]
        for r in ranges:
            parts.append(Partition(KafkaRangeSource(r, self.reader, self.poll_timeout, self._key_de,
                                                    self._value_de, self._policy, self.name, self._connection)))
        if len(ranges) > 1 and self.ssc.executor.in_process:
            # Every partition fetches while the first is read (see ConfluentReader.prefetch):
            # the first batch of a 4-partition catch-up read waited for four
            # connections and first fetches one after another.
            self.reader.prefetch(ranges)
        return Dataset(parts, self.ssc.executor)

    def on_batch_committed(self, time_ms: int, position: Position) -> None:
        if not self.commit_offsets or not self.group or not isinstance(position, KafkaRanges):
            return
        # Off the scheduler's thread and bounded: see ingest.kafka.committer.
        self._committer.submit(position.next_offsets())


def _topic_list(topics: Iterable[str]) -> list[str]:
    if isinstance(topics, str):
        topics = [topics]
    out = list(topics)
    if not out or not all(isinstance(t, str) and t for t in out):
        raise ConfigError(f"topics must be a non-empty list of topic names, got {out!r}")
    return out


def _assign_list(assign: Iterable[tuple[str, int]]) -> list[TP]:
    out = []
    for item in assign:
        try:
            topic, partition = item
        except (TypeError, ValueError):
            raise ConfigError(f"assign= takes (topic, partition) pairs, got {item!r}") from None
        if not isinstance(topic, str) or not isinstance(partition, int) or partition < 0:
            raise ConfigError(f"assign= takes (topic, partition) pairs, got {item!r}")
        out.append((topic, partition))
    if not out:
        raise ConfigError("assign= needs at least one (topic, partition)")
    return sorted(set(out))


def kafka_direct_stream(ssc: "StreamingContext", topics: Iterable[str] | None = None, **options: Any
                        ) -> DirectKafkaInputDStream:
    """A receiver-less stream of `KafkaRecord`s whose batches are offset ranges.

    >>> stream = kafka_direct_stream(ssc, topics=["events"],               # doctest: +SKIP
    ...     kafka_params={"bootstrap.servers": "localhost:9092", "group.id": "etl"})

    Exactly one of `topics=[...]`, `pattern="regex"` or `assign=[(topic, partition)]`.
    See `DirectKafkaInputDStream` for rate limits, backpressure, data-loss and
    decode-error policies, and offset stores."""
    return DirectKafkaInputDStream(ssc, topics=topics, **options)
