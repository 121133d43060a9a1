"""A job on a Dask cluster of separate processes (`dask scheduler`, `dask
worker`, the driver under `ingest run --supervise --cluster`) through every
fault the cluster can have: two workers killed with SIGKILL one after the
other (replacements started), the scheduler killed and restarted at the same
address, the driver killed with SIGKILL and restarted from its checkpoint
while the workers keep running. The direct Kafka stream with an exactly-once
SqlSink and a running count per key (state partitions on the workers): every
record is in the sink exactly once, and each key's counts are 1..n.

What `distributed` does when its scheduler restarts (checked here): workers
do not reconnect. A worker that loses its scheduler closes, and its nanny
with it, so an operator (here the test) starts workers again. The driver's
client reconnects by itself (within its 30 s timeout); the batch whose tasks
were lost with the scheduler fails, is retried (`max_batch_retries`), and if
the retries run out before workers are back, the driver exits with the
batch's error and `--supervise` starts it again from the checkpoint (a driver
that then cannot reach the scheduler exits with status 1, not 2, so the
supervisor keeps trying). Which of the two happened depends on where in a
batch the scheduler died; the test asserts the outcome, not the path.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from ingest.testing.kafka import create_topic, produce

from .dask_processes import DaskProcesses, dask_processes, stop_supervisor  # noqa: F401 - a fixture

pytest.importorskip("distributed")

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

JOB = Path(__file__).parent / "jobs" / "dask_cluster_job.py"
KEYS = 13
PER_HALF = 120


def rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    for _ in range(50):
        try:
            with sqlite3.connect(db, timeout=10) as conn:
                return conn.execute("SELECT part, off, value, k, n FROM out").fetchall()
        except sqlite3.OperationalError as exc:  # the table is not there yet, or a write holds the file
            if "no such table" in str(exc):
                return []
            time.sleep(0.1)
    raise AssertionError(f"cannot read {db}")


def wait_for_rows(db: Path, at_least: int, driver: subprocess.Popen[bytes], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the supervisor exited"
        n = len(rows(db))
        if n >= at_least:
            return n
        time.sleep(0.2)
    raise AssertionError(f"the sink has {len(rows(db))} rows after {timeout} s, expected at least {at_least}")


def test_every_record_once_through_worker_deaths_a_scheduler_restart_and_a_driver_kill(
        kafka_bootstrap: str, dask_processes: DaskProcesses, tmp_path: Path) -> None:
    topic = f"dask-eos-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, partitions=4)
    produced = [0]

    def produce_half() -> None:
        start = produced[0]
        produce(kafka_bootstrap, topic, [(f"k{i % KEYS}", f"v{i}") for i in range(start, start + PER_HALF)])
        produced[0] += PER_HALF

    cluster = dask_processes
    cluster.start_scheduler()
    for _ in range(3):
        cluster.start_worker()
    cluster.wait_for_workers(3)

    db, pidfile = tmp_path / "out.db", tmp_path / "driver.pids"
    produce_half()
    with open(tmp_path / "driver.log", "wb") as driver_log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "run", "--no-ui", "--supervise", "--restart-delay", "1",
             "--max-restarts", "5", "--cluster", cluster.address, str(JOB), kafka_bootstrap, topic,
             str(tmp_path / "ckpt"), str(db), str(pidfile)],
            stdout=driver_log, stderr=subprocess.STDOUT, env=cluster.env, cwd=tmp_path)
        try:
            wait_for_rows(db, produced[0], supervisor)
            # Each fault: half a phase's records produced before it (work in
            # flight when it strikes), half after; then every record so far
            # must reach the sink, which needs the cluster working again.
            for victim in (0, 1):  # two workers die one after the other; each gets a replacement
                produce_half()
                cluster.kill_worker(victim)
                cluster.start_worker()
                produce_half()
                wait_for_rows(db, produced[0], supervisor)
                cluster.wait_for_workers(3)

            produce_half()  # the scheduler dies; its workers close (see the module's note): start three again
            cluster.kill_scheduler()
            cluster.start_scheduler()
            for _ in range(3):
                cluster.start_worker()
            cluster.wait_for_workers(3)
            produce_half()
            wait_for_rows(db, produced[0], supervisor, timeout=90)

            produce_half()  # the driver dies; the supervisor starts it again, the workers stay
            driver_pid = int(pidfile.read_text().split()[-1])
            starts = len(pidfile.read_text().split())
            os.kill(driver_pid, signal.SIGKILL)
            produce_half()
            wait_for_rows(db, produced[0], supervisor, timeout=90)
            assert len(pidfile.read_text().split()) == starts + 1
            time.sleep(1.5)  # a few more batches: nothing is written twice late
        finally:
            stop_supervisor(supervisor)
    log = (tmp_path / "driver.log").read_text(errors="replace")
    assert supervisor.returncode == 0, log[-4000:]

    out = rows(db)
    assert sorted(value for _, _, value, _, _ in out) == sorted(f"v{i}" for i in range(produced[0]))
    assert len({(part, off) for part, off, _, _, _ in out}) == produced[0]
    counts = defaultdict(list)
    for _, _, value, key, n in out:
        counts[key].append(n)
    assert {key: sorted(ns) for key, ns in counts.items()} == {
        f"k{k}": list(range(1, produced[0] // KEYS + (k < produced[0] % KEYS) + 1)) for k in range(KEYS)}
