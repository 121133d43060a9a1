"""A job over a replayable source (a queue whose contents the application
rebuilds identically on every start), with a running total per key and an
idempotent sink: one file per batch, named by the batch id and written
atomically. Used by the crash-recovery tests.

    python queue_job.py CHECKPOINT OUT [--batches N] [--extra] [--clock manual|system]

`INGEST_CRASH_AT` (see ingest.faults) kills it at chosen points;
`JOB_CRASH_DURING_OUTPUT=N` kills it in the middle of the N-th sink write.
"""

import argparse
import json
import os

from torn_write import write_synced

from ingest import ManualClock, StreamingContext

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("--batches", type=int, default=24)
parser.add_argument("--extra", action="store_true", help="the 'upgraded' app: one more transformation and output")
parser.add_argument("--clock", choices=["manual", "system"], default="manual")
args = parser.parse_args()

crash_during = int(os.environ.get("JOB_CRASH_DURING_OUTPUT", "0"))
writes = [0]


def write_batch(directory, batch, records):
    os.makedirs(directory, exist_ok=True)
    writes[0] += 1
    tmp = os.path.join(directory, f".{batch.id}.tmp")
    payload = json.dumps({"time": batch.time, "records": records}, sort_keys=True)
    with open(tmp, "w") as f:
        write_synced(f, payload, die_halfway=writes[0] == crash_during)
    os.replace(tmp, os.path.join(directory, f"{batch.id}.json"))


def queued_batches():
    return [[f"k{(b * 7 + i) % 5}:{b}:{i}" for i in range(b % 4 + 3)] for b in range(args.batches)]


def factory():
    clock = ManualClock() if args.clock == "manual" else None
    ssc = StreamingContext(batch_interval=1.0 if args.clock == "manual" else 0.05, clock=clock,
                           stop_on_signal=False, log_batches=False)
    lines = ssc.queue_stream(queued_batches(), name="lines")
    if args.extra:
        lines = lines.map(lambda s: s.strip())  # a transformation added by the upgrade
    pairs = lines.map(lambda s: (s.split(":")[0], 1))
    totals = pairs.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="totals")
    lines.foreach_batch(lambda b: write_batch(os.path.join(args.out, "lines"), b, sorted(b.collect())))
    totals.foreach_batch(lambda b: write_batch(os.path.join(args.out, "totals"), b, sorted(b.collect())))
    if args.extra:
        lines.count().foreach_batch(lambda b: write_batch(os.path.join(args.out, "counts"), b, b.collect()))
    return ssc, ssc._graph.inputs[0]


holder = {}


def build():
    ssc, source = factory()
    holder["source"] = source
    return ssc


ssc = StreamingContext.get_or_create(args.checkpoint, build)
ssc.start()
source = holder["source"]
if args.clock == "manual":
    while source.pending() > 0:
        ssc.step()
    ssc.stop(graceful=True)
else:
    while source.pending() > 0 and ssc.await_termination(timeout=0.05) is False:
        pass
    ssc.stop(graceful=True)
ssc.await_termination(timeout=0)
print("done", flush=True)
