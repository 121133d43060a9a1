"""The received-block tracker: which blocks exist and which batch got them.

Blocks are added as receivers store them and allocated to batches when a batch
is planned. Allocation is idempotent: asking again for a batch time that was
already allocated returns the first allocation, so a batch re-run from the
intent log reads exactly the same blocks.
"""

from __future__ import annotations

import threading
from collections import deque

from receivers.block import BlockInfo


class ReceivedBlockTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unallocated: deque[BlockInfo] = deque()
        self._allocated: dict[int, list[BlockInfo]] = {}
        self._last_allocated: int | None = None

    def add_block(self, info: BlockInfo) -> None:
        with self._lock:
            self._unallocated.append(info)

    def has_unallocated(self) -> bool:
        with self._lock:
            return bool(self._unallocated)

    def allocate(self, time_ms: int) -> list[BlockInfo]:
        with self._lock:
            if time_ms in self._allocated:
                return list(self._allocated[time_ms])
            if self._last_allocated is not None and time_ms < self._last_allocated:
                return []
            blocks = list(self._unallocated)
            self._unallocated.clear()
            self._allocated[time_ms] = blocks
            self._last_allocated = time_ms
            return list(blocks)

    def blocks_of_batch(self, time_ms: int) -> list[BlockInfo]:
        with self._lock:
            return list(self._allocated.get(time_ms, ()))

    def cleanup(self, up_to_ms: int) -> list[BlockInfo]:
        """Forget batches at or before `up_to_ms`; returns their blocks."""
        with self._lock:
            times = [t for t in self._allocated if t <= up_to_ms]
            out = [b for t in times for b in self._allocated.pop(t)]
            return out
