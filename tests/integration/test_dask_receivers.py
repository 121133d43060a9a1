"""Receivers on a real Dask cluster of 3 worker processes: each runs on a
worker, its blocks stay in workers' memory (on two of them by default), and a
worker killed with SIGKILL costs nothing received with replication 2, and a
counted, logged loss with replication 1 and no write-ahead log.

The source is deterministic and acknowledging (`chunk_source`): 20 chunks of
10 integers; the server holds the stream after a chosen number of
acknowledged chunks, so each kill happens at a known point."""

from __future__ import annotations

import logging
import operator
import os

import pytest

distributed = pytest.importorskip("distributed")

from dask_local import three_worker_client  # noqa: E402

from chunk_source import ChunkReceiver, ChunkServer, PreferringReceiver  # noqa: E402
from ingest import DaskExecutor, ManualClock, StreamingContext  # noqa: E402
from receiver_jobs import kill_worker, receiver_job, wait_until, worker_of  # noqa: E402
from worker_faults import kill_this_worker, once_per_marker  # noqa: E402

pytestmark = pytest.mark.slow

CHUNKS = [list(range(c * 10, c * 10 + 10)) for c in range(20)]
ALL = [n for chunk in CHUNKS for n in chunk]


@pytest.fixture(scope="module")
def client():
    yield from three_worker_client()


@pytest.fixture
def cluster(client):
    """The shared cluster, with its 3 workers back (the nanny restarts a killed one)."""
    client.wait_for_workers(3, timeout=60)
    yield client
    client.wait_for_workers(3, timeout=60)


def run_killing_the_receivers_worker_at_8_blocks(cluster, ssc, stream, server: ChunkServer):
    """Start the job; with the server holding at 8 acknowledged chunks, SIGKILL
    the worker running the receiver once it stored them, wait until the
    receiver runs on another worker, let the rest through and run a batch
    over everything; stop. Returns (the killed worker, the receiver's new
    worker, the status before the stop)."""
    try:
        ssc.start()
        server.wait_acked(8)  # with the write-ahead log, acknowledged only once logged
        wait_until(lambda: stream.records_received == 80, what="8 blocks tracked")
        first = worker_of(ssc, stream)
        assert first is not None
        kill_worker(cluster, first)
        wait_until(lambda: worker_of(ssc, stream) not in (None, first), what="the receiver restarted")
        second = worker_of(ssc, stream)
        server.release()
        server.wait_acked(len(CHUNKS))
        wait_until(lambda: stream.records_received == len(ALL), what="every block tracked")
        ssc.step(1, timeout=60)
        return first, second, ssc.status()
    finally:
        ssc.stop(graceful=False)
        server.close()


def test_receivers_are_spread_over_the_workers_and_a_preferred_worker_is_used(cluster, caplog):
    workers = sorted(cluster.nthreads())
    servers = [ChunkServer(CHUNKS) for _ in range(3)]
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(cluster), stop_on_signal=False)
    wanted = workers[1]
    streams = [ssc.receiver_stream(PreferringReceiver(servers[0].port, "pinned", wanted), name="pinned"),
               ssc.receiver_stream(ChunkReceiver(servers[1].port, "a"), name="a"),
               ssc.receiver_stream(ChunkReceiver(servers[2].port, "b"), name="b")]
    out: list[int] = []
    ssc.union(*streams).foreach_batch(lambda b: out.extend(b.collect()))
    try:
        with caplog.at_level(logging.INFO, logger="ingest.listener"):
            ssc.start()
            for server in servers:
                server.wait_acked(len(CHUNKS))
            wait_until(lambda: all(s.records_received == len(ALL) for s in streams), what="all blocks tracked")
            placed = {s.name: worker_of(ssc, s) for s in streams}
            ssc.step(1, timeout=60)
    finally:
        ssc.stop(graceful=False)
        for server in servers:
            server.close()
    assert placed["pinned"] == wanted
    assert sorted(placed.values()) == workers  # one receiver per worker
    assert {s.name: ssc.status()["inputs"][s.name]["worker"] for s in streams} == placed
    assert sorted(out) == sorted(ALL * 3)
    started = [r.getMessage() for r in caplog.records if "started on Dask worker" in r.getMessage()]
    assert sorted(started) == sorted(f"receiver {s.receiver.name} of stream {s.name} started on Dask worker "
                                     f"{placed[s.name]}" for s in streams)


