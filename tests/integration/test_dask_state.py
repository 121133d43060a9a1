"""Keyed state partitions kept on the workers of a real Dask cluster (3 worker
processes): every batch's output equals the local executor's, the state is
not shipped to the tasks, and a worker killed with SIGKILL in the middle of a
stateful task loses nothing (its partitions come back from the last commit)."""

from __future__ import annotations

import logging
import os
import random
import signal
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402

from ingest import DaskExecutor, ManualClock, StreamingContext  # noqa: E402
from ingest.state_store import held_partitions  # noqa: E402

PARTITIONS = 6


@pytest.fixture(scope="module")
def client():
    yield from three_worker_client()


def batches_of(seed: int, n_batches: int = 6, keys: int = 25, per_batch: int = 40) -> list[list[tuple[str, int]]]:
    rng = random.Random(seed)
    return [[(f"k{rng.randrange(keys)}", rng.randrange(100)) for _ in range(rng.randrange(per_batch))]
            for _ in range(n_batches)]


def total(values: list[int], old: int | None) -> int | None:
    new = (old or 0) + sum(values)
    return None if new % 11 == 0 and values else new  # some keys go away and come back


def running_max(key: str, value: int | None, state) -> tuple | None:
    if state.is_timing_out():
        return ("timed out", key, state.get())
    best = max(value, state.get_option(-1))
    if value == 0:
        state.remove()
        return ("removed", key)
    state.update(best)
    return (key, best)


def run_job(executor, batches, checkpoint: Path, *, update_fn=total, max_batch_retries: int = 0,
            before_stop=None, fail_once_at: int | None = None) -> tuple[list, StreamingContext]:
    """update_state_by_key, map_with_state with a timeout and its state
    snapshots; each batch's three outputs as sorted lists."""
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False, log_batches=False,
                           max_batch_retries=max_batch_retries)
    ssc.checkpoint(str(checkpoint), full_snapshot_every=3)
    pairs = ssc.queue_stream(batches, num_partitions=3)
    out: dict[int, dict[str, list]] = {}

    def keep(name):
        def store(b) -> None:
            out.setdefault(b.time, {})[name] = sorted(map(repr, b.collect()))
        return store

    pairs.update_state_by_key(update_fn, num_partitions=PARTITIONS, name="totals",
                              initial_state={"k1": 5, "initial": 7}).foreach_batch(keep("totals"))
    mapped = pairs.map_with_state(running_max, timeout=2.0, num_partitions=PARTITIONS, name="maxima")
    mapped.foreach_batch(keep("mapped"))
    mapped.state_snapshots().foreach_batch(keep("snapshots"))
    failed = []

    def fail_once(b) -> None:  # the last output: the batch's state is pending on the workers when it fails
        if b.time == fail_once_at and not failed:
            failed.append(b.time)
            raise RuntimeError("the sink is away")

    pairs.foreach_batch(fail_once)
    ssc.start()
    try:
        ssc.step(len(batches) + 3, timeout=120)  # the last batches are empty: keys time out
        if before_stop is not None:
            before_stop(ssc)
    finally:
        ssc.stop(graceful=False)
    return [out[t] for t in sorted(out)], ssc


def stateful_ops(ssc: StreamingContext):
    return {s.state_id: s for s in ssc._graph.stateful}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_state_on_workers_gives_the_local_executors_output_batch_by_batch(client, tmp_path, seed) -> None:
    batches = batches_of(seed)
    local, _ = run_job("inline", batches, tmp_path / "local")
    on_cluster, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster")
    assert on_cluster == local
    assert len(local) == len(batches) + 3
    for op in stateful_ops(ssc).values():
        assert op._resident is True
        assert op.resident_reloads == 0
        assert op._committed is None  # the driver kept no copy: the checkpoint and the workers hold it


def test_a_retried_batch_starts_again_from_the_committed_state_on_the_workers(client, tmp_path) -> None:
    batches = batches_of(5)
    local, _ = run_job("inline", batches, tmp_path / "local")
    on_cluster, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster", max_batch_retries=1,
                              fail_once_at=3000)
    assert on_cluster == local  # the failed attempt's changes were never applied


def raise_once(marker: Path):
    """update_state_by_key's function that raises on its worker the first time
    it sees the marker value -1 (once across processes and attempts)."""
    def update(values: list[int], old: int | None) -> int | None:
        if -1 in values:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                from distributed import get_worker

                marker.write_text(get_worker().address)
                raise RuntimeError("state store unavailable on this worker")
        return without_markers(values, old)
    return update


