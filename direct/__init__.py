"""The receiver-less direct Kafka stream: per-batch offset ranges read by partition tasks.

    from direct import kafka_direct_stream
    stream = kafka_direct_stream(ssc, topics=["events"],
                                 kafka_params={"bootstrap.servers": "...", "group.id": "etl"})
"""

from ingest.kafka.deserializers import DeadLetterTopic, DeserializationError, avro
from ingest.kafka.records import KafkaRecord
from direct.stream import DataLossError, DirectKafkaInputDStream, OffsetStore, kafka_direct_stream

__all__ = [
    "DataLossError", "DeadLetterTopic", "DeserializationError", "DirectKafkaInputDStream", "KafkaRecord",
    "OffsetStore", "avro", "kafka_direct_stream",
]
