"""`KafkaTransactionalSink`: exactly-once output to a Kafka topic.

Each batch is one Kafka transaction holding the batch's output records AND the
input offsets (`send_offsets_to_transaction` to the stream's consumer group),
so a reader with `isolation.level=read_committed` sees every input record's
output exactly once:

- whether a batch was already applied is decided by the rule shared by every
  exactly-once sink (`ingest.sinks.applied`), reading the group's committed
  offsets: a re-run batch whose transaction committed is skipped;
- the batch time and the sink's identity travel as the committed offsets'
  metadata (JSON with a format version), so a batch whose ranges are all empty
  but which has output (a window, state) is written once, not never or twice;
- a batch whose transaction did not commit is aborted by the broker (or by
  `init_transactions` of the restarted job) and written again;
- the transactional id is stable (`transactional_id=`), so a restarted job
  fences the old process (a zombie) before writing: the zombie's next
  transactional call fails.

Reading the committed offsets retries retriable errors (the group coordinator
moving or loading: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, timeouts)
with backoff until `committed_timeout_s`, then fails the batch with a
`SourceError`. A batch with nothing to write and no offsets to advance is a
no-op, logged at debug level only.

The batch's input must be a direct Kafka stream (its offset ranges are what is
committed). Records are turned into (key, value[, headers]) by `serialize`.
The sink's identity is `name=`, else its transactional id; two sinks of a job
may share neither, nor a transactional id or group.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ConfigError, SourceError
from ingest.install_hint import install_hint
from ingest.kafka.calls import BrokerCallError, call
from ingest.kafka.client_logs import with_client_logs
from ingest.kafka.config import check_security, connection_settings
from ingest.kafka.security import ConfluentCauses, first_contact
from ingest.sinks.applied import Stored, already_applied, evidence_of
from ingest.sinks.identity import check_name
from offsets import KafkaRanges

if TYPE_CHECKING:
    from ingest.batch import Batch

log = logging.getLogger("ingest.sinks.kafka")

METADATA_FORMAT = 1
"""Version of the JSON this sink puts in the committed offsets' metadata."""

# Errors of the group coordinator that go away by themselves: it moves, loads,
# or has a transaction's offsets pending (read_committed consumers see those as unstable).
_RETRIABLE_CODES = frozenset({16, 14, 15, -185, 7, -195, 88})  # NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
# COORDINATOR_NOT_AVAILABLE, _TIMED_OUT, REQUEST_TIMED_OUT, _TRANSPORT, UNSTABLE_OFFSET_COMMIT


def _default_serialize(record: Any) -> tuple[Any, Any]:
    if isinstance(record, tuple) and len(record) == 2:
        return record[0], record[1]
    return None, record


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"KafkaTransactionalSink: keys and values must be bytes, str or None after serialize(), "
                    f"got {type(value).__name__}")


