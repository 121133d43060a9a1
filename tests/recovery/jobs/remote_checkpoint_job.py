"""A job with its checkpoint on HDFS or S3: a queue of words, a running count
per word, and an idempotent sink (one local file per batch, named by its time).

    python remote_checkpoint_job.py CHECKPOINT_URL OUT --steps N [--hold] [--lease S]

Storage options come as JSON in $JOB_STORAGE_OPTIONS (so that they are not on
the command line). With --hold it runs N batches, prints "holding" and waits
to be killed; without, it runs N batches and stops cleanly.
"""

import argparse
import json
import os
import sys
import time

from ingest import ManualClock, StreamingContext

BATCHES = [[f"w{(b * 3 + i) % 4}" for i in range(b % 3 + 2)] for b in range(8)]


def write_batch(out, batch, records):
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{batch.time}.tmp")
    with open(tmp, "w") as f:
        json.dump(sorted(records), f)
    os.replace(tmp, os.path.join(out, f"{batch.time:08d}.json"))


def factory(out):
    def build():
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        words = ssc.queue_stream(BATCHES, name="words")
        counts = words.map(lambda w: (w, 1)).update_state_by_key(lambda new, old: (old or 0) + sum(new),
                                                                  name="counts")
        counts.foreach_batch(lambda b: write_batch(out, b, b.collect()))
        return ssc
    return build


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--lease", type=float, default=30.0)
    args = parser.parse_args()
    options = json.loads(os.environ.get("JOB_STORAGE_OPTIONS", "{}"))
    ssc = StreamingContext.get_or_create(args.checkpoint, factory(args.out), storage_options=options,
                                         lease_seconds=args.lease)
    ssc.start()
    ssc.step(args.steps)
    if args.hold:
        print("holding", flush=True)
        while True:
            time.sleep(1)
    ssc.stop(graceful=False)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
