"""Produces the benchmark topic once (see spec.py) and counts an output topic.

Usage: python produce.py fill BOOTSTRAP TOPIC RECORDS
       python produce.py count BOOTSTRAP TOPIC      (committed records, read_committed)
       python produce.py create BOOTSTRAP TOPIC PARTITIONS"""

from __future__ import annotations

import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import spec


def create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # metadata reaches every client a little later
        if topic in admin.list_topics(timeout=5).topics:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} not visible after 30 s")


def fill(bootstrap: str, topic: str, records: int) -> None:
    create(bootstrap, topic, spec.PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 50,
                         "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000})
    failed: list = []
    for i in range(records):
        while True:
            try:
                producer.produce(topic, key=spec.key_of(i), value=spec.value_of(i), partition=i % spec.PARTITIONS,
                                 on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120) or failed:
        raise RuntimeError(f"producing {topic} failed: {failed[:3]}")


def count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    ends, assignment = {}, []
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
        if high > low:
            ends[p] = high
            assignment.append(TopicPartition(topic, p, low))
    consumer.assign(assignment)
    seen, deadline = 0, time.monotonic() + 120
    while ends and time.monotonic() < deadline:
        for msg in consumer.consume(10_000, 1.0):
            if msg.error() is None:
                seen += 1
        positions = consumer.position([TopicPartition(topic, p) for p in list(ends)])
        for tp in positions:
            if tp.partition in ends and tp.offset >= ends[tp.partition]:
                ends.pop(tp.partition)
    consumer.close()
    return seen


if __name__ == "__main__":
    command, bootstrap, topic = sys.argv[1:4]
    if command == "fill":
        fill(bootstrap, topic, int(sys.argv[4]))
    elif command == "create":
        create(bootstrap, topic, int(sys.argv[4]))
    else:
        print(count(bootstrap, topic))
