"""Flow control of receivers on a Dask cluster: `max_unprocessed_records`
and `max_rate` hold on the receiver's worker as they do in one process.

The source is `chunk_source`'s: 20 chunks of 10 integers, each stored with
one `store_batch` and acknowledged after it returned, so the server's count
of acknowledged chunks says how far the receiver got."""

from __future__ import annotations

import time

import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402

from chunk_source import ChunkReceiver, ChunkServer  # noqa: E402
from receiver_jobs import receiver_job, wait_until  # noqa: E402

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
