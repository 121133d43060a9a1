"""Partition tasks on a real Dask cluster (distributed.LocalCluster)."""

from __future__ import annotations

import operator

import pytest

distributed = pytest.importorskip("distributed")

from ingest import DaskExecutor, ManualClock, StreamingContext  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def test_batches_run_on_dask_workers_with_the_same_results_as_inline(client) -> None:
    batches = [[f"w{(b * 3 + i) % 7}" for i in range(40)] for b in range(5)]

    def run(executor) -> list:
        ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False,
                               log_batches=False)
        out = []
        words = ssc.queue_stream(batches, num_partitions=4)
        words.map(lambda w: (w, 1)).reduce_by_key(operator.add, num_partitions=3).foreach_batch(
            lambda b: out.append((b.time, sorted(b.collect()))))
        ssc.start()
        ssc.step(len(batches))
        ssc.stop(graceful=False)
        return out

    on_dask = run(DaskExecutor(client))
    inline = run("inline")
    assert on_dask == inline
    assert sum(n for _, counts in on_dask for _, n in counts) == 200


def test_tasks_really_run_in_the_workers(client) -> None:
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False,
                           log_batches=False)
    seen = []
    ssc.queue_stream([list(range(8))], num_partitions=4).map_partitions(
        lambda it: [(__import__("os").getpid(), sum(it))]).foreach_batch(lambda b: seen.extend(b.collect()))
    ssc.start()
    ssc.step()
    ssc.stop(graceful=False)
    import os

    assert sum(s for _, s in seen) == 28
    assert all(pid != os.getpid() for pid, _ in seen)
