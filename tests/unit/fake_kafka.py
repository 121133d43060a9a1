"""An in-memory stand-in for the broker side of `KafkaTransactionalSink`: a
producer whose transactions commit output records and group offsets (with their
metadata) together, and a consumer whose `committed()` reads them back or raises
the errors a test queued. Installed on one sink with `FakeKafka.install`; the
real-broker tests are in tests/integration/test_kafka_transactional_sink.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from ingest.sinks import KafkaTransactionalSink

OFFSET_INVALID = -1001  # what librdkafka reports for a partition without a committed offset


@dataclass
class PartitionResult:
    """One entry of `committed()`'s result, with a per-partition error."""

    topic: str
    partition: int
    offset: int = OFFSET_INVALID
    metadata: str | None = None
    error: KafkaError | None = None


class FakeKafka:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        """Output records of committed transactions, in order."""
        self.offsets: dict[tuple[str, int], tuple[int, str | None]] = {}
        """The group's committed (offset, metadata) per partition."""
        self.transactions = 0
        self.committed_calls = 0
        self.committed_failures: list[Any] = []
        """What the next `committed()` calls do instead of answering: a KafkaError
        (raised as a KafkaException) or a list of results (returned as they are)."""

    def install(self, sink: KafkaTransactionalSink, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sink, "_new_producer", lambda: FakeProducer(self))
        monkeypatch.setattr(sink, "_new_consumer", lambda: FakeConsumer(self))

    def commit(self, topic: str, partition: int, offset: int, metadata: str | None = None) -> None:
        """An offset committed by someone else (the stream's own group commit, another job)."""
        self.offsets[(topic, partition)] = (offset, metadata)


class FakeProducer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.pending: list[tuple[bytes | None, bytes | None]] | None = None
        self.pending_offsets: list[TopicPartition] = []

    def begin_transaction(self) -> None:
        assert self.pending is None, "a transaction is already open"
        self.pending, self.pending_offsets = [], []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> None:
        assert self.pending is not None, "produce outside a transaction"
        self.pending.append((key, value))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], group_metadata: Any,
                                    timeout: float) -> None:
        assert self.pending is not None, "send_offsets_to_transaction outside a transaction"
        self.pending_offsets = list(offsets)

    def commit_transaction(self, timeout: float) -> None:
        assert self.pending is not None, "commit outside a transaction"
        self.kafka.records.extend(self.pending)
        for tp in self.pending_offsets:
            self.kafka.offsets[(tp.topic, tp.partition)] = (tp.offset, tp.metadata)
        self.kafka.transactions += 1
        self.pending = None

    def abort_transaction(self, timeout: float) -> None:
        self.pending = None

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


class FakeConsumer:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[Any]:
        self.kafka.committed_calls += 1
        if self.kafka.committed_failures:
            failure = self.kafka.committed_failures.pop(0)
            if isinstance(failure, KafkaError):
                raise KafkaException(failure)
            return failure
        out = []
        for tp in partitions:
            offset, metadata = self.kafka.offsets.get((tp.topic, tp.partition), (OFFSET_INVALID, None))
            out.append(PartitionResult(tp.topic, tp.partition, offset, metadata))
        return out

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def close(self) -> None:
        pass
