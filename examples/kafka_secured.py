"""A direct Kafka stream on a secured cluster: SASL (SCRAM) or TLS settings in kafka_params.

What it shows: Kafka's own security settings passed in kafka_params (the consumer-group
receiver and the sinks' producer_config take the same ones), and what a mistake gives:
one error naming the cause (authentication failed, certificate verify failed) within
seconds, not a timeout. SETTINGS is a JSON file of confluent-kafka settings, either one
object or, as `ingest services kafka` writes for its secured listeners
(client-settings.json, readable only by its owner), {"sasl": {...}, "tls": {...}} with
LISTENER choosing one. Reads TOPIC from the start for SECONDS (default 10).

    python examples/kafka_secured.py SETTINGS.json TOPIC [SECONDS] [sasl|tls]
"""

import json
import sys

from direct import kafka_direct_stream
from ingest import StreamingContext

settings_file, topic = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
listener = sys.argv[4] if len(sys.argv) > 4 else "sasl"
with open(settings_file) as f:
    settings = json.load(f)
settings = settings.get(listener, settings)       # one listener's settings, or the file's only ones
kafka_params = {**settings, "group.id": "secured-example", "auto.offset.reset": "earliest"}

ssc = StreamingContext(batch_interval=1.0)
events = kafka_direct_stream(ssc, topics=[topic], kafka_params=kafka_params)
counts = []
events.foreach_batch(lambda batch: counts.append(batch.count()))
ssc.start()
ssc.await_termination(timeout=seconds)
ssc.stop()
print("records read:", sum(counts))