def test_a_state_task_that_raises_on_one_worker_is_retried_and_the_log_names_the_worker(client, tmp_path,
                                                                                         caplog) -> None:
    batches = batches_of(9)
    batches[2] = [("k5", -1)] + batches[2]
    local, _ = run_job("inline", batches, tmp_path / "local", update_fn=without_markers)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        on_cluster, _ = run_job(DaskExecutor(client), batches, tmp_path / "cluster", max_batch_retries=1,
                                update_fn=raise_once(tmp_path / "raised"))
    assert on_cluster == local
    address = (tmp_path / "raised").read_text()
    retried = [r.getMessage() for r in caplog.records if "attempt 1/2 failed" in r.getMessage()]
    assert len(retried) == 1
    assert "update_state_by_key 'totals'" in retried[0]
    assert f"failed on Dask worker {address}: RuntimeError: state store unavailable on this worker" in retried[0]


def test_the_workers_hold_the_partitions_until_the_context_stops(client, tmp_path) -> None:
    batches = batches_of(7)
    seen = {}

    def inspect(ssc: StreamingContext) -> None:
        ops = stateful_ops(ssc)
        tokens = [op._token for op in ops.values()]
        seen["where"] = client.run(held_partitions, tokens)
        # The committed state the driver reads from the workers is the checkpoint's.
        for op in ops.values():
            full, deltas = ssc._log.committed_state(op.state_id)
            assert sorted(map(repr, op.state_items())) == sorted(
                map(repr, (kv for part in op._parts_from(full, deltas) for kv in part.items())))
            assert op.state_size() == len(op.state_items())
        assert ops["totals"].state_size() > 0  # (the keys of "maxima" timed out in the empty batches)

    _, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster", before_stop=inspect)
    where = seen["where"]
    owners = {}
    for worker, parts in where.items():
        for part in map(tuple, parts):
            assert part not in owners, f"{part} on two workers"
            owners[part] = worker
    assert len(owners) == 2 * PARTITIONS
    # Spread: rendezvous hashing over 3 workers on random ports leaves one of
    # them without any of the 12 partitions about once in 40 runs, so "every
    # worker" would be a coin toss; more than one worker is what pinning promises.
    assert len(set(owners.values())) >= 2
    # Stopping the context freed them.
    tokens = [op._token for op in stateful_ops(ssc).values()]
    assert all(parts == [] for parts in client.run(held_partitions, tokens).values())


def kill_worker_once(marker: Path, at_batch_ms: int):
    """update_state_by_key's function that kills its own worker process
    (SIGKILL) the first time it runs in batch `at_batch_ms`, mid-task."""
    def update(values: list[int], old: int | None) -> int | None:
        if -at_batch_ms in values:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return total([v for v in values if v >= 0], old)
            from distributed import get_worker

            os.write(fd, f"{os.getpid()} {get_worker().address}".encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return total([v for v in values if v >= 0], old)
    return update


def without_markers(values: list[int], old: int | None) -> int | None:
    return total([v for v in values if v >= 0], old)


def test_a_worker_killed_mid_batch_loses_no_state_and_the_output_equals_the_local_run(client, tmp_path) -> None:
    batches = batches_of(11, n_batches=8)
    # A marker record in batch 4 (time 4000 ms) triggers the kill; the
    # functions ignore it otherwise, so both runs compute the same.
    batches[3] = [("k3", -4000)] + batches[3]
    update = kill_worker_once(tmp_path / "killed", 4000)
    local, _ = run_job("inline", batches, tmp_path / "local", update_fn=without_markers)
    workers_before = set(client.scheduler_info()["workers"])
    on_cluster, ssc = run_job(DaskExecutor(client), batches, tmp_path / "cluster", update_fn=update)
    pid, address = (tmp_path / "killed").read_text().split()
    assert address in workers_before
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)
    assert [b["totals"] for b in on_cluster] == [b["totals"] for b in local]
    assert on_cluster == local
    ops = stateful_ops(ssc)
    # The dead worker's partitions of both operators came back from the checkpoint.
    assert ops["totals"].resident_reloads >= 1 and ops["maxima"].resident_reloads >= 1
    client.wait_for_workers(3, timeout=60)  # the nanny restarted it, for the next test
