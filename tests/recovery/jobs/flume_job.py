"""A job receiving a Flume agent's events with the write-ahead log on, for the
SIGKILL tests of the Flume streams.

    python flume_job.py CHECKPOINT OUT PORT --source push|pull

push: flume_stream listens on PORT for the agent's Avro sink; pull:
flume_polling_stream polls the agent's pull sink at PORT.

Runs until killed. Batches of 200 ms write the bodies into the SQLite database
OUT/out.db through a DedupeSink (a batch re-run after a crash is skipped), and
the number of events stored so far in this run is written to OUT/received.
The receiver is rate-limited (1,000 events/s), so that the agent is still
sending when the test kills the job.
"""

import argparse
import contextlib
import os
import sqlite3

from ingest import StreamingContext
from ingest.sinks import DedupeSink
from receivers import flume_polling_stream, flume_stream

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("port", type=int)
parser.add_argument("--source", choices=["push", "pull"], required=True)
args = parser.parse_args()
DB = os.path.join(args.out, "out.db")


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def connect():
    return sqlite3.connect(DB, check_same_thread=False)


def insert(cur, batch):
    cur.executemany("INSERT INTO events (body) VALUES (?)", [(b,) for b in batch.collect()])


holder = {}


def factory():
    ssc = StreamingContext(batch_interval=0.2, write_ahead_log=True, stop_on_signal=False, log_batches=False)
    options = dict(body_only=True, value_deserializer="utf-8", name="flume", max_rate=1000, restart_delay=0.1,
                   max_restart_delay=0.5)
    if args.source == "push":
        bodies = flume_stream(ssc, "127.0.0.1", args.port, **options)
    else:
        bodies = flume_polling_stream(ssc, [("127.0.0.1", args.port)], max_batch_size=50, **options)
    bodies.foreach_batch(DedupeSink(connect, insert, name="events"))
    holder["stream"] = bodies.parents[0]
    return ssc


os.makedirs(args.out, exist_ok=True)
with contextlib.closing(sqlite3.connect(DB)) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS events (body TEXT NOT NULL)")
    conn.commit()
ssc = StreamingContext.get_or_create(args.checkpoint, factory)
ssc.start()
stream = holder.get("stream")
reported = -1
while True:
    received = stream.records_received if stream is not None else 0
    if received != reported:
        write_atomic(os.path.join(args.out, "received"), str(received))
        reported = received
    if ssc.await_termination(timeout=0.02):
        break
