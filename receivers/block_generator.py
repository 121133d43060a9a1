"""The block generator: buffers records from `Receiver.store(item)` and cuts
them into a block every block interval.

Two threads, owned and joined here: a cutter that swaps the buffer every
interval and queues the block, and a pusher that hands queued blocks to the
store. Both the buffer and the queue are bounded: when the store falls behind,
the queue fills, the buffer fills, and `add()` blocks the receiver's thread,
which is the backpressure a receiver feels instead of memory growing without
limit. A failing store is retried, then reported to the supervisor, which
stops the job rather than dropping data.

Stopping with `drain` stores every buffered record before returning, within
the timeout; whatever could not be stored (no drain, the timeout passed, or
the store failed) is counted in `records_dropped` and logged with its count.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

from ingest.errors import StateError
from receivers.block import Block
from receivers.rate_limiter import RateLimiter

log = logging.getLogger("receivers.block_generator")

PUSH_RETRIES = 3


class BlockGenerator:
    def __init__(
        self,
        stream: str,
        block_interval_ms: int,
        on_block: Callable[[Block], None],
        on_error: Callable[[str, BaseException], None],
        *,
        max_buffered_records: int = 10_000,
        max_queued_blocks: int = 10,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.stream = stream
        self._interval = block_interval_ms / 1000.0
        self._on_block = on_block
        self._on_error = on_error
        self._max_buffered = max_buffered_records
        self._rate = rate_limiter or RateLimiter(None)
        self._queue: queue.Queue[Block] = queue.Queue(maxsize=max_queued_blocks)
        self._buffer: list[Any] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._accepting = False
        self._cutting = False
        self._pushing = False
        self._abandon = False  # stop pushing queued blocks: they are dropped
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.blocks_pushed = 0
        self.records_pushed = 0
        self.records_dropped = 0

    def new_block_id(self) -> str:
        return f"{self.stream}-{time.time_ns() // 1_000_000}-{next(self._seq)}"

    def start(self) -> None:
        self._accepting = self._cutting = self._pushing = True
        self._threads = [
            threading.Thread(target=self._cut_loop, name=f"block-cutter-{self.stream}"),
            threading.Thread(target=self._push_loop, name=f"block-pusher-{self.stream}"),
        ]
        for t in self._threads:
            t.start()

    def _not_accepting(self) -> bool:
        return not self._accepting

    def add(self, item: Any) -> None:
        """Buffer one record; blocks while the rate limit or the bounded buffer says so."""
        if not self._rate.acquire(1, self._not_accepting):
            raise StateError(f"stream {self.stream}: store() called after the receiver was stopped; a receiving "
                             "loop must return once stop_event is set")
        with self._cond:
            while len(self._buffer) >= self._max_buffered and self._accepting:
                self._cond.wait(0.1)
            if not self._accepting:
                raise StateError(f"stream {self.stream}: store() called after the receiver was stopped; a "
                                 "receiving loop must return once stop_event is set")
            self._buffer.append(item)

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def _cut(self) -> None:
        with self._cond:
            if not self._buffer:
                return
            records, self._buffer = self._buffer, []
            self._cond.notify_all()
        block = Block(self.new_block_id(), records)
        while True:  # blocks while the queue is full: that is the backpressure
            try:
                self._queue.put(block, timeout=0.1)
                return
            except queue.Full:
                if not self._pushing:
                    self._dropped(len(records))
                    return

    def _cut_loop(self) -> None:
        next_cut = time.monotonic() + self._interval
        while self._cutting:
            delay = next_cut - time.monotonic()
            if delay > 0:
                self._stopped.wait(min(delay, 0.05))
                continue
            next_cut += self._interval
            self._cut()
        self._cut()  # the last records after accepting stopped

    def _push_loop(self) -> None:
        while not self._abandon:
            try:
                block = self._queue.get(timeout=0.05)
            except queue.Empty:
                if not self._pushing:
                    return
                continue
            try:
                if self._abandon:
                    self._dropped(len(block.records))
                    return
                self._push(block)
            finally:
                self._queue.task_done()

    def _dropped(self, records: int) -> None:
        with self._cond:
            self.records_dropped += records

    def _push(self, block: Block) -> None:
        delay = 0.1
        for attempt in range(1, PUSH_RETRIES + 1):
            try:
                self._on_block(block)
                self.blocks_pushed += 1
                self.records_pushed += len(block.records)
                return
            except Exception as exc:  # noqa: BLE001
                if attempt == PUSH_RETRIES:
                    self._dropped(len(block.records))
                    self._on_error(
                        f"stream {self.stream}: storing block {block.block_id} ({len(block.records)} records) "
                        f"failed {PUSH_RETRIES} times: {type(exc).__name__}: {exc}", exc)
                    return
                log.warning("stream %s: storing block %s failed (%s), retrying in %.1f s",
                            self.stream, block.block_id, exc, delay)
                time.sleep(delay)
                delay *= 2

    def _pending(self) -> bool:
        """Blocks queued or being stored (a queued block counts until task_done)."""
        with self._queue.all_tasks_done:
            return self._queue.unfinished_tasks > 0

    def stop(self, drain: bool = True, timeout: float | None = 10.0) -> None:
        """Stop accepting records; with `drain`, cut and store everything
        buffered before returning (within `timeout`). Joins both threads.
        What was not stored is counted in `records_dropped` and logged."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        self._cutting = False
        if not drain:
            self._abandon = True
            self._pushing = False
        self._stopped.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._threads:
            self._threads[0].join(_left(deadline))
        while drain and self._pending() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)
        if self._pending():
            self._abandon = True
        self._pushing = False
        for thread in self._threads:  # a cutter waiting on a full queue gives up now that pushing stopped
            thread.join(None if deadline is None else max(0.5, deadline - time.monotonic()))
        while True:
            try:
                self._dropped(len(self._queue.get_nowait().records))
            except queue.Empty:
                break
            self._queue.task_done()
        if self.records_dropped:
            log.warning("stream %s: %d received records were not stored (%s)", self.stream, self.records_dropped,
                        "the stop was not graceful" if not drain else "the stop timed out or storing failed")
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("stream %s: %s still storing a block after the stop timeout", self.stream, stuck)


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
