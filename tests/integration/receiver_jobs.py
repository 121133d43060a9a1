"""Helpers of the Dask receiver tests: a receiver job on a cluster (ManualClock
stepped by the test, every batch collected), where its receiver runs, and
killing a worker with SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

from ingest import DaskExecutor, ManualClock, StreamingContext


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def kill_worker(client: Any, address: str) -> int:
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)
    return pid


def receiver_job(client: Any, receiver: Any, checkpoint: Path | None = None, **options: Any):
    """(context, stream, out): every record of every batch is appended to `out`."""
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False,
                           write_ahead_log=checkpoint is not None)
    if checkpoint is not None:
        ssc.checkpoint(str(checkpoint))
    stream = ssc.receiver_stream(receiver, **options)
    out: list[int] = []
    stream.foreach_batch(lambda b: out.extend(b.collect()))
    return ssc, stream, out


def worker_of(ssc: StreamingContext, stream: Any) -> str | None:
    return ssc.status()["receivers"].get(stream.name, {}).get("worker")
