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
import logging
from dataclasses import dataclass
from typing import Any, Sequence

from receivers import worker_blocks

PUT = "ingest_put_block"
GET = "ingest_get_block"
LOGGED = "ingest_blocks_logged"
CONNECT_S = 5.0
TIMEOUT_S = 30.0

log = logging.getLogger("receivers.block_comms")


@dataclass(frozen=True)
class Payload:
    """A block's records as one object on the wire: Dask serializes a bare
    list element by element (a header per record: seconds for a block of
    20,000 integers), an object in one piece."""

    records: list[Any]


class BlockHandlers:
    """The worker plugin that adds the block handlers to a worker; `register`
    makes it a `distributed` WorkerPlugin (imported there, so that importing
    this module does not need `distributed`)."""

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


async def _request(client: Any, address: str, op: str, connect_timeout: float, **kwargs: Any) -> Any:
    """One request on a pooled direct connection to `address`. The connect
    timeout is ours, not Dask's (30 s, retrying a refused connection all
    along): a worker killed a moment ago refuses at once, and its copies
    should cost the caller no more than `connect_timeout`."""
    from distributed.core import send_recv

    comm = await client.rpc.connect(address, timeout=connect_timeout)
    try:
        reply = await asyncio.wait_for(send_recv(comm, op=op, **kwargs), TIMEOUT_S)
    except BaseException:
        comm.abort()  # half a conversation: never back into the pool
        raise
    client.rpc.reuse(address, comm)
    return reply


def put_copy(client: Any, address: str, block_id: str, records: list[Any]) -> bool:
    """Keep a copy of the block on the worker at `address`; True once it has."""
    from distributed.protocol import to_serialize

    reply = client.sync(_request, client, address, PUT, CONNECT_S, block_id=block_id,
                        payload=to_serialize(Payload(records)))
    return reply == address


def fetch(client: Any, locations: Sequence[str], block_id: str) -> list[Any] | None:
    """The block's records from whichever of the workers at `locations`
    answers first with them (asked all at once: a dead one among them costs
    nothing while another holds a copy); None when none has it."""
    async def first() -> list[Any] | None:
        asks = [asyncio.ensure_future(_request(client, a, GET, CONNECT_S, block_id=block_id)) for a in locations]
        try:
            for ask in asyncio.as_completed(asks):
                try:
                    reply = await ask
                except Exception as exc:  # noqa: BLE001 - that worker died or is unreachable: the others
                    log.debug("block %s: a location did not answer: %s: %s", block_id, type(exc).__name__, exc)
                    continue
                if reply.get("found"):
                    return reply["payload"].records
            return None
        finally:
            for ask in asks:
                ask.cancel()

    return client.sync(first) if locations else None


def confirm_logged(client: Any, address: str, run_id: str, block_ids: list[str]) -> int:
    """Tell the receiver's worker that blocks are in the write-ahead log (their
    store_batch calls return); how many were waiting there."""
    return int(client.sync(_request, client, address, LOGGED, CONNECT_S, run_id=run_id, block_ids=block_ids))
