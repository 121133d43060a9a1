"""Window operations: results over the last `window` seconds, every `slide` seconds.

`WindowedDStream` keeps the parent's records of the batches inside the window
as its state (snapshotted with the serde, so a restarted job has the same
windows). `ReducedWindowedDStream` implements `reduce_by_key_and_window` with an
inverse function: it keeps a running aggregate per key plus each batch's
per-key aggregate, adds the batch that enters and subtracts (with the inverse
function) the batch that leaves, so each slide costs the size of two batches,
not of the whole window. It also counts, per key, the batches in the window
that hold it: a key leaves the state exactly when its last batch leaves the
window, so the result always equals reducing the whole window, and the state
stays bounded. `filter_fn` only filters the output.

Durations must be multiples of the parent's slide interval (the batch interval
for ordinary streams); a windowed stream's output runs only at times that are
multiples of its slide.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from ingest.dataset import Dataset
from ingest.dstream import DStream
from ingest.errors import ConfigError
from ingest.state import SNAPSHOT_VERSION, StatefulDStream, private_copy

if TYPE_CHECKING:
    from ingest.context import StreamingContext


def window_ms(parent: DStream[Any], what: str, seconds: float | None, default_ms: int) -> int:
    if seconds is None:
        return default_ms
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise ConfigError(f"{what} must be a positive number of seconds, got {seconds!r}")
    ms = int(round(seconds * 1000))
    if ms % parent.slide_ms != 0:
        raise ConfigError(f"{what} ({seconds} s) must be a multiple of the parent stream's interval "
                          f"({parent.slide_ms / 1000} s), e.g. {parent.slide_ms * max(1, round(ms / parent.slide_ms)) / 1000} s")
    return ms


class _WholeStateDStream(StatefulDStream[Any]):
    """State kept as one value: `update` builds the pending value, a commit
    makes it the committed one, an abort drops it."""

    _committed: Any
    _pending: Any = None
    _pending_time: int | None = None

    def commit_batch(self, time_ms: int) -> None:
        if self._pending is not None:
            self._committed = self._pending
        self._pending, self._pending_time = None, None

    def abort_batch(self, time_ms: int) -> None:
        self._pending, self._pending_time = None, None


class WindowedDStream(_WholeStateDStream):
    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], window_duration: float,
                 slide_duration: float | None, *, name: str | None = None, serde: Any | None = None) -> None:
        self.window_ms = window_ms(parent, "window duration", window_duration, 0)
        slide = window_ms(parent, "slide duration", slide_duration, parent.slide_ms)
        super().__init__(ssc, [parent], "window", name, serde)
        self.slide_ms = slide
        self._committed: deque[tuple[int, list[list[Any]]]] = deque()
        self._pending: deque[tuple[int, list[list[Any]]]] | None = None
        self._pending_time: int | None = None

    def update(self, time_ms: int) -> None:
        if self._pending_time == time_ms:
            return
        entries = deque(self._committed)
        parent = self.parents[0]
        if parent.is_time_valid(time_ms):
            entries.append((time_ms, parent.get_or_compute(time_ms).glom()))
        while entries and entries[0][0] <= time_ms - self.window_ms:
            entries.popleft()
        self._pending, self._pending_time = entries, time_ms

    def compute(self, time_ms: int) -> Dataset[Any]:
        self.update(time_ms)
        assert self._pending is not None
        return Dataset.from_partitions([p for _, parts in self._pending for p in parts], self.ssc.executor)

    def pending_snapshot(self) -> bytes:
        entries = self._pending if self._pending is not None else self._committed
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "window",
                                 "entries": [[t, parts] for t, parts in entries]})

    def restore(self, full: bytes | None, deltas: list[bytes]) -> None:
        entries: deque[tuple[int, list[list[Any]]]] = deque()
        if full is not None:
            for t, parts in self._load(full)["entries"]:
                entries.append((int(t), [list(p) for p in parts]))
        self._committed = entries
        self.abort_batch(0)

    def state_size(self) -> int:
        return sum(len(p) for _, parts in self._committed for p in parts)


class ReducedWindowedDStream(_WholeStateDStream):
    """`reduce_by_key_and_window` with an inverse function."""

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], reduce_fn: Callable[[Any, Any], Any],
                 inv_fn: Callable[[Any, Any], Any], window_duration: float, slide_duration: float | None, *,
                 num_partitions: int | None = None, filter_fn: Callable[[tuple[Any, Any]], bool] | None = None,
                 name: str | None = None, serde: Any | None = None) -> None:
        self.window_ms = window_ms(parent, "window duration", window_duration, 0)
        slide = window_ms(parent, "slide duration", slide_duration, parent.slide_ms)
        super().__init__(ssc, [parent], "reduce_by_key_and_window", name, serde)
        self.slide_ms = slide
        self._reduce, self._inv, self._filter = reduce_fn, inv_fn, filter_fn
        self._num_partitions = num_partitions
        # (aggregate per key, in-window batch count per key, the window's per-batch aggregates)
        self._committed: tuple[dict[Any, Any], dict[Any, int], deque[tuple[int, dict[Any, Any]]]] = (
            {}, {}, deque())
        self._pending: tuple[dict[Any, Any], dict[Any, int], deque[tuple[int, dict[Any, Any]]]] | None = None
        self._pending_time: int | None = None

    def update(self, time_ms: int) -> None:
        if self._pending_time == time_ms:
            return
        agg = dict(self._committed[0])
        counts = dict(self._committed[1])
        batches = deque(self._committed[2])
        parent = self.parents[0]
        reduce_fn, inv_fn = self._reduce, self._inv
        # The functions may change their first argument in place (as
        # `list.extend` does). So that neither the committed aggregate (which a
        # retried batch starts from, and an earlier batch output) nor a batch's
        # own value (which the inverse takes out later) changes with it, an
        # aggregate is this update's private copy before either function sees it.
        own: set[Any] = set()

        def owned(k: Any) -> Any:
            if k not in own:
                agg[k] = private_copy(agg[k])
                own.add(k)
            return agg[k]

        if parent.is_time_valid(time_ms):
            new = dict(parent.get_or_compute(time_ms).reduce_by_key(reduce_fn, self._num_partitions).collect())
            batches.append((time_ms, new))
            for k, v in new.items():
                if k in agg:
                    agg[k] = reduce_fn(owned(k), v)
                else:
                    agg[k] = private_copy(v)
                    own.add(k)
                counts[k] = counts.get(k, 0) + 1
        while batches and batches[0][0] <= time_ms - self.window_ms:
            _, old = batches.popleft()
            for k, v in old.items():
                if counts[k] == 1:
                    del agg[k], counts[k]
                else:
                    agg[k] = inv_fn(owned(k), v)
                    counts[k] -= 1
        self._pending, self._pending_time = (agg, counts, batches), time_ms

    def compute(self, time_ms: int) -> Dataset[tuple[Any, Any]]:
        self.update(time_ms)
        assert self._pending is not None
        items = list(self._pending[0].items())
        if self._filter is not None:
            items = [kv for kv in items if self._filter(kv)]
        return Dataset.from_records(items, 1, self.ssc.executor)

    def pending_snapshot(self) -> bytes:
        agg, counts, batches = self._pending if self._pending is not None else self._committed
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "reduced_window", "agg": list(agg.items()),
                                 "counts": list(counts.items()),
                                 "batches": [[t, list(b.items())] for t, b in batches]})

    def restore(self, full: bytes | None, deltas: list[bytes]) -> None:
        if full is None:
            self._committed = ({}, {}, deque())
        else:
            obj = self._load(full)
            self._committed = (dict(obj["agg"]), {k: int(n) for k, n in obj["counts"]},
                               deque((int(t), dict(b)) for t, b in obj["batches"]))
        self.abort_batch(0)

    def state_size(self) -> int:
        return len(self._committed[0])
