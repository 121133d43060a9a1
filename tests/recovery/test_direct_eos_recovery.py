"""The direct Kafka stream with an exactly-once sink, killed with SIGKILL at
chosen points and at random moments, restarted with `get_or_create`: the sink
ends with every input record exactly once (full contents compared)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest.testing.kafka import create_topic, produce, read_to_end

JOB = Path(__file__).parent / "jobs" / "direct_job.py"
pytestmark = [pytest.mark.slow, pytest.mark.kafka]

CRASHES = [("after_intent:2", None), (None, 3), ("after_outputs:2", None), ("after_commit:2", None),
           ("before_intent:3", None), (None, 1), ("after_outputs:1", None)]
N = 1200


def run(cmd: list[str], crash_at: str | None = None, crash_during: int | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INGEST_CRASH_AT", "JOB_CRASH_DURING_OUTPUT")}
    if crash_at:
        env["INGEST_CRASH_AT"] = crash_at
    if crash_during:
        env["JOB_CRASH_DURING_OUTPUT"] = str(crash_during)
    return subprocess.run([sys.executable, str(JOB), *cmd], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def input_topic(kafka_bootstrap: str) -> str:
    topic = f"eos-in-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, partitions=4)
    produce(kafka_bootstrap, topic, [(f"k{i % 17}", f"value-{i}") for i in range(N)])
    return topic


def expected() -> list[str]:
    return sorted(f"VALUE-{i}" for i in range(N))


def crash_then_finish(cmd: list[str], random_kills: int = 2) -> None:
    for crash_at, during in CRASHES:
        result = run(cmd, crash_at, during)
        assert result.returncode == -signal.SIGKILL, (crash_at, during, result.stdout[-2000:], result.stderr[-3000:])
    rng = random.Random(11)
    for _ in range(random_kills):
        env = {k: v for k, v in os.environ.items() if k not in ("INGEST_CRASH_AT", "JOB_CRASH_DURING_OUTPUT")}
        proc = subprocess.Popen([sys.executable, str(JOB), *cmd], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = run(cmd)
    assert final.returncode == 0, final.stderr[-3000:]


def test_sql_sink_gets_every_record_exactly_once_across_crashes(kafka_bootstrap: str, input_topic: str,
                                                                 tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    crash_then_finish([kafka_bootstrap, input_topic, str(tmp_path / "ckpt"), "--sink", "sql", "--db", str(db)])
    with sqlite3.connect(db) as conn:
        values = sorted(v for (v,) in conn.execute("SELECT value FROM out"))
        offsets = dict(((t, p), o) for t, p, o in conn.execute(
            "SELECT topic, part, next_offset FROM ingest_offsets WHERE sink = 'upper'"))
    assert values == expected()
    assert sum(offsets.values()) == N


def test_sql_sink_offsets_restart_the_stream_without_a_checkpoint(kafka_bootstrap: str, input_topic: str,
                                                                   tmp_path: Path) -> None:
    """The checkpoint is lost between runs: the stream starts from the offsets in the database."""
    db = tmp_path / "out.db"
    first = run([kafka_bootstrap, input_topic, str(tmp_path / "ckpt1"), "--sink", "sql", "--db", str(db)],
                crash_at="after_commit:4")
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    final = run([kafka_bootstrap, input_topic, str(tmp_path / "ckpt2"), "--sink", "sql", "--db", str(db)])
    assert final.returncode == 0, final.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        values = sorted(v for (v,) in conn.execute("SELECT value FROM out"))
    assert values == expected()


def test_kafka_transactional_sink_gets_every_record_exactly_once_across_crashes(
        kafka_bootstrap: str, input_topic: str, tmp_path: Path) -> None:
    out_topic = f"eos-out-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, out_topic, partitions=2)
    crash_then_finish([kafka_bootstrap, input_topic, str(tmp_path / "ckpt"), "--sink", "kafka",
                       "--out-topic", out_topic])
    records = read_to_end(kafka_bootstrap, out_topic, isolation_level="read_committed", timeout=60)
    assert sorted(r.value.decode() for r in records) == expected()
    everything = read_to_end(kafka_bootstrap, out_topic, isolation_level="read_uncommitted", timeout=60)
    assert any(r.value.startswith(b"ZOMBIE-") for r in everything), "the killed transactions were really written"
