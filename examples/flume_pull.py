"""Events polled from Flume agents that run our pull sink: acknowledged only once stored.

What it shows: `flume_polling_stream` with the write-ahead log on. Each polled batch
is one transaction in the agent, committed (`ack`) only after the batch is fsynced
here, rolled back (`nack`) if storing fails, and redelivered by the sink after its
timeout if this job dies in between. The agent needs the jar of docker/flume-sink in
its plugins.d (see the README's Flume section). Stops after SECONDS (default 30).

    python examples/flume_pull.py 41416 /tmp/flume-pull-job 30
"""

import sys

from ingest import StreamingContext
from receivers import flume_polling_stream

port = int(sys.argv[1]) if len(sys.argv) > 1 else 41416
checkpoint = sys.argv[2] if len(sys.argv) > 2 else "/tmp/flume-pull-job"
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
received = []

ssc = StreamingContext(batch_interval=1.0, write_ahead_log=True)
ssc.checkpoint(checkpoint)
events = flume_polling_stream(ssc, addresses=[("127.0.0.1", port)], max_batch_size=1000,
                              parallelism=2)
events.map(lambda e: e.body.decode()).foreach_batch(lambda batch: received.extend(batch.collect()))
ssc.start()
print("polling port", port, flush=True)
ssc.await_termination(timeout=seconds)
ssc.stop()
print("events received:", len(received), "distinct:", len(set(received)))