def test_a_killed_receivers_worker_restarts_it_on_another_and_with_replication_2_nothing_is_lost(cluster):
    server = ChunkServer(CHUNKS, hold_at=8)
    ssc, stream, out = receiver_job(cluster, ChunkReceiver(server.port))
    assert stream.replication == 2  # the default on a cluster
    first, second, status = run_killing_the_receivers_worker_at_8_blocks(cluster, ssc, stream, server)
    assert second in cluster.nthreads() and second != first
    assert server.connections == 2  # the first worker's connection, then the restarted receiver's
    assert sorted(out) == ALL  # the 8 blocks received on the dead worker were read from their replicas
    assert status["receivers"][stream.name]["restarts"] == 1
    assert status["inputs"][stream.name] == {"worker": second, "replication": 2, "blocks_lost": 0,
                                             "records_lost": 0}


def test_with_replication_1_and_no_wal_the_blocks_of_a_killed_worker_are_counted_lost_and_logged(cluster, caplog):
    server = ChunkServer(CHUNKS, hold_at=8)
    ssc, stream, out = receiver_job(cluster, ChunkReceiver(server.port), replication=1)
    with caplog.at_level(logging.WARNING, logger="receivers"):
        first, _, status = run_killing_the_receivers_worker_at_8_blocks(cluster, ssc, stream, server)
    assert sorted(out) == ALL[80:]  # what the dead worker held is gone; the rest came through
    assert status["inputs"][stream.name]["blocks_lost"] == 8
    assert status["inputs"][stream.name]["records_lost"] == 80
    lost = [r.getMessage() for r in caplog.records if "that no live worker holds" in r.getMessage()]
    assert len(lost) == 1
    assert f"Dask worker {first} left the cluster with 8 received block(s) (80 records)" in lost[0]
    assert "replication=1, write-ahead log off" in lost[0]


def keyed_sums(client, task) -> list[tuple[int, int]]:
    server = ChunkServer(CHUNKS)
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False)
    stream = ssc.receiver_stream(ChunkReceiver(server.port))
    out: list[tuple[int, int]] = []
    stream.map(task).map(lambda x: (x % 7, x)).reduce_by_key(operator.add, num_partitions=3).foreach_batch(
        lambda b: out.extend(b.collect()))
    try:
        ssc.start()
        server.wait_acked(len(CHUNKS))
        wait_until(lambda: stream.records_received == len(ALL), what="every block tracked")
        ssc.step(1, timeout=120)
    finally:
        ssc.stop(graceful=False)
        server.close()
    return sorted(out)


def test_a_worker_killed_mid_batch_the_batch_completes_from_the_replicas_with_the_same_output(cluster, tmp_path):
    expected = keyed_sums(cluster, lambda x: x)
    cluster.wait_for_workers(3, timeout=60)
    marker = tmp_path / "killed"
    out = keyed_sums(cluster, once_per_marker(marker, 115, kill_this_worker))
    assert out == expected
    pid, _address = marker.read_text().split()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # the worker really died, in the middle of the batch


def test_with_the_wal_and_replication_1_a_killed_workers_blocks_are_read_from_the_log(cluster, tmp_path):
    server = ChunkServer(CHUNKS, hold_at=8)
    ssc, stream, out = receiver_job(cluster, ChunkReceiver(server.port), tmp_path / "ckpt", replication=1)
    _, _, status = run_killing_the_receivers_worker_at_8_blocks(cluster, ssc, stream, server)
    logged = stream.block_log.wal.records_written
    assert sorted(out) == ALL  # the dead worker's 8 blocks came from the write-ahead log
    assert status["inputs"][stream.name]["records_lost"] == 0
    assert logged >= len(CHUNKS)
