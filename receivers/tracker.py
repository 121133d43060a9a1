"""The received-block tracker: which blocks exist and which batch got them.

Blocks are added as receivers store them and allocated to batches when a batch
is planned. Allocation is idempotent: asking again for a batch time that was
already allocated returns the first allocation, so a batch re-run from the
intent log reads exactly the same blocks.

With a journal (the write-ahead log's `BlockLog`), every allocation and
clean-up is written to it before it is applied (write-then-apply): if the
write fails, nothing changed.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from receivers.block import BlockInfo


class Journal(Protocol):
    def allocated(self, time_ms: int, blocks: list[BlockInfo]) -> None: ...
    def cleaned(self, times: list[int], blocks: list[BlockInfo]) -> None: ...


class ReceivedBlockTracker:
    def __init__(self, journal: Journal | None = None) -> None:
        self._lock = threading.Lock()
        self._journal = journal
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
            if self._journal is not None:
                self._journal.allocated(time_ms, blocks)
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
            times = sorted(t for t in self._allocated if t <= up_to_ms)
            if not times:
                return []
            blocks = [b for t in times for b in self._allocated[t]]
            if self._journal is not None:
                self._journal.cleaned(times, blocks)
            for t in times:
                del self._allocated[t]
            return blocks

    def mark_processed(self, time_ms: int) -> None:
        """Batch `time_ms` committed. Its blocks stay until `clean_up` passes it."""

    def clean_up(self, retain_from_ms: int) -> list[BlockInfo]:
        """Forget the batches before `retain_from_ms`; returns their blocks.
        Unallocated blocks (in flight) are never forgotten here."""
        return self.cleanup(retain_from_ms - 1)

    def tracked(self) -> list[BlockInfo]:
        """Every block not cleaned up yet: unallocated, then allocated."""
        with self._lock:
            return list(self._unallocated) + [b for blocks in self._allocated.values() for b in blocks]

    def restore(self, unallocated: list[BlockInfo], allocated: dict[int, list[BlockInfo]]) -> None:
        """Replace the state with what a replayed journal says."""
        with self._lock:
            self._unallocated = deque(unallocated)
            self._allocated = {t: list(b) for t, b in allocated.items()}
            self._last_allocated = max(allocated) if allocated else None
