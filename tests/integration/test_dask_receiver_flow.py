"""Flow on a Dask cluster: `max_unprocessed_records` and `max_rate` hold on
the receiver's worker as they do in one process, and a block's records go
from worker to worker (its replica) and from worker to driver (the
write-ahead log), never through the scheduler.

The source is `chunk_source`'s: 20 chunks of 10 integers, each stored with
one `store_batch` and acknowledged after it returned, so the server's count
of acknowledged chunks says how far the receiver got."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402

from chunk_source import ChunkReceiver, ChunkServer  # noqa: E402
from receiver_jobs import receiver_job, wait_until  # noqa: E402
from receivers import Receiver  # noqa: E402

pytestmark = pytest.mark.slow

CHUNKS = [list(range(c * 10, c * 10 + 10)) for c in range(20)]
ALL = [n for chunk in CHUNKS for n in chunk]


@pytest.fixture(scope="module")
def cluster():
    yield from three_worker_client()


def test_the_receivers_worker_waits_while_the_driver_holds_max_unprocessed_records(cluster):
    server = ChunkServer(CHUNKS)
    ssc, stream, out = receiver_job(cluster, ChunkReceiver(server.port), max_unprocessed_records=30)
    batches = 0
    try:
        ssc.start()
        # The source is fast and no batch runs: the receiver stops after 3 blocks (30 records).
        server.wait_acked(3)
        time.sleep(1.5)
        assert stream.records_received == 30
        assert len(server.acked) == 3  # the 4th store_batch is waiting on the worker
        # Slow batches: each one frees room for about three more blocks.
        deadline = time.monotonic() + 90
        while len(out) < len(ALL) and time.monotonic() < deadline:
            ssc.step(1, timeout=60)
            batches += 1
            time.sleep(0.3)
        status = ssc.status()
    finally:
        ssc.stop(graceful=False)
        server.close()
    assert sorted(out) == ALL  # nothing lost, nothing twice
    assert stream.peak_unprocessed_records <= 30 + 10  # the limit, plus at most one block
    assert batches >= len(ALL) // 40  # the receiver really went no faster than the batches
    assert status["inputs"][stream.name]["records_lost"] == 0


def test_max_rate_limits_a_receiver_on_a_worker(cluster):
    server = ChunkServer(CHUNKS)
    ssc, stream, out = receiver_job(cluster, ChunkReceiver(server.port), max_rate=100)
    try:
        ssc.start()
        server.wait_acked(1)
        started = time.monotonic()
        server.wait_acked(len(CHUNKS))
        took = time.monotonic() - started
        wait_until(lambda: stream.records_received == len(ALL), what="every block tracked")
        ssc.step(1, timeout=60)
    finally:
        ssc.stop(graceful=False)
        server.close()
    assert took >= (len(ALL) - 10 - 10) / 100  # 19 more chunks at 100 records/s, less one burst
    assert sorted(out) == ALL


class BigRecords(Receiver[str]):
    """Stores `blocks` blocks of one 100 KB record each, then idles."""

    def __init__(self, blocks: int) -> None:
        super().__init__("big-records")
        self.blocks = blocks

    def on_start(self) -> None:
        self.start_thread(self._loop, name="big-records")

    def _loop(self) -> None:
        for i in range(self.blocks):
            if self.stop_event.is_set():
                return
            self.store_batch([f"{i:04d}" + "x" * 100_000])


class SchedulerTraffic:
    """What the scheduler was asked to carry: `Client.run` calls (its
    "broadcast" handler, the route of a payload sent to a worker through the
    scheduler) and the size of every item put on a `distributed.Queue`."""

    def __init__(self) -> None:
        self.broadcasts = 0
        self.queue_item_bytes: list[int] = []


@contextmanager
def scheduler_traffic(scheduler: Any) -> Iterator[SchedulerTraffic]:
    from dask.sizeof import sizeof

    seen = SchedulerTraffic()
    broadcast, queue_put = scheduler.handlers["broadcast"], scheduler.handlers["queue_put"]

    async def counting_broadcast(**kwargs: Any) -> Any:
        seen.broadcasts += 1
        return await broadcast(**kwargs)

    async def sizing_queue_put(**kwargs: Any) -> Any:
        seen.queue_item_bytes.append(sizeof(kwargs.get("data")))
        return await queue_put(**kwargs)

    scheduler.handlers.update(broadcast=counting_broadcast, queue_put=sizing_queue_put)
    try:
        yield seen
    finally:
        scheduler.handlers.update(broadcast=broadcast, queue_put=queue_put)


def test_a_blocks_records_go_to_its_replica_and_to_the_write_ahead_log_without_the_scheduler(cluster, tmp_path):
    ssc, stream, out = receiver_job(cluster, BigRecords(20), tmp_path / "ckpt")
    assert stream.replication == 2
    try:
        with scheduler_traffic(cluster.cluster.scheduler) as seen:
            ssc.start()
            wait_until(lambda: stream.records_received == 20, what="20 blocks logged and tracked")
        tracked = stream.tracker.pending()
        logged = stream.block_log.wal.records_written
        ssc.step(1, timeout=60)
    finally:
        ssc.stop(graceful=False)
    assert sorted(r[:4] for r in out) == [f"{i:04d}" for i in range(20)]
    assert all(len(r) == 100_004 for r in out)
    assert [len(b.locations) for b in tracked] == [2] * 20  # each block on two workers
    assert logged >= 20  # and in the write-ahead log, written by the driver
    # 2 MB received, copied and logged: the scheduler carried none of it.
    assert seen.broadcasts == 0
    assert seen.queue_item_bytes and max(seen.queue_item_bytes) < 10_000
