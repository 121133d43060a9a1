"""The direct stream resumes from the next offsets stored with the newest
commit: an unreadable or deleted intent of the newest committed batch no longer
makes it read that batch's records a second time (real broker)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from direct import kafka_direct_stream
from ingest import ManualClock, StreamingContext
from ingest.checkpoint import CheckpointLog
from ingest.testing.kafka import create_topic, produce
from offsets import KafkaOffsets

pytestmark = pytest.mark.kafka


def name(t: int) -> str:
    return f"{t:020d}"


def run(directory: Path, bootstrap: str, topic: str, steps: int, values: list[bytes]) -> None:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory))
    stream = kafka_direct_stream(ssc, [topic], name="events", commit_offsets=False,
                                 kafka_params={"bootstrap.servers": bootstrap, "auto.offset.reset": "earliest"})
    stream.foreach_batch(lambda b: values.extend(r.value for r in b.collect()))
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [flip_a_bit, Path.unlink])
def test_an_unreadable_newest_committed_intent_does_not_make_the_direct_stream_read_again(
        kafka_bootstrap: str, tmp_path: Path, damage: Any) -> None:
    topic = f"resume-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, 1)
    values: list[bytes] = []
    produce(kafka_bootstrap, topic, [f"a{i}" for i in range(100)])
    run(tmp_path, kafka_bootstrap, topic, 1, values)  # batch 1000 reads 0..100
    produce(kafka_bootstrap, topic, [f"b{i}" for i in range(29)])
    run(tmp_path, kafka_bootstrap, topic, 1, values)  # batch 2000 reads 100..129
    assert CheckpointLog(str(tmp_path)).read_commit(2000).next_positions == {"events": KafkaOffsets({(topic, 0): 129})}

    damage(tmp_path / "offsets" / name(2000))
    produce(kafka_bootstrap, topic, ["c0"])
    run(tmp_path, kafka_bootstrap, topic, 1, values)
    assert values == [f"a{i}".encode() for i in range(100)] + [f"b{i}".encode() for i in range(29)] + [b"c0"]
