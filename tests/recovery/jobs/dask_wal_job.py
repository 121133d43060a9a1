"""A receiver job with the write-ahead log on, for the Dask cluster fault
test of receivers: the deterministic acknowledging `ChunkReceiver` (its
server runs in the test) on a worker, blocks replicated to a second worker
(the default on a cluster), and an exactly-once SqlSink. Runs until stopped
(SIGTERM):

    ingest run --supervise --cluster ADDRESS dask_wal_job.py PORT CHECKPOINT DB PIDFILE GATE

CHECKPOINT is a file:// URL: a directory every host of the cluster sees at
that path (here all run on one machine). Each start appends its pid to
PIDFILE, so the test can kill the driver that runs now. Every output row is
one received integer. While the file GATE exists, the sink waits before it
reads its batch: the test holds blocks logged and unprocessed when a fault
strikes.
"""

import os
import sqlite3
import sys
import time

from chunk_source import ChunkReceiver
from ingest import StreamingContext
from ingest.sinks import SqlSink

port, checkpoint, db, pidfile, gate = sys.argv[1:6]
with open(pidfile, "a") as f:
    f.write(f"{os.getpid()}\n")


def connect():
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS out (n INTEGER)")
    conn.commit()
    return conn


def write_rows(cur, batch) -> None:
    while os.path.exists(gate):
        time.sleep(0.05)
    cur.executemany("INSERT INTO out (n) VALUES (?)", [(n,) for n in batch.collect()])


sink = SqlSink(connect, write_rows, name="received")


def factory():
    # Retries absorb a batch whose tasks were lost with the scheduler; if the
    # scheduler stays away longer, the batch fails and --supervise restarts
    # the driver, which resumes from the checkpoint and its write-ahead log.
    ssc = StreamingContext(batch_interval=0.5, max_batch_retries=3, write_ahead_log=True)
    ssc.receiver_stream(ChunkReceiver(int(port)), name="chunks").foreach_batch(sink)
    return ssc


ssc = StreamingContext.get_or_create(checkpoint, factory)
ssc.start()
ssc.await_termination()
