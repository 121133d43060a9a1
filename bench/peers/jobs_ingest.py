"""The five jobs written with ingest's direct Kafka stream (imported from this
checkout), batches run back to back (a ManualClock stepped as fast as they complete).

Usage: python jobs_ingest.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from confluent_kafka import Producer  # noqa: E402

import spec  # noqa: E402
from direct import kafka_direct_stream  # noqa: E402
from ingest import ManualClock, StreamingContext  # noqa: E402
from ingest.sinks import KafkaTransactionalSink, SqlSink  # noqa: E402


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str, workdir: Path) -> None:
    started = time.perf_counter()
    group = f"ingest-{uuid.uuid4().hex}"
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    deserializer = {"count": "bytes", "filter": "utf-8", "stateful": "bytes"}.get(job, "json")
    # Keys as str for the stateful job (its state is checkpointed as JSON); the
    # other jobs keep them as bytes, as the peers do.
    key_deserializer = "utf-8" if job == "stateful" else "bytes"
    stream = kafka_direct_stream(ssc, [topic], key_deserializer=key_deserializer, value_deserializer=deserializer,
                                 kafka_params={
        "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    done = [0]  # records (count, stateful) or kept records (filter, json, eos*) so far
    target = records if job in ("count", "stateful") else spec.expected_filtered(records)
    check: dict = {}

    def add(n: int) -> None:
        done[0] += n

    if job == "count":
        stream.count().foreach_batch(lambda b: add(sum(b.collect())))
    elif job == "filter":
        stream.filter(lambda r: spec.SUBSTRING in r.value).count().foreach_batch(lambda b: add(sum(b.collect())))
    elif job == "stateful":
        # A running count per key, emitted for the keys each batch touched (as
        # the peers emit per record): map_with_state, the operator that keeps
        # per-key state and emits only what changed; its checkpoint holds the
        # changed keys only (update_state_by_key would call its function for,
        # and emit, every key of the state on every batch).
        def count(key: str, _value: int, state) -> tuple[str, int]:
            n = state.get_option(0) + 1
            state.update(n)
            return key, n

        latest: dict = {}

        def seen(b) -> None:
            pairs = b.collect()
            latest.update(pairs)
            done[0] += len(pairs)

        ssc.checkpoint(str(workdir / "checkpoint"))
        stream.map(lambda r: (r.key, 1)).map_with_state(count).foreach_batch(seen)
    else:
        kept = stream.filter(lambda r: r.value["f"] == 1).map(lambda r: (r.key, spec.output_value(r.value)))
        if job == "json":
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})

            def produce(b) -> None:
                rows = b.collect()
                for key, value in rows:
                    producer.produce(out_topic, key=key, value=value)
                    producer.poll(0)
                producer.flush(60)
                add(len(rows))
            kept.foreach_batch(produce)
        elif job == "eos":
            sink = KafkaTransactionalSink(out_topic, producer_config={"bootstrap.servers": bootstrap},
                                          transactional_id=f"ingest-{uuid.uuid4().hex}", group_id=group)

            def write(b) -> None:
                sink(b)  # counted by the sink: counting the batch again would compute it twice
                done[0] = sink.records_written
            kept.foreach_batch(write)
        elif job == "eos_sql":
            db = workdir / "out.db"
            with sqlite3.connect(db) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS out (k BLOB, v BLOB)")

            def rows(cursor, b) -> None:
                batch_rows = b.collect()
                cursor.executemany("INSERT INTO out VALUES (?, ?)", batch_rows)
                add(len(batch_rows))
            kept.foreach_batch(SqlSink(lambda: sqlite3.connect(db), write=rows, name="bench"))
        else:
            raise SystemExit(f"unknown job {job!r}")
    ssc.start()
    try:
        while done[0] < target:
            ssc.step(timeout=600)
    finally:
        ssc.stop(graceful=False)
    seconds = time.perf_counter() - started
    if job == "eos_sql":
        with sqlite3.connect(workdir / "out.db") as conn:
            check["stored"] = conn.execute("SELECT COUNT(*) FROM out").fetchone()[0]
    if job == "stateful":
        spec.report(seconds, count=sum(latest.values()), keys=len(latest))
    elif job == "count":
        spec.report(seconds, count=done[0], **check)
    else:
        spec.report(seconds, kept=done[0], **check)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
