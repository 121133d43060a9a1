"""Direct Kafka to a Kafka topic, exactly once, through `KafkaTransactionalSink`.

Each batch's output records and its input offsets go into one Kafka transaction, so a
consumer reading the output with "isolation.level": "read_committed" sees every input
record's result exactly once, whatever crashes and restarts happen in between. The
offsets are the consumer group's: a restarted job starts where the last transaction ended.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/kafka_to_kafka.py IN_TOPIC OUT_TOPIC [SECONDS]

Upper-cases the values of IN_TOPIC (read from its start) into OUT_TOPIC for SECONDS
(default 10), then prints how many batches it wrote.
"""

import os
import sys

from direct import kafka_direct_stream
from ingest import StreamingContext
from ingest.sinks import KafkaTransactionalSink

in_topic, out_topic = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
group = "upper-case"

sink = KafkaTransactionalSink(out_topic, producer_config={"bootstrap.servers": bootstrap},
                              transactional_id=f"upper-case-{in_topic}", group_id=group)
ssc = StreamingContext(batch_interval=1.0)
records = kafka_direct_stream(ssc, topics=[in_topic], value_deserializer="utf-8",
                              kafka_params={"bootstrap.servers": bootstrap, "group.id": group,
                                            "auto.offset.reset": "earliest"})
records.map(lambda r: (r.key, r.value.upper())).foreach_batch(sink)   # (key, value) pairs
ssc.start()
ssc.await_termination(timeout=seconds)
ssc.stop()
print("batches written:", sink.batches_written)
