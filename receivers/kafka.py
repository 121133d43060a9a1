"""The reliable Kafka receiver: a consumer group member that stores before it commits.

    from receivers import kafka_stream
    stream = kafka_stream(ssc, topics=["events"],
                          kafka_params={"bootstrap.servers": "...", "group.id": "etl"})

The receiver consumes up to `block_records` records at a time, stores them as
one block with `store_batch` (with `write_ahead_log=True` the block is in the
WAL, fsynced, when that returns) and only then commits their offsets to the
group, synchronously. A crash between the two leaves the block in the WAL with
its offsets as metadata; on restart the receiver resumes each partition after
the larger of the committed and the durable offset, so nothing is read twice
into a second block and nothing is lost. Partitions revoked by a rebalance have
no stored-but-uncommitted records (store and commit happen before the next
poll), and records fetched for them after the revocation are dropped.

Without the WAL, blocks live in memory and a crash loses those not yet
processed even though their offsets were committed: use the WAL, or the
direct stream (`direct.kafka_direct_stream`), which needs neither.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ingest.errors import ConfigError, ReceiverError
from ingest.kafka.config import check_common, redact
from ingest.kafka.records import KafkaRecord, from_confluent
from receivers.receiver import Receiver

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream

log = logging.getLogger("receivers.kafka")


class KafkaReceiver(Receiver[KafkaRecord]):
    def __init__(self, topics: Iterable[str], kafka_params: Mapping[str, Any], *, block_records: int = 10_000,
                 poll_timeout: float = 0.2, name: str | None = None) -> None:
        try:
            import confluent_kafka as ck
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("kafka_stream needs confluent-kafka: pip install 'ingest[kafka]'") from exc
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            raise ConfigError(f"kafka_stream: topics must be a non-empty list of names, got {self.topics!r}")
        params = check_common(kafka_params)
        if not params.get("group.id"):
            raise ConfigError("kafka_stream needs kafka_params['group.id']: the receiver is a consumer group member")
        if not isinstance(block_records, int) or block_records < 1:
            raise ConfigError(f"block_records must be a positive integer, got {block_records!r}")
        self.conf = {**params, "enable.auto.commit": False}
        self.conf.setdefault("isolation.level", "read_committed")
        try:
            ck.Consumer(self.conf).close()  # checks every key now; librdkafka names an unknown one
        except (ck.KafkaException, ValueError, TypeError) as exc:
            arg = exc.args[0] if exc.args else exc
            raise ConfigError(f"invalid kafka_params: {arg.str() if hasattr(arg, 'str') else arg}") from None
        super().__init__(name or f"kafka {','.join(self.topics)} ({params['group.id']})")
        self.block_records = block_records
        self.poll_timeout = poll_timeout
        self._thread: threading.Thread | None = None
        # Next offset per partition already stored; survives restarts of this
        # receiver so that a restart never stores records twice.
        self._durable: dict[tuple[str, int], int] | None = None
        self.records_stored = 0
        self.dropped_after_revoke = 0

    def on_start(self) -> None:
        if self._durable is None:  # once per process: what the WAL already holds
            self._durable = self._durable_offsets()
        self._thread = self.start_thread(self._run, f"kafka-receiver-{self.topics[0]}")

    def on_stop(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None

    def _durable_offsets(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for meta in self.recovered_metadata():
            for topic, partition, next_offset in meta.get("offsets", []):
                key = (topic, int(partition))
                out[key] = max(out.get(key, 0), int(next_offset))
        return out

    def _run(self) -> None:
        import confluent_kafka as ck

        durable = self._durable
        assert durable is not None
        assigned: set[tuple[str, int]] = set()

        def on_assign(consumer: Any, partitions: list[Any]) -> None:
            if durable:
                committed = {(tp.topic, tp.partition): tp.offset
                             for tp in consumer.committed(partitions, timeout=30)}
                for tp in partitions:
                    resume = durable.get((tp.topic, tp.partition))
                    if resume is not None and resume > committed.get((tp.topic, tp.partition), -1):
                        tp.offset = resume
                        log.info("%s: %s[%d] resumes at %d (stored in the write-ahead log, not yet committed)",
                                 self.name, tp.topic, tp.partition, resume)
            consumer.assign(partitions)
            assigned.update((tp.topic, tp.partition) for tp in partitions)

        def on_revoke(consumer: Any, partitions: list[Any]) -> None:
            # Everything consumed so far is stored and committed (same thread, before this poll).
            assigned.difference_update((tp.topic, tp.partition) for tp in partitions)
            log.info("%s: partitions revoked: %s", self.name, [f"{tp.topic}[{tp.partition}]" for tp in partitions])

        try:
            consumer = ck.Consumer(self.conf)
        except ck.KafkaException as exc:
            self.restart(f"cannot create the consumer: {exc}", exc)
            return
        try:
            consumer.subscribe(self.topics, on_assign=on_assign, on_revoke=on_revoke)
            while not self.stop_event.is_set():
                msgs = self._fill_block(consumer)
                if not msgs:
                    continue
                records: list[KafkaRecord] = []
                offsets: dict[tuple[str, int], int] = {}
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.fatal():
                            raise ReceiverError(f"{self.name}: fatal consumer error: {err.str()}")
                        if err.code() != ck.KafkaError._PARTITION_EOF:
                            self.report_error(f"{self.name}: {err.str()}")
                        continue
                    key = (m.topic(), m.partition())
                    if key not in assigned:
                        self.dropped_after_revoke += 1
                        continue
                    records.append(from_confluent(m))
                    offsets[key] = m.offset() + 1
                if not records:
                    continue
                self.store_batch(records, {"offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())]})
                self.records_stored += len(records)
                for key, value in offsets.items():
                    durable[key] = max(durable.get(key, 0), value)
                consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=False)
        except ck.KafkaException as exc:
            if not self.stop_event.is_set():
                self.restart(f"{self.name}: {exc}", exc)
        finally:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing after a failure
                pass

    def _fill_block(self, consumer: Any) -> list[Any]:
        """Consume up to `block_records` messages, for at most one block interval
        after the first arrives: bigger blocks mean fewer fsyncs and commits."""
        import time

        msgs = consumer.consume(self.block_records, self.poll_timeout)
        if not msgs:
            return msgs
        deadline = time.monotonic() + self.supervisor.block_interval
        while len(msgs) < self.block_records and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = consumer.consume(self.block_records - len(msgs), min(left, self.poll_timeout))
            if not more:
                break
            msgs.extend(more)
        return msgs

    def describe_config(self) -> dict[str, Any]:
        return redact(self.conf)


def kafka_stream(ssc: "StreamingContext", topics: Iterable[str], kafka_params: Mapping[str, Any], *,
                 name: str | None = None, max_rate: float | None = None, block_records: int = 10_000,
                 **receiver_options: Any) -> "DStream[KafkaRecord]":
    """A stream of `KafkaRecord`s from a consumer group, stored before offsets are
    committed. Use it with `StreamingContext(write_ahead_log=True)` and a
    checkpoint for no loss on a crash (at-least-once; a sink that dedupes by
    block id gets exactly-once)."""
    receiver = KafkaReceiver(topics, kafka_params, block_records=block_records)
    return ssc.receiver_stream(receiver, max_rate=max_rate, name=name, kind="kafka-receiver", **receiver_options)
