"""Received blocks kept in Dask workers' memory, and the partitions that read them.

On a Dask cluster a receiver runs on a worker (`receivers.worker_receiver`)
and its blocks stay there: the records go into this process-wide store of the
worker that received them and of one more worker (the replica), and only the
block's reference (`BlockRef` with `locations`) goes to the driver. A
partition task reading a block is placed on one of its locations; if Dask ran
it elsewhere (both busy, or the first died mid-batch), it fetches the records
from a live location. A location no longer in the cluster is not asked: a
connection to it only times out (30 s each), and when no live location is
left the task fails at once, so the batch's retry reads the block from the
write-ahead log, or counts it lost without one.

The store is keyed by worker address as well as block id, so workers that
share a process (a `LocalCluster(processes=False)`) still keep separate
copies: killing one of them must not keep its blocks alive in another.

Records cross between workers on direct connections (`receivers.block_comms`,
Dask's own serialization, as partition tasks' results): data of this job's
processes, never read from a checkpoint, a log or a socket.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ingest.errors import IngestError

_lock = threading.Lock()
_stores: dict[str, dict[str, list[Any]]] = {}  # worker address -> block id -> records


class BlockUnavailableError(IngestError):
    """No live worker holds a block any more (every copy was on workers that died)."""


def put(worker: str, block_id: str, records: list[Any]) -> None:
    """Keep `records` under `block_id` in `worker`'s store."""
    with _lock:
        _stores.setdefault(worker, {})[block_id] = records


def get(worker: str, block_id: str) -> list[Any] | None:
    with _lock:
        return _stores.get(worker, {}).get(block_id)


def drop(worker: str, block_ids: Iterable[str]) -> int:
    """Forget blocks (their batches were cleaned up); returns how many were here."""
    with _lock:
        store = _stores.get(worker, {})
        return sum(store.pop(block_id, None) is not None for block_id in block_ids)


def held(worker: str) -> int:
    with _lock:
        return len(_stores.get(worker, {}))


# -- functions sent with `Client.run` (Dask passes the worker as `dask_worker`) ------------

async def drop_blocks(block_ids: list[str], dask_worker: Any = None) -> int:
    """A coroutine, so that the driver can send it without waiting for it
    (`Client.run(..., wait=False)` takes only coroutines); a dict pop is quick
    enough for the worker's event loop."""
    return drop(dask_worker.address, block_ids)


def count_blocks(dask_worker: Any = None) -> int:
    return held(dask_worker.address)


@dataclass(frozen=True)
class WorkerBlockSource:
    """A partition whose records are a block held by `locations` (worker
    addresses, the receiving worker first). `affinity` makes the Dask executor
    place the task on one of them (loosely: another worker may run it and
    fetch the records)."""

    stream: str
    block_id: str
    locations: tuple[str, ...]

    @property
    def affinity(self) -> tuple[str, ...]:
        return self.locations

    def read(self) -> Sequence[Any]:
        from distributed import get_client, get_worker

        from receivers import block_comms

        here: str | None
        try:
            here = get_worker().address
        except ValueError:  # read in the driver (no worker): fetch from a location
            here = None
        if here is not None:
            records = get(here, self.block_id)
            if records is not None:
                return records
        client = get_client()
        live = set(client.nthreads())  # after a scheduler restart, copies on gone workers would each time out
        elsewhere = [location for location in self.locations if location != here and location in live]
        records = block_comms.fetch(client, elsewhere, self.block_id) if elsewhere else None  # worker to worker
        if records is not None:
            return records
        raise BlockUnavailableError(
            f"stream {self.stream}: block {self.block_id} is on no live worker (it was kept on "
            f"{', '.join(self.locations)}); with replication=2 a block survives one worker's death, "
            "and with the write-ahead log on it survives every worker's")
