"""The direct Kafka stream on a Dask cluster of 3 worker processes: each
topic-partition is read on the same worker batch after batch, so one cached
consumer per partition serves every batch, and a dead worker's partitions move
to live workers with nothing read twice or missed."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import defaultdict

import pytest

distributed = pytest.importorskip("distributed")

from direct import kafka_direct_stream  # noqa: E402
from ingest import DaskExecutor, ManualClock, StreamingContext  # noqa: E402
from ingest.affinity import preferred_worker  # noqa: E402
from ingest.testing.kafka import create_topic, produce  # noqa: E402

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 6


@pytest.fixture(scope="module")
def client():
    import dask

    # Dask's work stealing may move a queued task off its busy preferred worker
    # to an idle one (allow_other_workers=True permits it; that partition then
    # reads through a consumer of its own there, correctly). Off here, so that
    # what is checked is the placement the executor asks for.
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                           memory_limit="300MiB", dashboard_address=None, host="127.0.0.1")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def live(client) -> list[str]:
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def where_read(records):
    """Map-partitions function: which worker read which topic-partition's records."""
    from distributed import get_worker

    records = list(records)
    return [(get_worker().address, r.partition, r.value.decode()) for r in records]


def cached_partitions(topic: str):
    from ingest.kafka.clients import CONSUMERS

    return sorted(p for t, p in CONSUMERS.partitions() if t == topic)


def kill_this_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_each_partition_is_read_on_one_worker_every_batch_and_moves_when_that_worker_dies(client, kafka_bootstrap):
    topic = f"affinity-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False)
    stream = kafka_direct_stream(ssc, [topic], client="confluent", kafka_params={
        "bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    batches: list[list[tuple[str, int, str]]] = []
    stream.map_partitions(where_read).foreach_batch(lambda b: batches.append(b.collect()))
    ssc.start()
    produced: list[str] = []

    def produce_batch(n: int) -> None:
        for p in range(PARTITIONS):
            values = [f"b{n}-p{p}-{i}" for i in range(5)]
            produce(kafka_bootstrap, topic, [v.encode() for v in values], partition=p)
            produced.extend(values)

    try:
        for n in range(3):
            produce_batch(n)
            ssc.step(timeout=60)
        workers = live(client)
        placed: dict[int, set[str]] = defaultdict(set)
        for batch in batches:
            for address, partition, _ in batch:
                placed[partition].add(address)
        assert set(placed) == set(range(PARTITIONS))
        for partition, addresses in placed.items():
            assert addresses == {preferred_worker(f"{topic}\x00{partition}", workers)}, partition
        # One consumer per partition over the whole cluster, kept by the worker that reads it.
        cached = client.run(cached_partitions, topic)
        assert sorted(p for ps in cached.values() for p in ps) == list(range(PARTITIONS))
        for address, partitions in cached.items():
            assert all(address in placed[p] for p in partitions)

        # A worker that reads some partitions dies between batches.
        victim = next(iter(placed[0]))
        moved = {p for p, a in placed.items() if victim in a}
        client.submit(kill_this_worker, workers=[victim], pure=False)
        deadline = time.monotonic() + 60
        while victim in live(client):
            assert time.monotonic() < deadline, "the scheduler never noticed the dead worker"
            time.sleep(0.1)
        before = len(batches)
        for n in range(3, 5):
            produce_batch(n)
            ssc.step(timeout=60)
        after: dict[int, set[str]] = defaultdict(set)
        for batch in batches[before:]:
            for address, partition, _ in batch:
                after[partition].add(address)
        assert all(victim not in addresses for addresses in after.values())
        for partition in set(range(PARTITIONS)) - moved:  # partitions of the survivors stay put
            assert after[partition] == placed[partition], partition
    finally:
        ssc.stop(graceful=False)
    read = [value for batch in batches for _, _, value in batch]
    assert sorted(read) == sorted(produced)  # every record once, across the death
