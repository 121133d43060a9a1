"""Direct Kafka stream benchmarks: prints figures, asserts nothing.

One run, one broker, one topic (`--records` records of 100 random bytes on 4
partitions, 1,000,000 by default), measured as ratios next to the targets in
DESIGN.md:

- ``read``: records/s from start until every record was counted, for
  * a bare confluent-kafka loop: one consumer assigned all 4 partitions,
    ``consume(10000, ...)`` (never more than are left) until every record
    was seen;
  * the direct stream counting each batch (``stream.count()``), batches run
    back to back (a ManualClock stepped as fast as batches complete), no rate
    limit;
  * the direct stream building a value per record
    (``stream.map(lambda r: r.value).count()``), so that the figure includes
    the records a job actually touches;
  * ``count()`` again with batches of ``--sink-batch-records`` records, where
    the cost of each batch shows;
  * the same three with ``client="kafka-python"`` (for information).
  Target: direct stream >= 0.85x the bare loop.
- ``sink``: the direct stream writing every record (topic, partition, offset,
  value) to SQLite in batches of ``--sink-batch-records`` (50,000), through the
  exactly-once ``ingest.sinks.SqlSink`` (results, batch time and offsets in
  one transaction) and through an at-least-once sink doing the same inserts
  and one commit per batch without that bookkeeping.
  Target: exactly-once <= 10% slower than at-least-once.

Each figure is the best of ``--repeat`` runs (default 2), after one untimed
bare-loop read of the whole topic (the first read of fresh segments is slower
for whichever reader goes first).

Kafka: ``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a broker
started for the run (``ingest.testing.kafka.KafkaBroker``) and stopped after.

Usage: ``.venv/bin/python bench/kafka_direct.py [--records N] [--section read|sink]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from direct import kafka_direct_stream  # noqa: E402
from ingest import ManualClock, StreamingContext  # noqa: E402
from ingest.sinks import SqlSink  # noqa: E402

PARTITIONS = 4
RECORD_BYTES = 100
DIRECT_TARGET = 0.85
SINK_TARGET = 0.10  # exactly-once at most 10% slower


# --------------------------------------------------------------------------- data


def fill_topic(bootstrap: str, records: int) -> str:
    from confluent_kafka import Producer

    from ingest.testing.kafka import create_topic

    topic = f"direct-bench-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
                         "compression.type": "none"})
    blob = os.urandom(RECORD_BYTES * 1024)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    started = time.perf_counter()
    for i in range(records):
        start = (i % 1024) * RECORD_BYTES
        while True:
            try:
                producer.produce(topic, value=blob[start:start + RECORD_BYTES], partition=i % PARTITIONS,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failed:
        raise RuntimeError(f"producing the benchmark data failed: {left} unacknowledged, errors {failed[:3]}")
    print(f"topic {topic}: {records:,} records of {RECORD_BYTES} B on {PARTITIONS} partitions "
          f"(produced in {time.perf_counter() - started:.1f} s)")
    return topic


# --------------------------------------------------------------------------- runs


def bare_loop(bootstrap: str, topic: str, records: int) -> float:
    """records/s of one confluent-kafka consumer reading all partitions."""
    from confluent_kafka import Consumer, TopicPartition

    started = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        # Concrete start offsets, as the stream's ranges have: assigning
        # OFFSET_BEGINNING costs librdkafka ~0.5 s before the first fetch.
        lows = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[0] for p in range(PARTITIONS)]
        consumer.assign([TopicPartition(topic, p, low) for p, low in enumerate(lows)])
        seen = 0
        deadline = time.monotonic() + 600
        while seen < records:
            # Ask for no more than is left, as the stream's reader does: consume()
            # waits for its whole count or the timeout.
            for msg in consumer.consume(min(10000, records - seen), 1.0):
                if msg.error() is None:
                    seen += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare loop: only {seen} of {records} records within 600 s")
    finally:
        consumer.close()
    return records / (time.perf_counter() - started)


def run_stream(bootstrap: str, topic: str, records: int, build: Callable[[Any, list[int]], None],
               client: str = "confluent", **options: Any) -> float:
    """records/s of a direct-stream job from `start()` until `records` were
    counted; `build(stream, counted)` adds the job's outputs, which add the
    records they processed to `counted[0]`."""
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    stream = kafka_direct_stream(ssc, [topic], client=client, kafka_params={
        "bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"},
        **options)
    counted = [0]
    build(stream, counted)
    started = time.perf_counter()
    ssc.start()
    try:
        batches = 0
        while counted[0] < records:
            ssc.step(timeout=600)
            batches += 1
            if batches > 100_000:
                raise RuntimeError(f"{counted[0]} of {records} records after {batches} batches")
        elapsed = time.perf_counter() - started
    finally:
        ssc.stop(graceful=False)
    if counted[0] != records:
        print(f"  WARNING: counted {counted[0]:,} records, expected {records:,}")
    return records / elapsed


def count_job(stream: Any, counted: list[int]) -> None:
    stream.count().foreach_batch(lambda batch: counted.__setitem__(0, counted[0] + sum(batch.collect())))


def map_count_job(stream: Any, counted: list[int]) -> None:
    stream.map(lambda r: r.value).count().foreach_batch(
        lambda batch: counted.__setitem__(0, counted[0] + sum(batch.collect())))


def best(repeat: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(repeat))


# --------------------------------------------------------------------------- sinks


CREATE = "CREATE TABLE IF NOT EXISTS events (topic TEXT, part INTEGER, off INTEGER, value BLOB)"
INSERT = "INSERT INTO events (topic, part, off, value) VALUES (?, ?, ?, ?)"


def insert_rows(cursor: Any, batch: Any) -> int:
    rows = [(r.topic, r.partition, r.offset, r.value) for r in batch.collect()]
    cursor.executemany(INSERT, rows)
    return len(rows)


def sink_job(path: Path, exactly_once: bool, in_sink: list[float]) -> Callable[[Any, list[int]], None]:
    """The job of the sink section; `in_sink[0]` adds up the seconds spent in
    the sink itself: the batch is cached and read before the clock starts."""

    def timed(fn: Callable[[Any], None]) -> Callable[[Any], None]:
        def output(batch: Any) -> None:
            batch.count()  # reads the batch from Kafka into the cache
            started = time.perf_counter()
            try:
                fn(batch)
            finally:
                in_sink[0] += time.perf_counter() - started

        return output

    def build(stream: Any, counted: list[int]) -> None:
        stream = stream.cache()

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path)
            conn.execute(CREATE)
            conn.commit()
            return conn

        if exactly_once:
            def write(cursor: Any, batch: Any) -> None:
                counted[0] += insert_rows(cursor, batch)

            stream.foreach_batch(timed(SqlSink(connect, write, name="bench")), name="exactly-once")
        else:
            held: list[sqlite3.Connection] = []

            def at_least_once(batch: Any) -> None:
                if not held:
                    held.append(connect())
                conn = held[0]
                try:
                    n = insert_rows(conn.cursor(), batch)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                counted[0] += n

            stream.foreach_batch(timed(at_least_once), name="at-least-once")

    return build


def rows_in(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        conn.close()


# --------------------------------------------------------------------------- sections


def run_read(args: argparse.Namespace, bootstrap: str, topic: str) -> None:
    n = args.records
    print(f"== read: {n:,} records, best of {args.repeat} runs each; batches run back to back, no rate limit"
          + (f", at most {args.batch_records:,} records per batch" if args.batch_records else ""))
    limit = {"max_records_per_batch": args.batch_records} if args.batch_records else {}
    bare_loop(bootstrap, topic, n)  # warm-up: the first read of fresh segments is slower for whoever goes first
    bare = best(args.repeat, lambda: bare_loop(bootstrap, topic, n))
    figures = [("bare confluent-kafka consume loop", bare)]
    for client in args.clients:
        figures.append((f"direct stream, {client}: count()",
                        best(args.repeat, lambda: run_stream(bootstrap, topic, n, count_job, client, **limit))))
        figures.append((f"direct stream, {client}: map(value).count()",
                        best(args.repeat, lambda: run_stream(bootstrap, topic, n, map_count_job, client, **limit))))
        size = args.sink_batch_records
        figures.append((f"direct stream, {client}: count(), {size:,}-record batches",
                        best(args.repeat, lambda: run_stream(bootstrap, topic, n, count_job, client,
                                                             max_records_per_batch=size))))
    width = max(len(label) for label, _ in figures)
    for label, rate in figures:
        print(f"  {label:<{width}} {rate:>12,.0f} records/s  {rate / bare:5.2f}x bare")
    if "confluent" in args.clients:
        direct = dict(figures)
        for job in ("count()", "map(value).count()"):
            ratio = direct[f"direct stream, confluent: {job}"] / bare
            verdict = "meets" if ratio >= DIRECT_TARGET else "misses"
            print(f"  direct stream {job} / bare loop: {ratio:.2f}x   (DESIGN target >= {DIRECT_TARGET}x: {verdict} it)")


def run_sink(args: argparse.Namespace, bootstrap: str, topic: str) -> None:
    n = args.records
    size = args.sink_batch_records
    print(f"== sink: {n:,} records into SQLite (one row per record), {size:,} records per batch "
          f"({-(-n // size)} batches, one transaction each), best of {args.repeat} runs each")
    rates: dict[bool, list[float]] = {False: [], True: []}
    sink_rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeat):
        for exactly_once in (False, True):
            path = args.work_dir / f"sink-{uuid.uuid4().hex[:8]}.db"
            in_sink = [0.0]
            rates[exactly_once].append(run_stream(bootstrap, topic, n, sink_job(path, exactly_once, in_sink),
                                                  max_records_per_batch=size))
            sink_rates[exactly_once].append(n / in_sink[0])
            if rows_in(path) != n:
                print(f"  WARNING: {rows_in(path):,} rows written, expected {n:,}")
            path.unlink()
    for label, figures in (("whole job, start to last record", rates),
                           ("inside the sink (inserts, bookkeeping, commit; the batch already read)", sink_rates)):
        alo, eo = max(figures[False]), max(figures[True])
        slower = 1 - eo / alo
        verdict = "meets" if slower <= SINK_TARGET else "misses"
        print(f"  {label}:")
        print(f"    at-least-once (inserts, commit per batch):        {alo:>10,.0f} records/s")
        print(f"    exactly-once SqlSink (+ batch time and offsets):  {eo:>10,.0f} records/s")
        print(f"    exactly-once / at-least-once: {eo / alo:.2f}x, {slower:+.1%} slower   "
              f"(DESIGN target <= {SINK_TARGET:.0%} slower: {verdict} it)")


SECTIONS: dict[str, Callable[[argparse.Namespace, str, str], None]] = {
    "read": run_read,
    "sink": run_sink,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the topic (default 1000000)")
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--repeat", type=int, default=2, help="runs per figure, the best counts (default 2)")
    parser.add_argument("--clients", type=lambda s: [c for c in s.split(",") if c], default=["confluent",
                        "kafka-python"], help="direct-stream clients in the read section (default both)")
    parser.add_argument("--batch-records", type=int, default=None,
                        help="max_records_per_batch in the read section (default: none, one batch can be all)")
    parser.add_argument("--sink-batch-records", type=int, default=50_000,
                        help="records per batch in the sink section and the bounded read (default 50000)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka bootstrap (default: $KAFKA_BOOTSTRAP_SERVERS, else a broker started for the run)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the SQLite files go (default: a temporary directory under bench/out/)")
    args = parser.parse_args(argv)

    parent = args.dir if args.dir is not None else REPO / "bench" / "out"
    parent.mkdir(parents=True, exist_ok=True)
    args.work_dir = Path(tempfile.mkdtemp(prefix="kafka-direct-bench-", dir=parent)).resolve()
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    try:
        if not bootstrap:
            from ingest.testing.kafka import KafkaBroker

            print("starting a Kafka broker for the run...", flush=True)
            broker = KafkaBroker().start()
            bootstrap = broker.bootstrap
        print(f"Kafka at {bootstrap}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
        topic = fill_topic(bootstrap, args.records)
        for name in args.section or list(SECTIONS):
            print()
            SECTIONS[name](args, bootstrap, topic)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak resident memory of this process: {peak:,.0f} MiB")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
