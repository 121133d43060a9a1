"""A receiver on Dask when the scheduler is restarted: its workers close with
it and the run's queue, which lived in the scheduler, is gone. The driver
(here the test process) keeps running: the receiver is started again on a
worker of the new scheduler, and with the write-ahead log on the blocks that
died with the old workers are read from it, none lost and none twice.

The scheduler and workers are separate `dask` processes (`DaskProcesses`);
the source is the deterministic acknowledging `chunk_source`, held after a
known number of chunks so the scheduler dies at a known point."""

from __future__ import annotations

from pathlib import Path

import pytest

from chunk_source import ChunkReceiver, ChunkServer

from .dask_processes import DaskProcesses, dask_processes  # noqa: F401 - a fixture

pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

CHUNKS = [list(range(c * 10, c * 10 + 10)) for c in range(12)]
ALL = [n for chunk in CHUNKS for n in chunk]


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:  # noqa: ANN001
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def test_a_restarted_scheduler_gets_the_receiver_back_and_the_log_keeps_every_block(
        dask_processes: DaskProcesses, tmp_path: Path) -> None:
    from ingest import DaskExecutor, ManualClock, StreamingContext

    cluster = dask_processes
    cluster.start_scheduler()
    for _ in range(3):
        cluster.start_worker()
    cluster.wait_for_workers(3)

    server = ChunkServer(CHUNKS, hold_at=6)
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(cluster.address), stop_on_signal=False,
                           write_ahead_log=True, log_batches=False)
    ssc.checkpoint(str(tmp_path / "ckpt"))
    stream = ssc.receiver_stream(ChunkReceiver(server.port), name="chunks")
    out: list[int] = []
    stream.foreach_batch(lambda b: out.extend(b.collect()))
    try:
        ssc.start()
        server.wait_acked(6)  # 6 blocks logged, on workers that die with the scheduler
        wait_until(lambda: stream.records_received == 60, what="6 blocks tracked")
        first = ssc.status()["receivers"]["chunks"]["worker"]
        cluster.kill_scheduler()
        cluster.start_scheduler()
        for _ in range(3):
            cluster.start_worker()
        cluster.wait_for_workers(3)
        wait_until(lambda: ssc.status()["receivers"]["chunks"]["worker"] != first, what="the receiver restarted")
        server.release()
        server.wait_acked(len(CHUNKS))
        wait_until(lambda: stream.records_received == len(ALL), what="every block tracked")
        ssc.step(1, timeout=90)
        status = ssc.status()
    finally:
        ssc.stop(graceful=False)
        server.close()
    assert status["state"] == "active"  # the job did not stop
    assert sorted(out) == ALL  # the first 6 blocks came from the log, none twice
    assert status["receivers"]["chunks"]["restarts"] == 1
    assert status["inputs"]["chunks"]["records_lost"] == 0
