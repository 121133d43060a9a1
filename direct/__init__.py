"""The receiver-less direct Kafka stream: per-batch offset ranges read by partition tasks.

    from direct import kafka_direct_stream
    stream = kafka_direct_stream(ssc, topics=["events"],
                                 kafka_params={"bootstrap.servers": "...", "group.id": "etl"})

The names below load their module on first use, so that importing a part of
the package (`direct.files`, `direct.plugin`) does not load the Kafka client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offsets.lazy_names import lazy_getattr

_EXPORTS = {
    "DirectKafkaInputDStream": "direct.stream", "OffsetStore": "direct.stream", "kafka_direct_stream": "direct.stream",
    "DeadLetterTopic": "ingest.kafka.deserializers", "DeserializationError": "ingest.kafka.deserializers",
    "avro": "ingest.kafka.deserializers",
    "DataLossError": "ingest.kafka.errors",
    "KafkaRecord": "ingest.kafka.records",
}

__all__ = [
    "DataLossError", "DeadLetterTopic", "DeserializationError", "DirectKafkaInputDStream", "KafkaRecord",
    "OffsetStore", "avro", "kafka_direct_stream",
]


__getattr__ = lazy_getattr('direct', _EXPORTS, globals())


if TYPE_CHECKING:
    from direct.stream import DirectKafkaInputDStream, OffsetStore, kafka_direct_stream
    from ingest.kafka.deserializers import DeadLetterTopic, DeserializationError, avro
    from ingest.kafka.errors import DataLossError
    from ingest.kafka.records import KafkaRecord
