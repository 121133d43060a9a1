"""Received blocks moved between the job's processes over Dask's own comms,
peer to peer: never through the scheduler.

A block's records travel three ways on a cluster: from the receiving worker
to its replica's worker (`put_copy`, before `store_batch` returns), from a
worker holding it to a partition task that ran elsewhere (`fetch`), and, with
the write-ahead log on, from the receiving worker to the driver, the log's one
writer (`fetch` again, from the driver's client). `Client.run` would route
each through the scheduler, which then holds every payload for a moment and
serializes it once more; here each is one message on a direct connection
(the pool of the caller's client), as Dask's own transfers of task results
between workers are. The driver's `fetch` connects to the worker directly, as
`Client.gather(direct=True)` does: with the write-ahead log on, the driver
must be able to reach the workers.

Each worker answers through handlers that `BlockHandlers`, a worker plugin
registered by the driver when a receiver starts, adds to it (the scheduler
gives the plugin to workers that join later, restarted ones included).

Records are sent with Dask's serialization (pickle, as task results are):
data of this job's own processes, never read from a checkpoint, a log or a
socket of a source.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from receivers import worker_blocks

PUT = "ingest_put_block"
GET = "ingest_get_block"
LOGGED = "ingest_blocks_logged"
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Payload:
    """A block's records as one object on the wire: Dask serializes a bare
    list element by element (a header per record: seconds for a block of
    20,000 integers), an object in one piece."""

    records: list[Any]


class BlockHandlers:
    """A Dask worker plugin (duck-typed: `setup` and `idempotent` are what
    `Client.register_plugin` reads) that adds the block handlers to a worker."""

    idempotent = True  # registered by every receiver's start: once per worker is enough
    name = "ingest-block-handlers"

    def setup(self, worker: Any) -> None:
        from distributed.protocol import to_serialize

        from receivers.worker_receiver import acknowledge

        address = worker.address

        def put_block(block_id: str, payload: Payload) -> str:
            worker_blocks.put(address, block_id, payload.records)
            return address

        def get_block(block_id: str) -> dict[str, Any]:
            records = worker_blocks.get(address, block_id)
            return {"found": records is not None,
                    "payload": None if records is None else to_serialize(Payload(records))}

        def blocks_logged(run_id: str, block_ids: list[str]) -> int:
            return acknowledge(run_id, block_ids)

        worker.handlers.update({PUT: put_block, GET: get_block, LOGGED: blocks_logged})


def register(client: Any) -> None:
    """Give every worker of the cluster, present and future, the handlers."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class _Plugin(BlockHandlers, WorkerPlugin):
        pass

    client.register_plugin(_Plugin(), name=BlockHandlers.name)


def _call(client: Any, address: str, op: str, **kwargs: Any) -> Any:
    """One request to the worker at `address` on a direct connection, from any
    thread but the client's event loop."""
    async def call() -> Any:
        return await asyncio.wait_for(getattr(client.rpc(address), op)(**kwargs), TIMEOUT_S)

    return client.sync(call)


def put_copy(client: Any, address: str, block_id: str, records: list[Any]) -> bool:
    """Keep a copy of the block on the worker at `address`; True once it has."""
    from distributed.protocol import to_serialize

    return _call(client, address, PUT, block_id=block_id, payload=to_serialize(Payload(records))) == address


def fetch(client: Any, address: str, block_id: str) -> list[Any] | None:
    """The block's records from the worker at `address` (None: not there)."""
    reply = _call(client, address, GET, block_id=block_id)
    return reply["payload"].records if reply.get("found") else None


def confirm_logged(client: Any, address: str, run_id: str, block_ids: list[str]) -> int:
    """Tell the receiver's worker that blocks are in the write-ahead log (their
    store_batch calls return); how many were waiting there."""
    return int(_call(client, address, LOGGED, run_id=run_id, block_ids=block_ids))
