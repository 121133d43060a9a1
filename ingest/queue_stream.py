"""`queue_stream`: batches handed in by the program itself, for tests and demos.

Each batch takes the next queued list of records (or all queued lists with
`one_at_a_time=False`). The records themselves are the batch's position
(`QueueItems`), so with a checkpoint they are in the intent log and a re-run
batch sees exactly the same records: records must then be JSON-serializable.
The resume point is `QueueItems(next_seq=n)`: the application queues the same
lists again after a restart, and the first n of them are skipped.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Iterable, TypeVar

from ingest.dataset import Dataset
from ingest.dstream import InputDStream
from offsets import Position, QueueItems

if TYPE_CHECKING:
    from ingest.context import StreamingContext

T = TypeVar("T")


class QueueInputDStream(InputDStream[T]):
    kind = "queue"

    def __init__(self, ssc: "StreamingContext", batches: Iterable[Iterable[T]] = (), *,
                 one_at_a_time: bool = True, default: Iterable[T] | None = None,
                 num_partitions: int = 1, name: str | None = None) -> None:
        super().__init__(ssc, name)
        self._queue: deque[list[T]] = deque(list(b) for b in batches)
        self._lock = threading.Lock()
        self._one_at_a_time = one_at_a_time
        self._default = None if default is None else list(default)
        self._num_partitions = max(1, num_partitions)
        self._consumed = 0  # queued lists taken so far, counted across restarts

    def push(self, records: Iterable[T]) -> None:
        """Queue one more batch of records (thread-safe; also after start)."""
        with self._lock:
            self._queue.append(list(records))

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def has_unplanned_data(self) -> bool:
        return self.pending() > 0

    def plan(self, time_ms: int) -> QueueItems:
        with self._lock:
            if not self._queue:
                records = list(self._default) if self._default is not None else []
            elif self._one_at_a_time:
                records = self._queue.popleft()
                self._consumed += 1
            else:
                records = [r for batch in self._queue for r in batch]
                self._consumed += len(self._queue)
                self._queue.clear()
        return QueueItems(tuple(records), self._consumed)

    def next_position(self, position: Position) -> QueueItems | None:
        return QueueItems((), position.next_seq) if isinstance(position, QueueItems) else None

    def restore(self, position: Position) -> None:
        """The application queued the same lists again: skip those that
        batches before the restart already took."""
        if not isinstance(position, QueueItems):
            return
        with self._lock:
            skip = position.next_seq
            for _ in range(min(skip, len(self._queue))):
                self._queue.popleft()
            self._consumed = skip

    def materialize(self, time_ms: int, position: Position) -> Dataset[T]:
        items = position.items if isinstance(position, QueueItems) else ()
        return Dataset.from_records(items, self._num_partitions, self.ssc.executor)
