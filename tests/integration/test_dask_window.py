"""Windows kept on the workers of a real Dask cluster (3 worker processes).
`window()` and `reduce_by_key_and_window` with or without an inverse function
(and so `reduce_by_window`, `count_by_window`, `count_by_value_and_window`)
keep their windows as keyed state partitions on the workers: every batch's
output equals the inline executor's, the window is not shipped to the tasks,
a worker killed with SIGKILL between batches or in the middle of a window
task loses nothing (its partitions come back from the last commit; a worker
dying while a task reads `window()`'s records fails that attempt, and the
retry succeeds), and a driver restarted from the checkpoint gives the
uninterrupted run's windows."""

from __future__ import annotations

import logging
import operator
import os
import random
import signal
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402

from ingest import DaskExecutor, ManualClock, StreamingContext  # noqa: E402
from ingest.state_store import ResidentTask, held_partitions  # noqa: E402
from ingest.window import ReducedWindowedDStream, WindowedDStream  # noqa: E402

PARTITIONS = 4
KILL_MARK = -4000  # a value that makes the killing reduce function kill its worker (twice in one batch)


@pytest.fixture(scope="module")
def client():
    yield from three_worker_client()


def batches_of(seed: int, n_batches: int = 9, keys: int = 20, per_batch: int = 30) -> list[list[tuple[str, int]]]:
    rng = random.Random(seed)
    return [[(f"k{rng.randrange(keys)}", rng.randrange(100)) for _ in range(rng.randrange(per_batch))]
            for _ in range(n_batches)]


def is_even(kv: tuple[str, int]) -> bool:
    return kv[1] % 2 == 0


def key_of(kv: tuple[str, int]) -> str:
    return kv[0]


def value_of(kv: tuple[str, int]) -> int:
    return kv[1]


def build_job(executor: Any, batches: list, checkpoint: Path, out: dict, *, reduce_fn=operator.add,
              max_batch_retries: int = 0):
    """Every windowed operator, over several windows and slides; each
    output's records per batch, sorted. Returns a factory for get_or_create."""
    def build() -> StreamingContext:
        ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False,
                               log_batches=False, max_batch_retries=max_batch_retries)
        ssc.checkpoint(str(checkpoint), full_snapshot_every=3)
        pairs = ssc.queue_stream(batches, num_partitions=3, name="pairs")

        def keep(stream, name):
            stream.foreach_batch(lambda b: out.setdefault(b.time, {}).__setitem__(name, sorted(map(repr, b.collect()))))

        for window, slide in [(3.0, 1.0), (4.0, 2.0), (2.0, 2.0)]:
            keep(pairs.reduce_by_key_and_window(reduce_fn, operator.sub, window, slide, num_partitions=PARTITIONS,
                                                name=f"sums-{window:.0f}-{slide:.0f}"), f"sums {window}/{slide}")
        keep(pairs.reduce_by_key_and_window(operator.add, operator.sub, 3.0, filter_fn=is_even,
                                            num_partitions=PARTITIONS, name="even-sums"), "even sums")
        keep(pairs.map(key_of).count_by_value_and_window(5.0, 1.0, num_partitions=PARTITIONS, name="key-counts"),
             "key counts")
        keep(pairs.count_by_window(3.0, 1.0, name="count"), "count")
        keep(pairs.map(value_of).reduce_by_window(operator.add, operator.sub, 4.0, 2.0, name="total"), "total")
        # Without an inverse function: each slide reduces the in-window batch values.
        keep(pairs.reduce_by_key_and_window(operator.add, None, 3.0, 1.0, num_partitions=PARTITIONS,
                                            name="plain-sums"), "plain sums")
        keep(pairs.map(value_of).reduce_by_window(max, None, 4.0, 2.0, name="maximum"), "maximum")
        # window() itself: its slices on the workers, read there by the tasks that follow.
        keep(pairs.window(2.0, 1.0, name="records").map(key_of), "records")
        keep(pairs.window(4.0, 2.0, name="grouped").group_by_key(3).map_values(sorted), "grouped")
        return ssc
    return build


