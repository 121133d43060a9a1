"""A direct Kafka job with an exactly-once sink, for the crash tests.

    python direct_job.py BOOTSTRAP TOPIC CHECKPOINT --sink sql|kafka [--db PATH] [--out-topic T]

It reads TOPIC until the end offsets it sees at start, transforms each value
and writes it with the exactly-once sink. INGEST_CRASH_AT (ingest.faults) and
JOB_CRASH_DURING_OUTPUT=N (SIGKILL in the middle of the N-th sink call) kill it.
"""

import argparse
import os
import signal
import sqlite3

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from direct import kafka_direct_stream
from ingest import ManualClock, StreamingContext
from ingest.sinks import KafkaTransactionalSink, SqlSink

parser = argparse.ArgumentParser()
parser.add_argument("bootstrap")
parser.add_argument("topic")
parser.add_argument("checkpoint")
parser.add_argument("--sink", choices=["sql", "kafka"], required=True)
parser.add_argument("--db")
parser.add_argument("--out-topic")
parser.add_argument("--partitions", type=int, default=4)
args = parser.parse_args()

crash_during = int(os.environ.get("JOB_CRASH_DURING_OUTPUT", "0"))
calls = [0]
group = f"job-{args.topic}"


def maybe_crash() -> None:
    calls[0] += 1
    if calls[0] == crash_during:
        os.kill(os.getpid(), signal.SIGKILL)


def write_rows(cur, batch) -> None:
    rows = [(r.topic, r.partition, r.offset, r.value.decode().upper()) for r in batch.collect()]
    half = len(rows) // 2
    cur.executemany("INSERT INTO out (topic, part, off, value) VALUES (?, ?, ?, ?)", rows[:half])
    maybe_crash()  # killed with half the rows inserted in the open transaction
    cur.executemany("INSERT INTO out (topic, part, off, value) VALUES (?, ?, ?, ?)", rows[half:])


def connect():
    conn = sqlite3.connect(args.db)
    conn.execute("CREATE TABLE IF NOT EXISTS out (topic TEXT, part INTEGER, off INTEGER, value TEXT)")
    conn.commit()
    return conn


if args.sink == "sql":
    sink = SqlSink(connect, write_rows, name="upper")
else:
    kafka_sink = KafkaTransactionalSink(args.out_topic, producer_config={"bootstrap.servers": args.bootstrap},
                                        transactional_id=f"txn-{args.topic}", group_id=group,
                                        serialize=lambda r: (r.key, r.value.decode().upper()))

    def sink(batch) -> None:
        if crash_during and calls[0] + 1 == crash_during:
            calls[0] += 1
            # Start the transaction and produce part of it, then die inside it.
            producer, _ = kafka_sink._clients()
            producer.begin_transaction()
            for r in batch.collect()[:5]:
                producer.produce(args.out_topic, value=b"ZOMBIE-" + r.value)
            producer.flush(10)
            os.kill(os.getpid(), signal.SIGKILL)
        calls[0] += 1
        kafka_sink(batch)

admin = AdminClient({"bootstrap.servers": args.bootstrap})
ends = {(tp.topic, tp.partition): f.result().offset for tp, f in admin.list_offsets(
    {TopicPartition(args.topic, p): OffsetSpec.latest() for p in range(args.partitions)}).items()}


def factory():
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    stream = kafka_direct_stream(
        ssc, topics=[args.topic], name="input", max_rate_per_partition=40,
        kafka_params={"bootstrap.servers": args.bootstrap, "group.id": group, "auto.offset.reset": "earliest"},
        offset_store=sink if args.sink == "sql" else None)
    stream.foreach_batch(sink)
    ssc.stream = stream
    return ssc


ssc = StreamingContext.get_or_create(args.checkpoint, factory)
ssc.start()
while any(ssc.stream.positions().get(tp, 0) < end for tp, end in ends.items()):
    ssc.step()
ssc.step()  # one more: nothing left, proves the job stays put
ssc.stop(graceful=True)
ssc.await_termination(timeout=0)
print("done", flush=True)
