"""A job reading lines from a TCP server with the write-ahead log on, for the
crash-recovery tests of the socket receiver.

    python socket_wal_job.py CHECKPOINT OUT PORT --mode receive|drain [--clock manual|system]

CHECKPOINT is a local path or an hdfs:// or s3:// URL (options as JSON in
$JOB_STORAGE_OPTIONS); on HDFS and S3 the log is one object per record.

- receive: run until killed. Every time the number of lines stored (in the
  write-ahead log, fsynced) changes, it is written to OUT/received, so the
  test knows what the log holds before it sends SIGKILL. With the manual clock
  no batch ever runs; with the system clock batches of 100 ms run meanwhile.
- drain: start, then stop gracefully: every block recovered from the log is
  processed, then the process exits and prints "done".

The sink is idempotent: one file per batch id, OUT/lines/<batch id>.json,
written atomically, holding the batch's lines in order.
"""

import argparse
import json
import os

from ingest import ManualClock, StreamingContext
from receivers import SocketTextReceiver

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("port", type=int)
parser.add_argument("--mode", choices=["receive", "drain"], required=True)
parser.add_argument("--clock", choices=["manual", "system"], default="manual")
args = parser.parse_args()


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_batch(batch):
    directory = os.path.join(args.out, "lines")
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, f"{batch.id}.json"),
                 json.dumps({"time": batch.time, "records": batch.collect()}))


holder = {}


def factory():
    manual = args.clock == "manual"
    ssc = StreamingContext(batch_interval=1.0 if manual else 0.1, clock=ManualClock() if manual else None,
                           write_ahead_log=True, stop_on_signal=False, log_batches=False)
    receiver = SocketTextReceiver("127.0.0.1", args.port)
    lines = ssc.receiver_stream(receiver, name="lines", kind="socket", restart_delay=0.1, max_restart_delay=0.5)
    lines.foreach_batch(write_batch)
    holder["stream"] = lines
    return ssc


os.makedirs(args.out, exist_ok=True)
# Options of an HDFS or S3 checkpoint (endpoint, credentials), kept off the command line.
options = json.loads(os.environ.get("JOB_STORAGE_OPTIONS") or "{}")
ssc = StreamingContext.get_or_create(args.checkpoint, factory, storage_options=options or None,
                                     lease_seconds=float(os.environ.get("JOB_LEASE_SECONDS") or 30))
ssc.start()
if args.mode == "drain":
    ssc.stop(graceful=True)
    ssc.await_termination(timeout=0)
    print("done", flush=True)
else:
    stream = holder["stream"]
    reported = -1
    while True:
        received = stream.records_received
        if received != reported:
            write_atomic(os.path.join(args.out, "received"), str(received))
            reported = received
        if ssc.await_termination(timeout=0.01):
            break
