"""Lag as /metrics and the batch log show it, against a real topic: a job
capped by max_rate_per_partition falls behind a topic that already holds more
records than it may read, and every figure must match the topic's offsets."""

from __future__ import annotations

import logging
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from direct import kafka_direct_stream
from ingest.metrics import render_metrics
from ingest.testing.kafka import create_topic, produce

pytestmark = pytest.mark.kafka


def lag_samples(ssc) -> dict[tuple[str, str, str], dict[str, float]]:
    body, _ = render_metrics(ssc)
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name in ("ingest_input_lag_records", "ingest_input_latest_offset", "ingest_input_until_offset"):
            for s in family.samples:
                key = (s.labels["input"], s.labels["topic"], s.labels["partition"])
                out.setdefault(key, {})[family.name] = s.value
    return out


def test_lag_per_partition_matches_the_topic_while_a_rate_limited_job_falls_behind(
        kafka_bootstrap, make_context, caplog):
    topic = f"lagging-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    produce(kafka_bootstrap, topic, [f"a{i}" for i in range(300)], partition=0)
    produce(kafka_bootstrap, topic, [f"b{i}" for i in range(120)], partition=1)

    ssc = make_context(batch_interval=1.0)
    stream = kafka_direct_stream(ssc, topics=[topic], max_rate_per_partition=50, commit_offsets=False,
                                 kafka_params={"bootstrap.servers": kafka_bootstrap,
                                               "auto.offset.reset": "earliest"}, name="events")
    read: list[int] = []
    stream.foreach_batch(lambda batch: read.append(len(batch.collect())))
    ssc.start()
    with caplog.at_level(logging.INFO, logger="ingest.batches"):
        ssc.step(2)

    # Two batches of at most 50 records per partition: 100 read of each, the rest is lag.
    assert read == [100, 100]
    samples = lag_samples(ssc)
    assert samples == {
        ("events", topic, "0"): {"ingest_input_lag_records": 200, "ingest_input_latest_offset": 300,
                                 "ingest_input_until_offset": 100},
        ("events", topic, "1"): {"ingest_input_lag_records": 20, "ingest_input_latest_offset": 120,
                                 "ingest_input_until_offset": 100},
    }
    assert [(p.topic, p.partition, p.until_offset, p.latest_offset, p.lag) for p in stream.lag()] == [
        (topic, 0, 100, 300, 200), (topic, 1, 100, 120, 20)]
    lines = [r.getMessage() for r in caplog.records if r.name == "ingest.batches"]
    assert "events=100 lag 320" in lines[0] and "events=100 lag 220" in lines[1]

    produce(kafka_bootstrap, topic, [f"a{i}" for i in range(300, 310)], partition=0)
    ssc.step(1)
    samples = lag_samples(ssc)
    assert samples[("events", topic, "0")]["ingest_input_lag_records"] == 310 - 150
    assert samples[("events", topic, "1")]["ingest_input_lag_records"] == 0
    assert read == [100, 100, 70]


def test_a_stream_that_reads_less_than_arrives_gets_one_lag_warning(kafka_bootstrap, make_context, caplog):
    topic = f"growing-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, partitions=1)
    ssc = make_context(batch_interval=1.0)
    stream = kafka_direct_stream(ssc, topics=[topic], max_rate_per_partition=20, commit_offsets=False,
                                 kafka_params={"bootstrap.servers": kafka_bootstrap,
                                               "auto.offset.reset": "earliest"}, name="events")
    stream.foreach_batch(lambda batch: batch.collect())
    ssc.start()
    with caplog.at_level(logging.INFO, logger="ingest.lag"):
        for n in range(8):  # 50 records arrive per batch, 20 are read: the lag grows by 30 each time
            produce(kafka_bootstrap, topic, [f"r{n}-{i}" for i in range(50)])
            ssc.step(1)
    warnings = [r.getMessage() for r in caplog.records if r.name == "ingest.lag"]
    assert len(warnings) == 1, warnings
    # Batch 1 sees lag 30, and 5 growing batches later (the 6th) lag 180.
    assert warnings[0].startswith("input 'events' is falling behind its source: lag 180 record(s)")
    assert "grew in each of the last 5 batches, from 30 (+30 per batch)" in warnings[0]
    assert sum(p.lag for p in stream.lag()) == 8 * 50 - 8 * 20
