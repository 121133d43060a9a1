"""The cluster the Dask integration tests run on: a LocalCluster of three
worker processes with one thread each, on 127.0.0.1, without a dashboard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def three_worker_client() -> Iterator[Any]:
    """A client of a fresh three-worker LocalCluster, closed with it after use."""
    import distributed

    cluster = distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, memory_limit="300MiB",
                                       dashboard_address=None, host="127.0.0.1")
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()
