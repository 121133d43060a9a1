"""The receiver-less direct Kafka stream: per-batch offset ranges read by partition tasks.

    from direct import kafka_direct_stream
    stream = kafka_direct_stream(ssc, topics=["events"],
                                 kafka_params={"bootstrap.servers": "...", "group.id": "etl"})
"""

from direct.stream import DirectKafkaInputDStream, OffsetStore, kafka_direct_stream
from ingest.kafka.deserializers import DeadLetterTopic, DeserializationError, avro
from ingest.kafka.errors import DataLossError
from ingest.kafka.records import KafkaRecord

__all__ = [
    "DataLossError", "DeadLetterTopic", "DeserializationError", "DirectKafkaInputDStream", "KafkaRecord",
    "OffsetStore", "avro", "kafka_direct_stream",
]
