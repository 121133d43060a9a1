"""A file-directory stream with an idempotent sink (one file per batch, named
by the batch time and written atomically), for the kill-and-restart tests.

    python file_job.py INCOMING CHECKPOINT OUT

Runs until SIGTERM (a graceful stop). Prints "started" once the stream has
started. `INGEST_CRASH_AT` (see ingest.faults) kills it at chosen points.
"""

import json
import os
import sys

from ingest import StreamingContext

incoming, checkpoint, out = sys.argv[1:4]


def write_batch(batch):
    lines = sorted(batch.collect())
    if not lines:
        return
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{batch.id}.tmp")
    with open(tmp, "w") as f:
        json.dump({"time": batch.time, "lines": lines}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(out, f"{batch.id}.json"))


def build():
    ssc = StreamingContext(batch_interval=0.1, log_batches=False)
    files = ssc.text_file_stream(incoming, max_files_per_batch=5, min_partition_bytes=256, name="incoming")
    files.foreach_batch(write_batch)
    return ssc


ssc = StreamingContext.get_or_create(checkpoint, build)
ssc.start()
print("started", flush=True)
ssc.await_termination()
print("done", flush=True)
