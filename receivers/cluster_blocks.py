"""The driver's handle on blocks held in Dask workers' memory.

The driver never holds the records of a block received on a worker: it
tracks the block's reference and, when the retention point passes its batch,
asks the workers in its `locations` to drop it. Drops are sent without
waiting (a batch does not wait for clean-up), and a location that died is
skipped: its copy died with it.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from receivers import worker_blocks
from receivers.block import Block, BlockInfo

log = logging.getLogger("receivers.cluster_blocks")


class ClusterBlockStore:
    def __init__(self, client_of: Any) -> None:
        self._client_of = client_of  # a callable: the executor's client, looked up when needed

    def put(self, stream: str, block: Block) -> BlockInfo:  # pragma: no cover - blocks are stored on workers
        raise NotImplementedError("blocks of a receiver on a Dask worker are stored there")

    def get(self, info: BlockInfo) -> list[Any] | None:
        """A block without locations was never on a worker: there is no copy here."""
        return None

    def remove(self, infos: Iterable[BlockInfo]) -> None:
        by_worker: dict[str, list[str]] = {}
        for info in infos:
            for worker in info.locations:
                by_worker.setdefault(worker, []).append(info.block_id)
        if not by_worker:
            return
        client = self._client_of()
        live = set(client.nthreads())
        for worker, ids in by_worker.items():
            if worker in live:
                try:
                    client.run(worker_blocks.drop_blocks, ids, workers=[worker], wait=False, on_error="ignore")
                except Exception as exc:  # noqa: BLE001 - it left since: its copies are gone anyway
                    log.debug("dropping %d block(s) on %s failed: %s", len(ids), worker, exc)

    def close(self) -> None:
        """Nothing held here; the input stream removes its tracked blocks on stop."""
