"""What a new user of the direct Kafka stream is told, against a real broker: where a
stream without any stored position starts and what that skips, and a wrong bootstrap
address as one clear error, soon, instead of the clients' noise."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from direct import kafka_direct_stream
from ingest import ManualClock, StreamingContext
from ingest.testing.kafka import create_topic, produce

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parents[2]


def new_topic(bootstrap: str, records: int, partitions: int = 2) -> str:
    topic = f"first-hour-{uuid.uuid4().hex[:10]}"
    create_topic(bootstrap, topic, partitions)
    if records:
        produce(bootstrap, topic, [f"r{i}" for i in range(records)])
    return topic


def run_two_batches(bootstrap: str, topic: str, **params: Any) -> list[Any]:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    seen: list[Any] = []
    kafka_direct_stream(ssc, [topic], kafka_params={"bootstrap.servers": bootstrap, **params}) \
        .foreach_batch(lambda batch: seen.extend(batch.collect()))
    ssc.start()
    try:
        ssc.step(2)  # the notice is said once, not once a batch
    finally:
        ssc.stop()
    return seen


def reset_notices(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "direct.stream" and "auto.offset.reset=" in r.getMessage()]


def test_a_new_stream_at_latest_says_once_how_many_records_it_skips_and_how_to_read_them(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = new_topic(kafka_bootstrap, 30)
    caplog.set_level(logging.INFO)
    seen = run_two_batches(kafka_bootstrap, topic, **{"group.id": f"g-{uuid.uuid4().hex[:8]}"})
    assert seen == []
    [notice] = reset_notices(caplog)
    assert notice.levelno == logging.WARNING
    message = notice.getMessage()
    assert "2 partition(s)" in message and "auto.offset.reset='latest'" in message
    assert "skips the 30 record(s) already in them" in message
    assert 'kafka_params["auto.offset.reset"] = "earliest"' in message


def test_a_new_stream_at_earliest_says_where_it_starts_and_skips_nothing(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    topic = new_topic(kafka_bootstrap, 12)
    caplog.set_level(logging.INFO)
    seen = run_two_batches(kafka_bootstrap, topic, **{"group.id": f"g-{uuid.uuid4().hex[:8]}",
                                                     "auto.offset.reset": "earliest"})
    assert len(seen) == 12
    [notice] = reset_notices(caplog)
    assert notice.levelno == logging.INFO and "no record is skipped" in notice.getMessage()


def test_a_stream_that_starts_from_its_groups_offsets_says_nothing_about_the_reset(
        kafka_bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    from confluent_kafka import Consumer, TopicPartition

    topic = new_topic(kafka_bootstrap, 10, partitions=1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    consumer.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
    consumer.close()
    caplog.set_level(logging.INFO)
    seen = run_two_batches(kafka_bootstrap, topic, **{"group.id": group})
    assert [r.offset for r in seen] == list(range(4, 10))
    assert reset_notices(caplog) == []


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_wrong_bootstrap_address_is_one_clear_error_within_15_seconds(tmp_path: Path, client: str) -> None:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(f"""
        from direct import kafka_direct_stream
        from ingest import StreamingContext

        ssc = StreamingContext(batch_interval=1.0)
        kafka_direct_stream(ssc, ["events"], client={client!r},
                            kafka_params={{"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}}).pprint()
        ssc.start()
        ssc.await_termination()
    """))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "ingest.cli", "run", str(app)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    elapsed = time.monotonic() - started
    print(f"{client}: wrong bootstrap address to the error: {elapsed:.1f} s, "
          f"{len(result.stderr.splitlines())} stderr lines")
    assert result.returncode == 1
    assert elapsed < 15
    error = result.stderr.splitlines()[-1]
    assert error.startswith("ingest: SourceError: ")
    assert "no Kafka broker answered at 127.0.0.1:1 (kafka_params['bootstrap.servers']): tried for 10 s" in error
    assert "Check the address" in error
    # The clients' own lines come through ingest.kafka.client, each kind once; before,
    # librdkafka printed over 500 lines to stderr in 30 s.
    client_lines = [line for line in result.stderr.splitlines() if " ingest.kafka.client: " in line]
    assert len(client_lines) <= 5, result.stderr
    assert len(result.stderr.splitlines()) <= 10, result.stderr
    assert "%3|" not in result.stderr  # nothing printed by librdkafka itself


def test_a_kafka_receiver_with_a_wrong_address_says_so_once_within_seconds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from receivers import kafka_stream

    caplog.set_level(logging.WARNING)
    ssc = StreamingContext(batch_interval=0.5, stop_on_signal=False)
    kafka_stream(ssc, ["events"], {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"}).count() \
        .foreach_batch(lambda batch: None)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "receivers.kafka" and "no Kafka broker answers" in r.getMessage()]

    ssc.start()
    try:
        deadline = time.monotonic() + 15
        while not told() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # more failed attempts: still one message
    finally:
        ssc.stop(graceful=False)
    [message] = told()
    assert "at 127.0.0.1:1 (kafka_params['bootstrap.servers'])" in message and "check the address" in message
