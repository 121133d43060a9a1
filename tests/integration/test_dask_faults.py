"""Faults of partition tasks on a real Dask cluster of 3 worker processes: a
worker killed with SIGKILL in the middle of a batch, a task that raises on one
worker, and the report of which worker ran what."""

from __future__ import annotations

import logging
import operator
import os

import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402
from worker_faults import kill_this_worker, once_per_marker  # noqa: E402

from ingest import BatchFailedError, DaskExecutor, InlineExecutor, ManualClock, StreamingContext, StreamingListener  # noqa: E402

BATCHES = [list(range(b * 100, b * 100 + 60)) for b in range(4)]
PARTITIONS = 6


@pytest.fixture(scope="module")
def client():
    yield from three_worker_client()


class Completed(StreamingListener):
    def __init__(self) -> None:
        self.infos = []

    def on_batch_completed(self, event) -> None:
        self.infos.append(event.info)


def run(executor, task, *, max_batch_retries: int = 0) -> tuple[list, StreamingContext, Completed]:
    """The same job every time: `task` runs on every record in the partition
    tasks, then a keyed sum per batch."""
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False,
                           max_batch_retries=max_batch_retries)
    completed = Completed()
    ssc.add_listener(completed)
    out = []
    ssc.queue_stream(BATCHES, num_partitions=PARTITIONS).map(task).map(lambda x: (x % 7, x)).reduce_by_key(
        operator.add, num_partitions=3).foreach_batch(lambda b: out.append((b.time, sorted(b.collect()))))
    ssc.start()
    try:
        ssc.step(len(BATCHES), timeout=120)
    finally:
        ssc.stop(graceful=False)
    return out, ssc, completed


class CountingExecutor(InlineExecutor):
    """In-process, counting the tasks a batch runs as if on one worker."""

    def __init__(self) -> None:
        self.count = 0

    def map(self, fn, items, affinity=None):
        self.count += len(items)
        return super().map(fn, items)

    def take_placements(self) -> dict[str, int]:
        taken, self.count = self.count, 0
        return {"here": taken} if taken else {}


def identity(x: int) -> int:
    return x


def fail() -> None:
    raise RuntimeError("disk full on this worker")


def test_a_worker_killed_mid_batch_leaves_the_output_unchanged_and_the_batch_completes_at_once(client, tmp_path):
    expected, _, _ = run("inline", identity)
    marker = tmp_path / "killed"
    workers_before = set(client.scheduler_info()["workers"])
    out, ssc, completed = run(DaskExecutor(client), once_per_marker(marker, 215, kill_this_worker))
    assert out == expected
    pid, killed_address = marker.read_text().split()
    assert killed_address in workers_before
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # really dead
    # Dask ran the lost task again elsewhere: no batch needed a second attempt.
    assert [i.attempts for i in completed.infos] == [1, 1, 1, 1]
    # The lost task is counted once, on the worker that finished it.
    _, _, counted = run(CountingExecutor(), identity)
    assert [sum(i.workers.values()) for i in completed.infos] == [i.workers["here"] for i in counted.infos]
    client.wait_for_workers(3, timeout=60)  # the nanny restarts the killed worker for the next test


def test_a_task_that_raises_on_one_worker_is_retried_as_a_batch_and_the_log_names_the_worker(client, tmp_path,
                                                                                              caplog):
    expected, _, _ = run("inline", identity)
    marker = tmp_path / "failed"
    with caplog.at_level(logging.WARNING, logger="ingest"):
        out, ssc, completed = run(DaskExecutor(client), once_per_marker(marker, 130, fail), max_batch_retries=1)
    assert out == expected
    address = marker.read_text().split()[1]
    assert [i.attempts for i in completed.infos] == [1, 2, 1, 1]
    retry = [r.getMessage() for r in caplog.records if "attempt 1/2 failed" in r.getMessage()]
    assert len(retry) == 1
    assert f"failed on Dask worker {address}: RuntimeError: disk full on this worker" in retry[0]


def test_a_task_that_keeps_raising_fails_the_batch_with_an_error_naming_the_worker(client) -> None:
    def always(x: int) -> int:
        if x == 30:
            raise ValueError(f"bad record {x}")
        return x

    with pytest.raises(BatchFailedError) as failed:
        run(DaskExecutor(client), always, max_batch_retries=1)
    message = str(failed.value)
    assert "after 2 attempts" in message
    assert "TaskFailedError: partition task " in message
    assert "failed on Dask worker tcp://127.0.0.1:" in message and "ValueError: bad record 30" in message
    worker = failed.value.__cause__.worker
    assert worker in client.scheduler_info()["workers"]


def test_status_the_batch_line_and_the_batch_info_show_tasks_per_worker(client, caplog) -> None:
    _, _, counted = run(CountingExecutor(), identity)
    tasks_per_batch = [i.workers["here"] for i in counted.infos]
    with caplog.at_level(logging.INFO, logger="ingest"):
        _, ssc, completed = run(DaskExecutor(client), identity)
    workers = set(client.scheduler_info()["workers"])
    # Every task of every stage (map side, reduce side, collect) counted once, where it ran.
    assert [sum(i.workers.values()) for i in completed.infos] == tasks_per_batch
    for info in completed.infos:
        assert set(info.workers) <= workers
    assert ssc.status()["last_batch"]["workers"] == dict(completed.infos[-1].workers)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert len(lines) == len(BATCHES)
    assert all(", tasks on tcp://127.0.0.1:" in line for line in lines)


def test_in_process_executors_report_no_workers() -> None:
    _, ssc, completed = run("threads", identity)
    assert all(info.workers == {} for info in completed.infos)
    assert ssc.status()["last_batch"]["workers"] == {}
