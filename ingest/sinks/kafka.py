"""`KafkaTransactionalSink`: exactly-once output to a Kafka topic.

Each batch is one Kafka transaction holding the batch's output records AND the
input offsets (`send_offsets_to_transaction` to the stream's consumer group),
so a reader with `isolation.level=read_committed` sees every input record's
output exactly once:

- a batch whose transaction committed before a crash is skipped when it is
  re-run: the group's committed offsets already cover its ranges;
- a batch whose transaction did not commit is aborted by the broker (or by
  `init_transactions` of the restarted job) and written again;
- the transactional id is stable (`transactional_id=`), so a restarted job
  fences the old process (a zombie) before writing: the zombie's next
  transactional call fails.

The batch's input must be a direct Kafka stream (its offset ranges are what is
committed). Records are turned into (key, value[, headers]) by `serialize`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ConfigError, SourceError
from offsets import OffsetRange

if TYPE_CHECKING:
    from ingest.batch import Batch

log = logging.getLogger("ingest.sinks.kafka")


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
                 transaction_timeout_s: float = 60.0) -> None:
        """topic: where the output goes. producer_config: at least bootstrap.servers.
        transactional_id: stable across restarts of this job (unique per job and sink).
        group_id: the consumer group of the input stream (its kafka_params['group.id'])."""
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("KafkaTransactionalSink needs confluent-kafka: pip install 'ingest[kafka]'") from exc
        if not topic or not transactional_id or not group_id:
            raise ConfigError("KafkaTransactionalSink needs topic, transactional_id and group_id")
        if "bootstrap.servers" not in producer_config:
            raise ConfigError("KafkaTransactionalSink: producer_config needs 'bootstrap.servers'")
        for key in ("transactional.id", "enable.idempotence"):
            if key in producer_config:
                raise ConfigError(f"KafkaTransactionalSink sets {key!r} itself; remove it from producer_config")
        self.topic = topic
        self.transactional_id = transactional_id
        self.group_id = group_id
        self._serialize = serialize
        self._config = {**producer_config, "transactional.id": transactional_id, "enable.idempotence": True,
                        "transaction.timeout.ms": int(transaction_timeout_s * 1000)}
        self._timeout = transaction_timeout_s
        self._producer: Any = None
        self._consumer: Any = None
        self._lock = threading.Lock()
        self.batches_written = 0
        self.batches_skipped = 0

    def _clients(self) -> tuple[Any, Any]:
        from confluent_kafka import Consumer, Producer

        if self._producer is None:
            producer = Producer(self._config)
            producer.init_transactions(self._timeout)  # fences any older producer with this id
            self._producer = producer
        if self._consumer is None:
            common = {k: v for k, v in self._config.items()
                      if k == "bootstrap.servers" or k.startswith(("security.", "sasl.", "ssl."))}
            self._consumer = Consumer({**common, "group.id": self.group_id, "enable.auto.commit": False,
                                       "isolation.level": "read_committed"})
        return self._producer, self._consumer

    def __call__(self, batch: "Batch[Any]") -> None:
        from confluent_kafka import KafkaException, TopicPartition

        ranges = [r for r in batch.offset_ranges]
        if not ranges:
            raise ConfigError("KafkaTransactionalSink needs a batch from a direct Kafka stream (no offset ranges "
                              f"in batch {batch.id}); use SqlSink or an idempotent sink for other sources")
        with self._lock:
            producer, consumer = self._clients()
            tps = [TopicPartition(r.topic, r.partition) for r in ranges]
            try:
                committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=30)}
            except KafkaException as exc:
                raise SourceError(f"sink {self.transactional_id}: cannot read the committed offsets of group "
                                  f"{self.group_id!r}: {exc}") from exc
            if _already_written(ranges, committed):
                self.batches_skipped += 1
                log.info("sink %s: batch %s was already written (group offsets cover its ranges); skipped",
                         self.transactional_id, batch.id)
                return
            producer.begin_transaction()
            try:
                for record in batch.collect():
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
                    [TopicPartition(r.topic, r.partition, r.until_offset) for r in ranges],
                    consumer.consumer_group_metadata(), self._timeout)
                producer.commit_transaction(self._timeout)
                self.batches_written += 1
            except BaseException as exc:
                self._abort(exc)
                raise

    def _abort(self, exc: BaseException) -> None:
        from confluent_kafka import KafkaException

        fatal = isinstance(exc, KafkaException) and exc.args and exc.args[0].fatal()
        if fatal:  # fenced by a newer instance, or a broken producer: never reuse it
            log.error("sink %s: fatal producer error (%s); it will not be used again", self.transactional_id, exc)
            self._producer = None
            return
        try:
            self._producer.abort_transaction(self._timeout)
        except KafkaException as abort_exc:
            log.warning("sink %s: aborting the transaction failed (%s); starting a new producer",
                        self.transactional_id, abort_exc)
            self._producer = None

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.flush(10)
                self._producer = None


def _already_written(ranges: list[OffsetRange], committed: Mapping[tuple[str, int], int]) -> bool:
    """True when the group's committed offsets cover every non-empty range."""
    non_empty = [r for r in ranges if r.count > 0]
    if not non_empty:
        return True
    done = [committed.get((r.topic, r.partition), -1) >= r.until_offset for r in non_empty]
    if all(done):
        return True
    if any(done):
        raise SourceError("the group's committed offsets cover only part of this batch's ranges; another job "
                          "with the same group.id commits offsets of these partitions. Give each job its own group")
    return False
