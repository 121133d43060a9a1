"""The reliable Kafka receiver with the write-ahead log, killed with SIGKILL
over and over while records keep arriving, loses nothing.

A job (jobs/kafka_receiver_job.py) reads a 2-partition topic through
`receivers.kafka_stream` with `write_ahead_log=True`, restarted each time with
`get_or_create`. It is killed at every point of the batch lifecycle, in the
middle of an output, and from outside at random moments, while the test
produces without pause. A last run drains what is left. Then, compared value
for value with what the producer had acknowledged:

- the at-least-once sink holds every record at least once (the duplicates,
  from batches re-run after a crash, are counted and reported);
- the sink deduplicated by (block id, index in block) holds every record
  exactly once: this is the guarantees table's "exactly-once with dedupe by
  block id" for reliable receivers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ingest.testing.kafka import create_topic

JOB = Path(__file__).parent / "jobs" / "kafka_receiver_job.py"
pytestmark = [pytest.mark.slow, pytest.mark.kafka]


class Producer:
    """Produces distinct values to the topic from a thread of its own, without
    pause, until stopped; `acked` is every value the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str, per_second: int = 600) -> None:
        import confluent_kafka as ck

        self.producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                                     "enable.idempotence": True})
        self.topic, self.per_second = topic, per_second
        self.acked: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-producer")

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked.append(msg.value().decode())

    def _run(self) -> None:
        n = 0
        rng = random.Random(3)
        while not self._stop.is_set():
            for _ in range(self.per_second // 20):
                value = f"v{n:07d}-" + "x" * rng.randint(0, 200)
                self.producer.produce(self.topic, value=value.encode(), key=f"k{n % 13}".encode(),
                                      on_delivery=self._delivered)
                n += 1
            self.producer.poll(0)
            self._stop.wait(0.05)

    def __enter__(self) -> "Producer":
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        assert self.producer.flush(30) == 0, "records left unacknowledged"
        assert not self.errors, self.errors[:5]
        return list(self.acked)

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(30)


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INGEST_CRASH_AT", "JOB_CRASH_DURING_OUTPUT", "JOB_KILL_IN_COMMIT")}
    env.update(extra)
    return env


def start_job(ckpt: Path, out: Path, bootstrap: str, topic: str, group: str, mode: str,
              **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(JOB), str(ckpt), str(out), bootstrap, topic, group, "--mode", mode],
        env=job_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def expect_killed(proc: subprocess.Popen[str], what: str, timeout: float = 60) -> None:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"{what}: the job was not killed within {timeout} s:\n{stderr[-3000:]}")
    assert proc.returncode == -signal.SIGKILL, f"{what}: exit {proc.returncode}:\n{stderr[-3000:]}"


def drain(ckpt: Path, out: Path, bootstrap: str, topic: str, group: str) -> None:
    proc = start_job(ckpt, out, bootstrap, topic, group, "drain")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.strip() == "done"


def read_lines(directory: Path) -> list:
    """Every whole JSON line of every file; a torn last line (a kill during the
    write) is not a record."""
    out = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        out.extend(json.loads(line) for line in whole.decode().splitlines())
    return out


def outputs(out: Path) -> tuple[list[str], dict[tuple[str, int], str]]:
    plain = read_lines(out / "plain")
    tagged: dict[tuple[str, int], str] = {}
    for block_id, index, value in read_lines(out / "tagged"):
        assert tagged.setdefault((block_id, index), value) == value, "one (block id, index), two values"
    return plain, tagged


LIFECYCLE_CRASHES = [
    "before_intent:12", "after_intent:15", "after_outputs:11", "after_commit:14",
    "after_intent:20", "after_outputs:18", "before_intent:25", "after_commit:22",
    "after_intent_written:16",
]


def test_sigkill_again_and_again_while_producing_loses_nothing_and_block_ids_dedupe_exactly(
        tmp_path: Path, kafka_bootstrap: str, record_property) -> None:
    topic, group = f"receiver-crash-{uuid.uuid4().hex[:8]}", f"crash-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    rng = random.Random(2024)
    kills = Counter()
    with Producer(kafka_bootstrap, topic) as producer:
        for point in LIFECYCLE_CRASHES:
            proc = start_job(ckpt, out, kafka_bootstrap, topic, group, "run", INGEST_CRASH_AT=point)
            expect_killed(proc, point)
            kills["lifecycle point"] += 1
        for nth in (3, 8, 5):
            proc = start_job(ckpt, out, kafka_bootstrap, topic, group, "run", JOB_CRASH_DURING_OUTPUT=str(nth))
            expect_killed(proc, f"during output write {nth}")
            kills["during an output"] += 1
        for _ in range(8):
            proc = start_job(ckpt, out, kafka_bootstrap, topic, group, "run")
            time.sleep(rng.uniform(1.0, 4.0))
            proc.send_signal(signal.SIGKILL)
            expect_killed(proc, "external SIGKILL")
            kills["from outside"] += 1
        produced = producer.stop()
    drain(ckpt, out, kafka_bootstrap, topic, group)

    plain, tagged = outputs(out)
    assert len(produced) > 5000, "the producer kept producing through the kills"
    counts = Counter(plain)
    missing = set(produced) - set(counts)
    assert not missing, f"{len(missing)} records lost, e.g. {sorted(missing)[:5]}"
    assert set(counts) == set(produced), "the output holds only what was produced"
    duplicates = sum(n - 1 for n in counts.values())
    record_property("kills", dict(kills))
    record_property("records", len(produced))
    record_property("duplicates_at_least_once_sink", duplicates)
    print(f"\n{sum(kills.values())} kills {dict(kills)}; {len(produced)} records produced; at-least-once sink: "
          f"{duplicates} duplicates ({len(counts)} distinct); block-id dedupe: {len(tagged)} records")
    assert sorted(tagged.values()) == sorted(produced), "deduplicated by block id: each record exactly once"


def test_a_kill_before_the_commit_of_a_block_already_processed_stores_nothing_twice(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    from ingest.testing.kafka import produce

    topic, group = f"receiver-commit-{uuid.uuid4().hex[:8]}", f"commit-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    values = [f"r{i:04d}" for i in range(300)]
    produce(kafka_bootstrap, topic, values)
    proc = start_job(ckpt, out, kafka_bootstrap, topic, group, "run", JOB_KILL_IN_COMMIT="1")
    expect_killed(proc, "kill inside the first commit")
    drain(ckpt, out, kafka_bootstrap, topic, group)
    _, tagged = outputs(out)
    assert Counter(tagged.values()) == Counter(values)