def run_job(executor: Any, batches: list, checkpoint: Path, *, reduce_fn=operator.add, max_batch_retries: int = 0,
            restart_after: int | None = None, extra_steps: int = 4) -> tuple[list[dict], StreamingContext]:
    """All batches and `extra_steps` empty ones after them (the windows
    empty); with `restart_after`, the driver stops after that many batches
    and a new one goes on from the checkpoint."""
    out: dict[int, dict[str, list[str]]] = {}
    steps = len(batches) + extra_steps
    ssc = None
    for n in ([restart_after, steps - restart_after] if restart_after else [steps]):
        ssc = StreamingContext.get_or_create(str(checkpoint), build_job(executor, batches, checkpoint, out,
                                                                       reduce_fn=reduce_fn,
                                                                       max_batch_retries=max_batch_retries))
        ssc.start()
        try:
            ssc.step(n, timeout=120)
        finally:
            ssc.stop(graceful=False)
    return [out[t] for t in sorted(out)], ssc


def windowed_ops(ssc: StreamingContext) -> list[ReducedWindowedDStream | WindowedDStream]:
    return [s for s in ssc._graph.stateful if isinstance(s, (ReducedWindowedDStream, WindowedDStream))]


@pytest.mark.parametrize("seed", [1, 2])
def test_windows_on_the_workers_give_the_inline_executors_output_batch_by_batch(client, tmp_path, seed) -> None:
    batches = batches_of(seed)
    inline, _ = run_job("inline", batches, tmp_path / "inline")
    on_cluster, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster")
    assert [sorted(name for name in b if b[name] != inline[i].get(name)) for i, b in enumerate(on_cluster)] == [
        [] for _ in inline]
    assert on_cluster == inline
    assert len(inline) == len(batches) + 4
    assert inline[-1]["count"] == ["0"]  # the windows emptied in the last batches
    ops = windowed_ops(ssc)
    assert len(ops) == 11
    for op in ops:
        assert op._resident is True
        assert op.resident_reloads == 0
        assert op._committed is None  # the driver kept no copy: the checkpoint and the workers hold it


def test_the_workers_hold_the_window_partitions_spread_over_every_worker(client, tmp_path) -> None:
    batches = batches_of(4)
    out: dict = {}
    ssc = StreamingContext.get_or_create(str(tmp_path / "cluster"),
                                         build_job(DaskExecutor(client), batches, tmp_path / "cluster", out))
    ssc.start()
    try:
        ssc.step(4, timeout=120)
        ops = windowed_ops(ssc)
        tokens = [op._token for op in ops]
        where = client.run(held_partitions, tokens)
        # What the workers hold is what the checkpoint's last commit holds.
        for op in ops:
            full, deltas = ssc._log.committed_state(op.state_id)
            assert sorted(map(repr, op.state_items())) == sorted(
                map(repr, (kv for part in op._parts_from(full, deltas) for kv in part.items())))
            assert op.state_size() == len(op.state_items())
    finally:
        ssc.stop(graceful=False)
    owners: dict[tuple, str] = {}
    for worker, parts in where.items():
        for part in map(tuple, parts):
            assert part not in owners, f"{part} on two workers"
            owners[part] = worker
    assert len(owners) == sum(op.num_partitions for op in ops)
    assert len(set(owners.values())) == 3
    assert all(parts == [] for parts in client.run(held_partitions, tokens).values())  # freed at stop


class CountingExecutor(DaskExecutor):
    """A DaskExecutor that measures what each window task carries to its
    worker (the pickled task: its records, and state when state is shipped)."""

    def __init__(self, client: Any, *, keep_on_workers: bool) -> None:
        super().__init__(client)
        self.keeps_state = keep_on_workers
        self.window_task_bytes: list[int] = []
        self.seeded: list[int] = []  # batch times of resident tasks that carried their base state

    def map(self, fn, items, affinity=None):
        for item in items:
            if isinstance(item, ResidentTask):
                self.window_task_bytes.append(len(cloudpickle.dumps(item)))
                if item.seed is not None:
                    self.seeded.append(item.time_ms)
            elif isinstance(item, tuple) and len(item) == 4 and isinstance(item[1], dict):
                self.window_task_bytes.append(len(cloudpickle.dumps(item)))  # (partition, state, records, time)
        return super().map(fn, items, affinity)


