"""A job over the reliable Kafka receiver (`receivers.kafka_stream`) with the
write-ahead log on, for the crash-recovery tests.

    python kafka_receiver_job.py CHECKPOINT OUT BOOTSTRAP TOPIC GROUP --mode run|drain

- run: receive and process until killed (batches of 200 ms on the system clock).
- drain: once everything in the topic is stored (the group's committed offset,
  or an offset found in the write-ahead log, has reached the end of every
  partition), stop gracefully, so that every stored block is processed; print
  "done".

Two sinks, both append-only, one file per process so that a torn last line
is only ever at the end of a file:

- OUT/plain/<pid>.log: one JSON line per record value, appended per batch:
  at-least-once, a batch re-run after a crash writes its records again;
- OUT/tagged/<pid>.log: one JSON line [block id, index in block, value] per
  record. A batch's `positions[stream].blocks` lists its blocks in the
  order of the dataset's partitions (no shuffle here), so a reader that keeps
  one record per (block id, index) has each record exactly once.

Faults: `INGEST_CRASH_AT` (ingest.faults); `JOB_CRASH_DURING_OUTPUT=N` kills
the process halfway through the N-th non-empty sink write;
`JOB_KILL_IN_COMMIT=N` kills it inside the receiver's N-th offset commit, after
the batch holding that block has committed (the block is stored and processed,
its offsets not yet committed to the group).
"""

import argparse
import json
import os
import signal
import time

import confluent_kafka as ck
from torn_write import write_synced

from ingest import StreamingContext
from receivers import kafka_stream

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("bootstrap")
parser.add_argument("topic")
parser.add_argument("group")
parser.add_argument("--mode", choices=["run", "drain"], required=True)
args = parser.parse_args()

STREAM = "orders"
crash_during = int(os.environ.get("JOB_CRASH_DURING_OUTPUT", "0"))
kill_in_commit = int(os.environ.get("JOB_KILL_IN_COMMIT", "0"))
writes = [0]
committed_batches = [0]


def append(kind, lines):
    if not lines:
        return
    directory = os.path.join(args.out, kind)
    os.makedirs(directory, exist_ok=True)
    payload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    writes[0] += 1
    with open(os.path.join(directory, f"{os.getpid()}.log"), "ab") as f:
        write_synced(f, payload, die_halfway=writes[0] == crash_during)


def plain_sink(batch):
    append("plain", [r.value.decode() for r in batch.collect()])


def tagged_sink(batch):
    blocks = batch.positions[STREAM].blocks
    partitions = batch.partitions()
    assert len(blocks) == len(partitions), (len(blocks), len(partitions))
    append("tagged", [[block.block_id, index, record.value.decode()]
                      for block, records in zip(blocks, partitions) for index, record in enumerate(records)])
    committed_batches[0] += 1


if kill_in_commit:
    class KillInCommit(ck.Consumer):
        commits = 0

        def commit(self, *a, **kw):
            KillInCommit.commits += 1
            if KillInCommit.commits == kill_in_commit:
                # Wait until a batch after this block's store has committed (its
                # blocks cleaned from the log), then die before the group hears of it.
                seen = committed_batches[0]
                deadline = time.monotonic() + 10
                while committed_batches[0] < seen + 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGKILL)
            return super().commit(*a, **kw)

    ck.Consumer = KillInCommit


def factory():
    ssc = StreamingContext(batch_interval=0.2, write_ahead_log=True, stop_on_signal=False, log_batches=False)
    params = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        # A restarted process takes the killed one's place in the group at once,
        # instead of waiting for its session to time out.
        "group.instance.id": f"{args.group}-member",
        "session.timeout.ms": 6000,
        "auto.offset.reset": "earliest",
    }
    orders = kafka_stream(ssc, [args.topic], params, name=STREAM, block_records=100,
                          restart_delay=0.2, max_restart_delay=1.0)
    orders.foreach_batch(plain_sink, name="plain")
    orders.foreach_batch(tagged_sink, name="tagged")
    holder["stream"] = orders
    return ssc


def caught_up(reader, stream):
    """Every partition is stored up to its end: committed to the group, or
    found in the write-ahead log when this process started."""
    meta = reader.list_topics(args.topic, timeout=10).topics[args.topic]
    tps = [ck.TopicPartition(args.topic, p) for p in sorted(meta.partitions)]
    committed = {tp.partition: tp.offset for tp in reader.committed(tps, timeout=10)}
    durable = {}
    for m in stream.recovered_metadata():
        for topic, partition, offset in m.get("offsets", []):
            durable[partition] = max(durable.get(partition, 0), offset)
    for tp in tps:
        _, high = reader.get_watermark_offsets(tp, timeout=10, cached=False)
        if max(committed.get(tp.partition, -1), durable.get(tp.partition, -1)) < high:
            return False
    return True


holder = {}
ssc = StreamingContext.get_or_create(args.checkpoint, factory)
ssc.start()
if args.mode == "drain":
    reader = ck.Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.group})
    try:
        deadline = time.monotonic() + 60
        while not caught_up(reader, holder["stream"]):
            if time.monotonic() > deadline:
                raise SystemExit("the receiver did not catch up with the topic within 60 s")
            time.sleep(0.1)
    finally:
        reader.close()
    ssc.stop(graceful=True)
    ssc.await_termination(timeout=0)
    print("done", flush=True)
else:
    ssc.await_termination()
