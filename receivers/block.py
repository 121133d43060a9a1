"""Blocks: the unit in which received records are stored and handed to batches.

`BlockInfo` is the plain-data description the tracker logs and batches plan
with; the records themselves live in a `BlockStore` (memory, or the
write-ahead log when it is on).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class BlockInfo:
    block_id: str
    stream: str
    num_records: int
    metadata: Mapping[str, Any] | None = None
    """Source positions covered by the block (e.g. Kafka offsets), plain data."""
    wal_handle: Mapping[str, Any] | None = None
    """Where the block's records are in the write-ahead log, if it is on."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.block_id, "stream": self.stream, "records": self.num_records}
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        if self.wal_handle is not None:
            out["wal"] = dict(self.wal_handle)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BlockInfo":
        return cls(d["id"], d["stream"], int(d["records"]), d.get("metadata"), d.get("wal"))


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