def big_window_job(executor: CountingExecutor, checkpoint: Path, batches: list) -> StreamingContext:
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(checkpoint))
    ssc.queue_stream(batches, num_partitions=3).reduce_by_key_and_window(
        operator.add, operator.sub, 10.0, num_partitions=PARTITIONS, name="sums").foreach_batch(lambda b: None)
    return ssc


def test_the_window_is_not_shipped_to_the_tasks_each_batch(client, tmp_path) -> None:
    # 3,000 keys in a 10-batch window; each batch touches 100 of them.
    rng = random.Random(8)
    batches = [[(f"key-{i}", 1) for i in range(3_000)]] + [
        [(f"key-{rng.randrange(3_000)}", 1) for _ in range(100)] for _ in range(8)]
    bytes_per_batch = {}
    for keep in (True, False):
        executor = CountingExecutor(client, keep_on_workers=keep)
        ssc = big_window_job(executor, tmp_path / f"keep-{keep}", batches)
        ssc.start()
        try:
            ssc.step(1, timeout=120)  # the first batch brings every key
            executor.window_task_bytes.clear()
            ssc.step(len(batches) - 1, timeout=120)
        finally:
            ssc.stop(graceful=False)
        bytes_per_batch[keep] = sum(executor.window_task_bytes) / (len(batches) - 1)
        if keep:
            assert set(executor.seeded) == {1000}  # only the first batch's tasks carried a (empty) base
    # Shipped, every task carries its partition of the window (3,000 keys
    # with their batch values); on the workers, only the batch's 100 records.
    assert bytes_per_batch[False] > 50_000  # about 75 kB measured
    assert bytes_per_batch[True] < bytes_per_batch[False] / 10  # about 2.2 kB measured


class CountingAllExecutor(DaskExecutor):
    """A DaskExecutor that measures every task it sends (pickled)."""

    def __init__(self, client: Any, *, keep_on_workers: bool) -> None:
        super().__init__(client)
        self.keeps_state = keep_on_workers
        self.task_bytes = 0

    def map(self, fn, items, affinity=None):
        self.task_bytes += sum(len(cloudpickle.dumps(item)) for item in items)
        return super().map(fn, items, affinity)


def test_the_records_of_window_are_not_shipped_to_the_tasks_each_batch(client, tmp_path) -> None:
    # 3,000 records in a 10-batch window; each batch brings 100. An output
    # counts the window's records every batch (the count comes back, not the records).
    batches = [[f"first-{i}" for i in range(3_000)]] + [[f"r-{b}-{i}" for i in range(100)] for b in range(8)]
    bytes_per_batch, counts = {}, {}
    for keep in (True, False):
        executor = CountingAllExecutor(client, keep_on_workers=keep)
        ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False, log_batches=False)
        ssc.checkpoint(str(tmp_path / f"keep-{keep}"))
        seen = counts.setdefault(keep, [])
        ssc.queue_stream(batches, num_partitions=3).window(10.0, name="records").foreach_batch(
            lambda b, seen=seen: seen.append(b.count()))
        ssc.start()
        try:
            ssc.step(1, timeout=120)
            executor.task_bytes = 0
            ssc.step(len(batches) - 1, timeout=120)
        finally:
            ssc.stop(graceful=False)
        bytes_per_batch[keep] = executor.task_bytes / (len(batches) - 1)
    assert counts[True] == counts[False] == [3_000 + 100 * b for b in range(len(batches))]
    # Shipped, the window's 3,000+ records go to the tasks every batch; on
    # the workers, only the batch's 100 (to its source's task and to the
    # window's) and the references of the window's partitions.
    assert bytes_per_batch[False] > 40_000  # about 87 kB measured
    assert bytes_per_batch[True] < bytes_per_batch[False] / 5  # about 5.4 kB measured


def pid_of_worker() -> int:
    return os.getpid()


