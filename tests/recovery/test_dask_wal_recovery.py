"""Receivers with the write-ahead log on a Dask cluster of separate processes
(`dask scheduler`, three `dask worker`, the driver under `ingest run
--supervise --cluster`) through every fault the cluster can have, while
records keep flowing: the worker running the receiver killed with SIGKILL,
then another worker (replacements started), the scheduler killed and started
again at the same address (its workers close with it, see
test_dask_cluster_recovery.py: three are started again), the driver killed
with SIGKILL and started again by `--supervise` from its checkpoint.

Before each fault the sink is held (the job's gate) while half a phase's
chunks are handed out and at least half of those are logged: when the fault
strikes, blocks are in the log and in workers' memory but not processed, and
others are in flight; then the sink goes on and the other half is handed out.

The source is reliable: `chunk_source.ChunkServer` forgets a chunk only once
acknowledged, and `ChunkReceiver` acknowledges it only after `store_batch`
returned, that is once the driver logged it. The checkpoint (and so the log)
is a file:// URL, a directory every host sees at that path (all run on this
machine). The sink is an exactly-once SqlSink. So: every record the source
sent is in the sink, exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chunk_source import ChunkServer

from .dask_processes import DaskProcesses, dask_processes, stop_supervisor  # noqa: F401 - a fixture

pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

JOB = Path(__file__).parent / "jobs" / "dask_wal_job.py"
PER_CHUNK = 5
PER_HALF = 6  # chunks handed out before a fault, and again after it
HALVES = 9
CHUNKS = [list(range(c * PER_CHUNK, (c + 1) * PER_CHUNK)) for c in range(PER_HALF * HALVES)]


def received(db: Path) -> list[int]:
    if not db.exists():
        return []
    for _ in range(50):
        try:
            with sqlite3.connect(db, timeout=10) as conn:
                return [n for (n,) in conn.execute("SELECT n FROM out")]
        except sqlite3.OperationalError as exc:  # the table is not there yet, or a write holds the file
            if "no such table" in str(exc):
                return []
            time.sleep(0.1)
    raise AssertionError(f"cannot read {db}")


def wait_for_rows(db: Path, at_least: int, driver: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the supervisor exited"
        if len(received(db)) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"the sink has {len(received(db))} rows after {timeout} s, expected at least {at_least}")


def receiver_worker(cluster: DaskProcesses, timeout: float = 60) -> int:
    """The index in `cluster.workers` of the worker running the receiver now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = cluster.running_tasks("ingest-receiver-")
        if len(running) == 1:
            return cluster.worker_index(next(iter(running.values())))
        time.sleep(0.2)
    raise AssertionError(f"no single receiver task running within {timeout} s: {running}")


def test_with_the_wal_no_record_is_lost_through_worker_deaths_a_scheduler_restart_and_a_driver_kill(
        dask_processes: DaskProcesses, tmp_path: Path) -> None:
    server = ChunkServer(CHUNKS, hold_at=0)
    handed = [0]  # chunks the server may hand out so far

    def hand_out_half() -> None:
        handed[0] += PER_HALF
        server.hold(handed[0])

    def all_handed_out_reach_the_sink(timeout: float = 60) -> None:
        server.wait_acked(handed[0], timeout=timeout)
        wait_for_rows(db, handed[0] * PER_CHUNK, supervisor, timeout=timeout)

    def before_fault() -> None:
        """Hold the sink, hand out half a phase, wait until half of it is logged."""
        gate.touch()
        hand_out_half()
        server.wait_acked(handed[0] - PER_HALF // 2)

    def after_fault(timeout: float = 60) -> None:
        gate.unlink()
        hand_out_half()
        all_handed_out_reach_the_sink(timeout)

    cluster = dask_processes
    cluster.start_scheduler()
    for _ in range(3):
        cluster.start_worker()
    cluster.wait_for_workers(3)

    db, pidfile, gate = tmp_path / "out.db", tmp_path / "driver.pids", tmp_path / "gate"
    checkpoint = f"file://{tmp_path / 'ckpt'}"
    with open(tmp_path / "driver.log", "wb") as driver_log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "run", "--no-ui", "--supervise", "--restart-delay", "1",
             "--max-restarts", "5", "--cluster", cluster.address, str(JOB), str(server.port), checkpoint,
             str(db), str(pidfile), str(gate)],
            stdout=driver_log, stderr=subprocess.STDOUT, env=cluster.env, cwd=tmp_path)
        try:
            hand_out_half()
            all_handed_out_reach_the_sink()
            # After each fault every chunk so far must be in the sink, which
            # needs the cluster working again.
            for victim in ("the receiver's", "another"):
                hosting = receiver_worker(cluster)
                index = hosting if victim == "the receiver's" else next(
                    i for i, proc in enumerate(cluster.workers) if proc.poll() is None and i != hosting)
                before_fault()
                cluster.kill_worker(index)
                cluster.start_worker()
                after_fault()
                cluster.wait_for_workers(3)

            before_fault()  # the scheduler dies, its workers close: start three again
            cluster.kill_scheduler()
            cluster.start_scheduler()
            for _ in range(3):
                cluster.start_worker()
            cluster.wait_for_workers(3)
            after_fault(timeout=90)

            before_fault()  # the driver dies; the supervisor starts it again, the workers stay
            driver_pid = int(pidfile.read_text().split()[-1])
            starts = len(pidfile.read_text().split())
            os.kill(driver_pid, signal.SIGKILL)
            after_fault(timeout=90)
            assert len(pidfile.read_text().split()) == starts + 1
            time.sleep(1.5)  # a few more batches: nothing is written twice late
        finally:
            stop_supervisor(supervisor)
            server.close()
    log = (tmp_path / "driver.log").read_text(errors="replace")
    assert supervisor.returncode == 0, log[-4000:]
    assert handed[0] == len(CHUNKS)
    assert sorted(received(db)) == [n for chunk in CHUNKS for n in chunk], log[-4000:]
