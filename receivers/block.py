"""Blocks: the unit in which received records are stored and handed to batches.

`BlockInfo` is the plain-data description the tracker logs and batches plan
with; the records themselves live in a `BlockStore` (memory, or the
write-ahead log when it is on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from offsets import BlockRef


BlockInfo = BlockRef
"""A received block as the tracker logs it and batches plan with (`offsets.BlockRef`)."""


@dataclass
class Block:
    """Records cut by the block generator or stored at once by `store_batch`."""

    block_id: str
    records: list[Any]
    metadata: Mapping[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


class MemoryBlockStore:
    """Keeps blocks' records in memory until their batch committed.

    Without a write-ahead log, blocks not yet processed are lost when the
    process dies: that is the documented guarantee of receivers without WAL."""

    def __init__(self) -> None:
        self._blocks: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def put(self, stream: str, block: Block) -> BlockInfo:
        with self._lock:
            self._blocks[block.block_id] = block.records
        return BlockInfo(block.block_id, stream, len(block.records), block.metadata)

    def get(self, info: BlockInfo) -> list[Any] | None:
        with self._lock:
            return self._blocks.get(info.block_id)

    def remove(self, infos: list[BlockInfo]) -> None:
        with self._lock:
            for info in infos:
                self._blocks.pop(info.block_id, None)

    def close(self) -> None:
        with self._lock:
            self._blocks.clear()