def test_a_worker_killed_between_batches_loses_no_window_and_the_output_equals_the_inline_run(client,
                                                                                              tmp_path) -> None:
    batches = batches_of(13)
    inline, _ = run_job("inline", batches, tmp_path / "inline")
    out: dict = {}
    build = build_job(DaskExecutor(client), batches, tmp_path / "cluster", out)
    ssc = StreamingContext.get_or_create(str(tmp_path / "cluster"), build)
    ssc.start()
    try:
        ssc.step(5, timeout=120)
        holders = client.run(held_partitions, [op._token for op in windowed_ops(ssc)])
        victim = max(holders, key=lambda w: len(holders[w]))  # the worker holding the most window partitions
        assert holders[victim]
        os.kill(client.run(pid_of_worker, workers=[victim])[victim], signal.SIGKILL)
        ssc.step(len(batches) + 4 - 5, timeout=120)
    finally:
        ssc.stop(graceful=False)
    assert [out[t] for t in sorted(out)] == inline
    assert sum(op.resident_reloads for op in windowed_ops(ssc)) >= len(holders[victim])
    client.wait_for_workers(3, timeout=60)


def killing_map(marker: Path):
    """A map after window() that SIGKILLs its own worker process the first
    time it meets the kill mark: in the middle of a task reading the window."""
    def fn(kv: tuple[str, int]) -> str:
        if kv[1] == KILL_MARK:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return kv[0]
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return kv[0]
    return fn


@pytest.mark.slow
def test_a_worker_killed_while_a_task_reads_the_window_fails_that_attempt_and_the_retry_equals_the_inline_run(
        client, tmp_path, caplog) -> None:
    batches = batches_of(17)
    batches[5] = [("k4", KILL_MARK)] + batches[5]

    def job(executor: Any, checkpoint: Path, fn) -> list:
        out: dict = {}
        ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False,
                               log_batches=False, max_batch_retries=1)
        ssc.checkpoint(str(checkpoint))
        ssc.queue_stream(batches, num_partitions=3).window(3.0, name="records").map(fn).foreach_batch(
            lambda b: out.__setitem__(b.time, sorted(b.collect())))
        ssc.start()
        try:
            ssc.step(len(batches), timeout=120)
        finally:
            ssc.stop(graceful=False)
        return [out[t] for t in sorted(out)]

    inline = job("inline", tmp_path / "inline", key_of)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        on_cluster = job(DaskExecutor(client), tmp_path / "cluster", killing_map(tmp_path / "killed"))
    assert (tmp_path / "killed").exists()
    assert on_cluster == inline
    retried = [r.getMessage() for r in caplog.records if "attempt 1/2 failed" in r.getMessage()]
    assert len(retried) == 1 and "WindowSliceLostError" in retried[0] and "is on no live worker" in retried[0]
    client.wait_for_workers(3, timeout=60)


def killing_add(marker: Path):
    """operator.add that SIGKILLs its own worker process the first time it
    adds the kill mark (inside a window task, mid-batch)."""
    def add(a: int, b: int) -> int:
        if b == KILL_MARK:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return a + b
            from distributed import get_worker

            os.write(fd, f"{os.getpid()} {get_worker().address}".encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return a + b
    return add


@pytest.mark.slow
def test_a_worker_killed_mid_window_task_loses_nothing_and_the_output_equals_the_inline_run(client,
                                                                                            tmp_path) -> None:
    batches = batches_of(11)
    batches[4] = [("k3", KILL_MARK), ("k3", KILL_MARK)] + batches[4]  # batch 5000: two values to add
    inline, _ = run_job("inline", batches, tmp_path / "inline")
    workers_before = set(client.scheduler_info()["workers"])
    # One retry, as the README asks of a job with window(): a task reading the
    # window's records while the worker dies fails that attempt.
    on_cluster, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster",
                              reduce_fn=killing_add(tmp_path / "killed"), max_batch_retries=1)
    pid, address = (tmp_path / "killed").read_text().split()
    assert address in workers_before
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    assert on_cluster == inline
    # The dead worker's window partitions came back from the last commit.
    assert sum(op.resident_reloads for op in windowed_ops(ssc)) >= 1
    client.wait_for_workers(3, timeout=60)  # the nanny restarted it, for the next test


@pytest.mark.slow
@pytest.mark.parametrize("restart_after", [4, 7])
def test_a_driver_restarted_from_the_checkpoint_gives_the_uninterrupted_runs_windows(client, tmp_path,
                                                                                      restart_after) -> None:
    batches = batches_of(5)
    uninterrupted, _ = run_job("inline", batches, tmp_path / "inline")
    restarted, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster", restart_after=restart_after)
    assert restarted == uninterrupted
    assert all(op._resident and op.resident_reloads == 0 for op in windowed_ops(ssc))
