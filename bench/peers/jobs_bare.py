"""The ceiling: each job as a plain confluent-kafka consume loop, no framework.

Usage: python jobs_bare.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition

import spec


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str) -> None:
    started = time.perf_counter()
    group = f"bare-{uuid.uuid4().hex}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    lows = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[0] for p in range(spec.PARTITIONS)]
    consumer.assign([TopicPartition(topic, p, low) for p, low in enumerate(lows)])
    producer = None
    if job in ("json", "eos"):
        config = {"bootstrap.servers": bootstrap, "linger.ms": 20}
        if job == "eos":
            config["transactional.id"] = f"bare-{uuid.uuid4().hex}"
        producer = Producer(config)
        if job == "eos":
            producer.init_transactions()
    seen = kept = 0
    counts: dict[bytes, int] = {}
    emitted: list[tuple[bytes, int]] = []
    latest: dict[bytes, int] = {}  # what a downstream table would hold: the last count emitted per key
    while seen < records:
        msgs = consumer.consume(min(10_000, records - seen), 1.0)
        if job == "eos" and msgs:
            producer.begin_transaction()
        for msg in msgs:
            if msg.error() is not None:
                continue
            seen += 1
            if job == "filter":
                if spec.SUBSTRING in msg.value().decode():
                    kept += 1
            elif job in ("json", "eos"):
                parsed = json.loads(msg.value())
                if parsed["f"] == 1:
                    kept += 1
                    producer.produce(out_topic, key=msg.key(), value=spec.output_value(parsed))
                    producer.poll(0)
            elif job == "stateful":
                key = msg.key()
                n = counts[key] = counts.get(key, 0) + 1
                emitted.append((key, n))
        if job == "stateful":  # the job's output: each record's running count, emitted per fetch
            latest.update(emitted)
            emitted.clear()
        if job == "eos" and msgs:
            ends = {m.partition(): m.offset() + 1 for m in msgs if m.error() is None}
            positions = [TopicPartition(topic, p, end) for p, end in ends.items()]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
            producer.commit_transaction()
    if producer is not None:
        producer.flush(60)
    consumer.close()
    seconds = time.perf_counter() - started
    if job == "count":
        spec.report(seconds, count=seen)
    elif job in ("filter", "json", "eos"):
        spec.report(seconds, count=seen, kept=kept)
    elif job == "stateful":
        spec.report(seconds, count=sum(latest.values()), keys=len(latest))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
