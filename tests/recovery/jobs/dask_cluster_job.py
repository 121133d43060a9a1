"""A direct Kafka job with a running count per key (map_with_state, its state
partitions on the cluster's workers) and an exactly-once SqlSink, for the
Dask cluster fault test. Runs until stopped (SIGTERM):

    ingest run --supervise --cluster ADDRESS dask_cluster_job.py BOOTSTRAP TOPIC CHECKPOINT DB PIDFILE

Each start appends its pid to PIDFILE, so the test can kill the driver that
runs now. Every output row is (partition, offset, value, key, count): the
count of key's records so far, so a key's counts are 1..n exactly when its
state survived every fault.
"""

import os
import sqlite3
import sys

from direct import kafka_direct_stream
from ingest import StreamingContext
from ingest.sinks import SqlSink

bootstrap, topic, checkpoint, db, pidfile = sys.argv[1:6]
with open(pidfile, "a") as f:
    f.write(f"{os.getpid()}\n")


def connect():
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS out (part INTEGER, off INTEGER, value TEXT, k TEXT, n INTEGER)")
    conn.commit()
    return conn


def write_rows(cur, batch) -> None:
    cur.executemany("INSERT INTO out (part, off, value, k, n) VALUES (?, ?, ?, ?, ?)", batch.collect())


sink = SqlSink(connect, write_rows, name="counted")


def count(key, value, state):
    n = state.get_option(0) + 1
    state.update(n)
    return (*value, key, n)


def factory():
    # Retries absorb a batch whose tasks were lost with the scheduler; if the
    # scheduler stays away longer, the batch fails and --supervise restarts
    # the driver, which resumes from the checkpoint.
    ssc = StreamingContext(batch_interval=0.5, max_batch_retries=3)
    stream = kafka_direct_stream(
        ssc, topics=[topic], name="input", max_rate_per_partition=40,
        kafka_params={"bootstrap.servers": bootstrap, "group.id": f"job-{topic}", "auto.offset.reset": "earliest"},
        offset_store=sink)
    stream.map(lambda r: (r.key.decode(), (r.partition, r.offset, r.value.decode()))).map_with_state(
        count, num_partitions=6, name="counts").foreach_batch(sink)
    return ssc


ssc = StreamingContext.get_or_create(checkpoint, factory)
ssc.start()
ssc.await_termination()
