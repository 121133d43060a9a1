"""Direct Kafka to SQLite, exactly once.

Every batch's rows, its Kafka offsets and its batch time are written in one SQLite
transaction by `SqlSink`, and the stream starts from the offsets stored with them: run it
twice (or kill it and run it again) and no record is written twice or lost.

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 python examples/kafka_to_sqlite.py TOPIC [DB] [SECONDS]

Reads TOPIC from its start ("auto.offset.reset": "earliest") for SECONDS (default 10),
then prints how many rows the table holds.
"""

import os
import sqlite3
import sys

from direct import kafka_direct_stream
from ingest import StreamingContext
from ingest.sinks import SqlSink

topic = sys.argv[1]
db = sys.argv[2] if len(sys.argv) > 2 else "events.db"
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")

with sqlite3.connect(db) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS events (partition INTEGER, offset INTEGER, value TEXT)")


def write(cursor, batch):                # runs inside the sink's transaction: no commit here
    cursor.executemany("INSERT INTO events VALUES (?, ?, ?)",
                       [(r.partition, r.offset, r.value) for r in batch.collect()])


sink = SqlSink(lambda: sqlite3.connect(db), write, name="events")
ssc = StreamingContext(batch_interval=1.0)
events = kafka_direct_stream(ssc, topics=[topic], value_deserializer="utf-8", offset_store=sink,
                             kafka_params={"bootstrap.servers": bootstrap, "group.id": "events-to-sqlite",
                                           "auto.offset.reset": "earliest"})
events.foreach_batch(sink)
ssc.start()
ssc.await_termination(timeout=seconds)
ssc.stop()

with sqlite3.connect(db) as conn:
    print("rows in events:", conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
