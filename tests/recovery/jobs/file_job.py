"""A file-directory stream with an idempotent sink (one file per batch, named
by the batch time and written atomically), for the kill-and-restart tests.

    python file_job.py INCOMING CHECKPOINT OUT

INCOMING and CHECKPOINT are local paths or hdfs:// / s3:// URLs; OUT is a
local directory. Storage options (endpoint, user, credentials) come as JSON in
$JOB_STORAGE_OPTIONS, so that no secret is on the command line, and the
checkpoint's lease in $JOB_LEASE_SECONDS. A driver killed with SIGKILL leaves
its lease behind until it expires: the job waits for it (retrying start) and
prints "started" once it holds the checkpoint and runs.

Runs until SIGTERM (a graceful stop), then prints its status as one JSON line
and "done". `INGEST_CRASH_AT` (see ingest.faults) kills it at chosen points.
Logs go to stderr (the tests search them for secrets).
"""

import json
import logging
import os
import sys
import time

from ingest import CheckpointError, StreamingContext

incoming, checkpoint, out = sys.argv[1:4]
options = json.loads(os.environ.get("JOB_STORAGE_OPTIONS", "{}")) or None
lease = float(os.environ.get("JOB_LEASE_SECONDS", "30"))
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("ingest").setLevel(logging.DEBUG)
logging.getLogger("direct").setLevel(logging.DEBUG)


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
    files = ssc.text_file_stream(incoming, max_files_per_batch=5, min_partition_bytes=256, name="incoming",
                                 storage_options=options)
    files.foreach_batch(write_batch)
    return ssc


checkpoint_options = {"lease_seconds": lease}
if options:
    checkpoint_options["storage_options"] = options
waited_until = time.monotonic() + 4 * lease + 30
while True:
    ssc = StreamingContext.get_or_create(checkpoint, build, **checkpoint_options)
    try:
        ssc.start()
        break
    except CheckpointError as exc:
        # The previous driver was killed: its lease runs out soon, then this one takes over.
        if "is in use by process" not in str(exc) or time.monotonic() > waited_until:
            raise
        time.sleep(0.2)
print("started", flush=True)
ssc.await_termination()
print(json.dumps(ssc.status(), default=str), flush=True)
print("done", flush=True)