class KafkaTransactionalSink:
    def __init__(self, topic: str, *, producer_config: Mapping[str, Any], transactional_id: str, group_id: str,
                 serialize: Callable[[Any], tuple[Any, ...]] = _default_serialize,
                 transaction_timeout_s: float = 60.0, committed_timeout_s: float = 60.0,
                 name: str | None = None) -> None:
        """topic: where the output goes. producer_config: at least bootstrap.servers.
        transactional_id: stable across restarts of this job (unique per job and sink).
        group_id: the consumer group of the input stream (its kafka_params['group.id']).
        committed_timeout_s: how long retriable errors reading the group's offsets are retried.
        name: the sink's identity (default: the transactional id)."""
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(f"KafkaTransactionalSink needs confluent-kafka: {install_hint('kafka')}") from exc
        if not topic or not transactional_id or not group_id:
            raise ConfigError("KafkaTransactionalSink needs topic, transactional_id and group_id")
        if "bootstrap.servers" not in producer_config:
            raise ConfigError("KafkaTransactionalSink: producer_config needs 'bootstrap.servers'")
        check_security(producer_config, "KafkaTransactionalSink producer_config")
        for key in ("transactional.id", "enable.idempotence"):
            if key in producer_config:
                raise ConfigError(f"KafkaTransactionalSink sets {key!r} itself; remove it from producer_config")
        if committed_timeout_s <= 0:
            raise ConfigError(f"KafkaTransactionalSink: committed_timeout_s must be > 0, got {committed_timeout_s}")
        self.topic = topic
        self.transactional_id = transactional_id
        self.group_id = group_id
        self.name = check_name(transactional_id if name is None else name, "KafkaTransactionalSink")
        self._serialize = serialize
        self._config = {**producer_config, "transactional.id": transactional_id, "enable.idempotence": True,
                        "transaction.timeout.ms": int(transaction_timeout_s * 1000)}
        self._timeout = transaction_timeout_s
        self._committed_timeout = committed_timeout_s
        self._producer: Any = None
        self._consumer: Any = None
        self._lock = threading.Lock()
        self.batches_written = 0
        self.batches_skipped = 0
        self.records_written = 0  # records of the committed transactions, so a job need not count them again

    @property
    def sink_id(self) -> str:
        return self.name

    @property
    def sink_claims(self) -> tuple[str, ...]:
        # Two producers with one transactional id fence each other; two sinks
        # committing to one group read each other's offsets as their own.
        return (f"the sink identity {self.name!r}", f"the Kafka transactional id {self.transactional_id!r}",
                f"the Kafka consumer group {self.group_id!r}")

    def _new_producer(self) -> Any:
        from confluent_kafka import Producer

        # A refused handshake (wrong password, untrusted certificate) would
        # otherwise surface as init_transactions timing out after transaction_timeout_s.
        causes = ConfluentCauses(self._config, "producer_config")
        producer = Producer(with_client_logs({**self._config, "error_cb": causes}))
        left = first_contact(producer, causes, self._timeout, f"{self._config['bootstrap.servers']} (sink {self.name})")
        producer.init_transactions(left)  # fences any older producer with this id
        return producer

    def _new_consumer(self) -> Any:
        from confluent_kafka import Consumer

        return Consumer({**with_client_logs(connection_settings(self._config)), "group.id": self.group_id,
                         "enable.auto.commit": False,
                         "isolation.level": "read_committed"})

    def _clients(self) -> tuple[Any, Any]:
        if self._producer is None:
            self._producer = self._new_producer()
        if self._consumer is None:
            self._consumer = self._new_consumer()
        return self._producer, self._consumer

    def __call__(self, batch: "Batch[Any]") -> None:
        from confluent_kafka import TopicPartition

        kafka = [(name, p) for name, p in batch.positions.items() if isinstance(p, KafkaRanges)]
        if not kafka:
            raise ConfigError(f"sink {self.name}: KafkaTransactionalSink needs a batch from a direct Kafka stream "
                              f"(batch {batch.id} has no offset ranges); use SqlSink or DedupeSink for other sources")
        ranges = [r for _name, p in kafka for r in p.ranges]
        evidence = evidence_of(batch)
        records: list[Any] | None = None
        if not evidence:
            records = batch.collect()
            if not records:  # nothing read, nothing to write: no transaction at all
                log.debug("sink %s: batch %s is empty; nothing to write", self.name, batch.id)
                return
            if not ranges:
                raise ConfigError(f"sink {self.name}: batch {batch.id} has output but its Kafka input has no "
                                  "partition, so there is no offset to commit it with")
        with self._lock:
            producer, consumer = self._clients()
            committed = self._committed(consumer, [TopicPartition(r.topic, r.partition) for r in ranges], batch)
            stored = Stored(
                batch_time=max((t for _o, t in committed.values() if t is not None), default=None),
                offsets={(name, r.topic, r.partition): committed[(r.topic, r.partition)][0]
                         for name, r in evidence.ranges if committed.get((r.topic, r.partition), (-1,))[0] >= 0})
            if already_applied(self.name, batch.time, evidence, stored,
                               store=f"the committed offsets of group {self.group_id!r}"):
                self.batches_skipped += 1
                log.info("sink %s: batch %s was already applied (group %r); skipped",
                         self.name, batch.id, self.group_id)
                return
            if records is None:
                records = batch.collect()
            metadata = json.dumps({"ingest_sink": self.name, "batch_time": batch.time, "format": METADATA_FORMAT},
                                  separators=(",", ":"))
            producer.begin_transaction()
            try:
                for record in records:
                    parts = self._serialize(record)
                    key, value = _as_bytes(parts[0]), _as_bytes(parts[1])
                    headers = parts[2] if len(parts) > 2 else None
                    while True:
                        try:
                            producer.produce(self.topic, value=value, key=key, headers=headers)
                            break
                        except BufferError:
                            producer.poll(0.05)
                producer.send_offsets_to_transaction(
                    [TopicPartition(r.topic, r.partition, r.until_offset, metadata=metadata) for r in ranges],
                    consumer.consumer_group_metadata(), self._timeout)
                producer.commit_transaction(self._timeout)
                self.batches_written += 1
                self.records_written += len(records)
            except BaseException as exc:
                self._abort(exc)
                raise

    def _committed(self, consumer: Any, tps: list[Any], batch: "Batch[Any]") -> dict[tuple[str, int],
                                                                                      tuple[int, int | None]]:
        """The group's committed offset and, if this sink wrote it, batch time per
        partition. Retriable errors are retried with backoff until the deadline
        (`ingest.kafka.calls.call`, the one retry rule of every broker call)."""
        from confluent_kafka import KafkaException

        attempts = 0

        def attempt(seconds: float) -> Any:
            nonlocal attempts
            attempts += 1
            try:
                result = consumer.committed(tps, timeout=min(10.0, seconds))
                error = next((tp.error for tp in result if tp.error is not None), None)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else exc
            if error is not None:
                raise BrokerCallError(str(error), retriable=_retriable(error))
            return result

        def retrying(error: BrokerCallError, delay: float) -> None:
            log.debug("sink %s: reading the committed offsets of group %r failed (%s); retrying in %.2f s",
                      self.name, self.group_id, error, delay)

        try:
            result = call(f"read the committed offsets of group {self.group_id!r}", attempt,
                          timeout=self._committed_timeout, max_attempt=10.0, first_delay=0.05, max_delay=1.0,
                          on_retry=retrying, clock=lambda: time.monotonic(), sleep=lambda d: time.sleep(d))
        except BrokerCallError as exc:
            raise SourceError(
                f"sink {self.name}: batch {batch.id}: cannot read the committed offsets of group "
                f"{self.group_id!r} ({attempts} attempt(s) in up to {self._committed_timeout:g} s): {exc}"
                + ("" if exc.retriable else " (not retriable)")
                + "; check that the brokers are reachable, or raise committed_timeout_s") from exc
        if attempts > 1:
            log.info("sink %s: read the committed offsets of group %r after %d attempts",
                     self.name, self.group_id, attempts)
        return {(tp.topic, tp.partition): (tp.offset, self._batch_time_of(tp.metadata, tp)) for tp in result}

    def _batch_time_of(self, metadata: Any, tp: Any) -> int | None:
        """The batch time this sink stored with a committed offset; None when the
        offset was committed by someone else (the stream's own group commit)."""
        if not metadata:
            return None
        try:
            data = json.loads(metadata)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("ingest_sink") != self.name:
            return None
        version = data.get("format")
        if version != METADATA_FORMAT:
            raise SourceError(
                f"sink {self.name}: the offset of {tp.topic}[{tp.partition}] committed to group {self.group_id!r} "
                f"carries sink metadata of format version {version!r}, and this release of ingest reads format "
                f"{METADATA_FORMAT}; upgrade ingest to the release that wrote it")
        batch_time = data.get("batch_time")
        if not isinstance(batch_time, int):
            raise SourceError(f"sink {self.name}: malformed sink metadata on the offset of {tp.topic}"
                              f"[{tp.partition}] in group {self.group_id!r}: {metadata[:120]!r}")
        return batch_time

    def _abort(self, exc: BaseException) -> None:
        from confluent_kafka import KafkaException

        fatal = isinstance(exc, KafkaException) and exc.args and exc.args[0].fatal()
        if fatal:  # fenced by a newer instance, or a broken producer: never reuse it
            log.error("sink %s: fatal producer error (%s); it will not be used again", self.name, exc)
            self._producer = None
            return
        try:
            self._producer.abort_transaction(self._timeout)
        except KafkaException as abort_exc:
            log.warning("sink %s: aborting the transaction failed (%s); starting a new producer",
                        self.name, abort_exc)
            self._producer = None

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(10)
                self._producer = None


def _retriable(error: Any) -> bool:
    try:
        return bool(error.retriable()) or error.code() in _RETRIABLE_CODES
    except AttributeError:
        return False


__all__ = ["KafkaTransactionalSink", "METADATA_FORMAT"]
