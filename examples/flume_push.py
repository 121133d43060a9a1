"""Events pushed by a Flume agent's Avro sink, durable before the agent hears OK.

What it shows: `flume_stream` (our server of Flume's AvroSourceProtocol) with the
write-ahead log on, so an event batch is answered OK only once it is fsynced; the
events' headers and bodies; a job that stops by itself after SECONDS (default 30).
Point an agent's Avro sink at PORT (see the README's Flume section):

    python examples/flume_push.py 41414 /tmp/flume-job 30
    #   a1.sinks.k1.type = avro, a1.sinks.k1.hostname = 127.0.0.1, a1.sinks.k1.port = 41414
"""

import sys

from ingest import StreamingContext
from receivers import flume_stream

port = int(sys.argv[1]) if len(sys.argv) > 1 else 41414
checkpoint = sys.argv[2] if len(sys.argv) > 2 else "/tmp/flume-job"
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
received = []

ssc = StreamingContext(batch_interval=1.0, write_ahead_log=True)
ssc.checkpoint(checkpoint)
events = flume_stream(ssc, "127.0.0.1", port)   # or ssc.stream("flume_stream", ...)
events.map(lambda e: e.body.decode()).foreach_batch(lambda batch: received.extend(batch.collect()))
events.count().pprint()
ssc.start()
print("listening on port", port, flush=True)
ssc.await_termination(timeout=seconds)
ssc.stop()                                       # graceful: what was stored is processed first
print("events received:", len(received), "distinct:", len(set(received)))
