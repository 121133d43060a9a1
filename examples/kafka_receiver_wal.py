"""A Kafka consumer-group receiver with the write-ahead log.

`receivers.kafka_stream` stores each block of records in the WAL under the checkpoint
before it commits their offsets to the group, so a crash loses nothing: a restart
processes every stored block and resumes after the offsets already in the WAL
(at-least-once; `ingest.sinks.DedupeSink` makes the output exactly once). Prefer the
direct stream (examples/kafka_to_sqlite.py) for Kafka: it needs no WAL.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/kafka_receiver_wal.py TOPIC CHECKPOINT_DIR [SECONDS]

Counts the records of TOPIC (from its start) for SECONDS (default 10), then prints the total.
"""

import os
import sys

from ingest import StreamingContext
from receivers import kafka_stream

topic, checkpoint = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
received = [0]

ssc = StreamingContext(batch_interval=1.0, write_ahead_log=True)
ssc.checkpoint(checkpoint)
records = kafka_stream(ssc, [topic], {"bootstrap.servers": bootstrap, "group.id": f"count-{topic}",
                                      "auto.offset.reset": "earliest"})
records.count().foreach_batch(lambda batch: received.__setitem__(0, received[0] + sum(batch.collect())))
ssc.start()
ssc.await_termination(timeout=seconds)
ssc.stop()                               # graceful: what was stored is processed first
print("records received:", received[0])
