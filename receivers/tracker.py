"""The received-block tracker: which blocks exist and which batch got them.

Blocks are added as receivers store them and allocated to batches when a batch
is planned. Allocation is idempotent: asking again for a batch time that was
already allocated returns the first allocation, so a batch re-run from the
intent log reads exactly the same blocks.

A batch's life here has three steps, each its own call:

1. `reserve(t)`: every block received so far goes to batch `t`, in memory
   only; `confirm(t, blocks)`, once the batch's intent is durable, journals the
   allocation. The journal never holds an allocation whose intent was not
   written first, so after a restart an allocation without intent or commit
   means the intent was lost, never a crash in between. (`allocate(t)` does
   both at once, for callers without an intent log);
2. `mark_processed(t)`: the batch's output committed; its source may be
   acknowledged. Nothing is forgotten: a state replay after a checkpoint
   fallback may still read the batch's blocks;
3. `clean_up(retain_from_ms)`: batches before the retention point are
   forgotten and their blocks returned, for the store to drop. Blocks not yet
   allocated are in flight and are never forgotten.

With a journal (the write-ahead log's `BlockLog`), every allocation, mark and
clean-up is written to it before it is applied (write-then-apply): if the
write fails, nothing changed. Storing a block and tracking it is one step
(`add`): the store runs under the tracker's lock, so a clean-up never sees a
block that is stored but not yet tracked.

Lock order: the tracker's lock, then whatever the journal or the store takes
(the write-ahead log's lock, the block store's lock). Nothing takes the
tracker's lock while holding one of those.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterable, Protocol

from receivers.block import BlockInfo


class Journal(Protocol):
    def allocated(self, time_ms: int, blocks: list[BlockInfo]) -> None: ...
    def processed(self, time_ms: int) -> None: ...
    def cleaned(self, times: list[int], blocks: list[BlockInfo]) -> None: ...


class UnknownBlocksError(KeyError):
    """`confirm` was given block ids that are not unallocated here."""

    def __init__(self, time_ms: int, block_ids: list[str]) -> None:
        super().__init__(time_ms, block_ids)
        self.time_ms = time_ms
        self.block_ids = block_ids


class ReceivedBlockTracker:
    def __init__(self, journal: Journal | None = None) -> None:
        self._lock = threading.Lock()
        self._journal = journal
        self._unallocated: deque[BlockInfo] = deque()
        self._allocated: dict[int, list[BlockInfo]] = {}
        self._processed: set[int] = set()
        self._unconfirmed: set[int] = set()  # reserved, not journalled yet
        self._last_allocated: int | None = None

    def add_block(self, info: BlockInfo) -> None:
        """Track a block that is already stored."""
        with self._lock:
            self._unallocated.append(info)

    def add(self, store: Callable[[], BlockInfo]) -> BlockInfo:
        """Store a block and track it, as one step: `store()` (which writes the
        block and returns its reference) runs under the tracker's lock, so no
        clean-up runs between the write and the tracking. If it raises,
        nothing is tracked."""
        with self._lock:
            info = store()
            self._unallocated.append(info)
            return info

    def has_unallocated(self) -> bool:
        with self._lock:
            return bool(self._unallocated)

    def reserve(self, time_ms: int) -> list[BlockInfo]:
        """Give every unallocated block to batch `time_ms`, in memory only (see
        `confirm`). Idempotent: a time already allocated gets its blocks again;
        a time older than the newest allocation gets nothing."""
        with self._lock:
            if time_ms in self._allocated:
                return list(self._allocated[time_ms])
            if self._last_allocated is not None and time_ms < self._last_allocated:
                return []
            blocks = list(self._unallocated)
            self._unallocated.clear()
            self._allocated[time_ms] = blocks
            self._unconfirmed.add(time_ms)
            self._last_allocated = time_ms
            return list(blocks)

    def confirm(self, time_ms: int, block_ids: Iterable[str]) -> list[BlockInfo]:
        """Batch `time_ms`'s intent, naming `block_ids`, is durable: journal its
        allocation. A reserved batch is journalled as reserved; an already
        journalled one is left alone; a batch unknown here (its intent was
        written, then the process died before this call) takes exactly those
        blocks out of the unallocated ones. Raises `UnknownBlocksError` when
        some of them are not tracked. Returns the batch's blocks."""
        ids = list(block_ids)
        with self._lock:
            if time_ms in self._allocated:
                if time_ms in self._unconfirmed:
                    if self._journal is not None:
                        self._journal.allocated(time_ms, self._allocated[time_ms])
                    self._unconfirmed.discard(time_ms)
                return list(self._allocated[time_ms])
            by_id = {b.block_id: b for b in self._unallocated}
            missing = [i for i in ids if i not in by_id]
            if missing:
                raise UnknownBlocksError(time_ms, missing)
            blocks = [by_id[i] for i in ids]
            if self._journal is not None:
                self._journal.allocated(time_ms, blocks)
            taken = set(ids)
            self._unallocated = deque(b for b in self._unallocated if b.block_id not in taken)
            self._allocated[time_ms] = blocks
            if self._last_allocated is None or time_ms > self._last_allocated:
                self._last_allocated = time_ms
            return list(blocks)

    def allocate(self, time_ms: int) -> list[BlockInfo]:
        """`reserve(t)` and `confirm` in one step (journalled at once), for
        callers that keep no intent log of their own."""
        blocks = self.reserve(time_ms)
        return self.confirm(time_ms, [b.block_id for b in blocks])

    def blocks_of_batch(self, time_ms: int) -> list[BlockInfo]:
        with self._lock:
            return list(self._allocated.get(time_ms, ()))

    def mark_processed(self, time_ms: int) -> list[BlockInfo]:
        """Record that batch `time_ms`'s output committed (journalled first).
        Nothing is forgotten or deleted. Returns the batch's blocks the first
        time, [] when it was already marked or has no allocation here."""
        with self._lock:
            if time_ms in self._processed or time_ms not in self._allocated:
                return []
            if self._journal is not None:
                self._journal.processed(time_ms)
            self._processed.add(time_ms)
            return list(self._allocated[time_ms])

    def is_processed(self, time_ms: int) -> bool:
        with self._lock:
            return time_ms in self._processed

    def clean_up(self, retain_from_ms: int) -> list[BlockInfo]:
        """Forget the batches with time < `retain_from_ms` (journalled first) and
        return their blocks. Allocations at or after it and blocks not yet
        allocated are kept."""
        with self._lock:
            times = sorted(t for t in self._allocated if t < retain_from_ms)
            if not times:
                return []
            blocks = [b for t in times for b in self._allocated[t]]
            if self._journal is not None:
                self._journal.cleaned(times, blocks)
            for t in times:
                del self._allocated[t]
                self._processed.discard(t)
                self._unconfirmed.discard(t)
            return blocks

    def cleanup(self, up_to_ms: int) -> list[BlockInfo]:
        """Forget batches at or before `up_to_ms`: `clean_up(up_to_ms + 1)`.
        Kept for callers that acknowledge and forget in one step."""
        return self.clean_up(up_to_ms + 1)

    def pending(self) -> list[BlockInfo]:
        """Blocks whose batch has not committed: unallocated, then allocated to
        a batch not yet marked processed (what losing a block would cost)."""
        with self._lock:
            return list(self._unallocated) + [b for t, blocks in sorted(self._allocated.items())
                                              if t not in self._processed for b in blocks]

    def tracked(self) -> list[BlockInfo]:
        """Every block not cleaned up yet: unallocated, then allocated."""
        with self._lock:
            return list(self._unallocated) + [b for blocks in self._allocated.values() for b in blocks]

    def restore(self, unallocated: list[BlockInfo], allocated: dict[int, list[BlockInfo]],
                processed: Iterable[int] = ()) -> None:
        """Replace the state with what a replayed journal says."""
        with self._lock:
            self._unallocated = deque(unallocated)
            self._allocated = {t: list(b) for t, b in allocated.items()}
            self._processed = {t for t in processed if t in self._allocated}
            self._unconfirmed = set()
            self._last_allocated = max(allocated) if allocated else None

    def _state_unlocked(self) -> tuple[list[BlockInfo], dict[int, list[BlockInfo]]]:
        """(unallocated, allocated) for a journal hook, which runs under the lock."""
        return list(self._unallocated), self._allocated
