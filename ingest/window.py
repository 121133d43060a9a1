"""Window operations: results over the last `window` seconds, every `slide` seconds.

`WindowedDStream` (`window()`) keeps the parent's records of the batches
inside the window as its state, on the driver (snapshotted with the serde, so
a restarted job has the same windows). `ReducedWindowedDStream` implements
`reduce_by_key_and_window` (and so `reduce_by_window`, `count_by_window` and
`count_by_value_and_window`) as keyed state: per key its per-batch values
still in the window and, with an inverse function, its running aggregate.
Each batch adds the values that enter and takes out those that leave (with the
inverse function, when there is one), and a key leaves the state exactly when
its last batch leaves the window, so the result always equals reducing the
whole window and the state stays bounded. Being keyed state, it lives on the
workers of a cluster that keeps state, like `update_state_by_key`'s
(`ingest.state_store`). `filter_fn` only filters the output.

Durations must be multiples of the parent's slide interval (the batch interval
for ordinary streams); a windowed stream's output runs only at times that are
multiples of its slide.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ingest.dataset import Dataset
from ingest.dstream import DStream
from ingest.errors import ConfigError, StateError
from ingest.state import SNAPSHOT_VERSION, KeyedStateDStream, StatefulDStream, _Changes, private_copy

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


WINDOW_FORMAT = 2
"""Layout of `reduce_by_key_and_window`'s state files. 1: the whole window as
one value (aggregates, in-window batch counts, per-batch aggregates), full
snapshots only. 2: per key its aggregate and its values of the batches in the
window, as key columns, with deltas (the keys a batch changed) between full
snapshots. Format 1 is still read, and so is a `window` file of earlier
versions (the window's records) for the operator without an inverse function,
which was `window(...)` followed by a reduce; a newer format is refused."""


class ReducedWindowedDStream(KeyedStateDStream[tuple[Any, Any]]):
    """`reduce_by_key_and_window`, with or without an inverse function.

    Keyed state like `update_state_by_key`'s, split into partitions by key, so
    that on a cluster that keeps state the window lives on the workers
    (`ingest.state_store`) and only the batch's records go to them. The state
    of a key is `(aggregate, ((batch time, batch value), ...))`: its running
    aggregate (None without an inverse function) and its per-batch values
    still in the window, oldest first. Each batch a partition's task adds the
    entering batch's values, takes the leaving ones out (with the inverse
    function, when there is one) and drops a key when its last batch leaves
    the window; at slide times it emits every key's aggregate (without an
    inverse, its in-window values reduced then). Finding the leaving values
    looks at every key of the partition (as Spark's cogroup of the window's
    state does), on the worker.

    Without an inverse function the operator is named `window` (its state id
    `window-N`, as when it was `window(...)` followed by a reduce), and a
    `window` state file of earlier versions (the window's records) is read
    into it: `old_record` turns such a record into its `(key, value)` pair."""

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], reduce_fn: Callable[[Any, Any], Any],
                 inv_fn: Callable[[Any, Any], Any] | None, window_duration: float, slide_duration: float | None, *,
                 num_partitions: int | None = None, filter_fn: Callable[[tuple[Any, Any]], bool] | None = None,
                 name: str | None = None, serde: Any | None = None,
                 old_record: Callable[[Any], tuple[Any, Any]] | None = None) -> None:
        self.window_ms = window_ms(parent, "window duration", window_duration, 0)
        slide = window_ms(parent, "slide duration", slide_duration, parent.slide_ms)
        super().__init__(ssc, parent, "reduce_by_key_and_window" if inv_fn is not None else "window",
                         num_partitions=num_partitions, initial_state=None, name=name, serde=serde)
        self.slide_ms = slide
        self._reduce, self._inv, self._filter = reduce_fn, inv_fn, filter_fn
        self._old_record = old_record

    def _advances_at(self, time_ms: int) -> bool:
        # Batches enter and leave the window at the parent's times (the window
        # is a multiple of its slide), and the stream's own times are among them.
        return self.parents[0].is_time_valid(time_ms)

    def _task(self) -> Callable[[tuple[int, dict[Any, Any], list[Any], int]], tuple[_Changes, list[Any]]]:
        reduce_fn, inv_fn, keep = self._reduce, self._inv, self._filter
        window, slide, zero = self.window_ms, self.slide_ms, self.ssc._graph.zero_time_ms

        def run(task: tuple[int, dict[Any, Any], list[Any], int]) -> tuple[_Changes, list[Any]]:
            _i, state, records, t = task
            entering: dict[Any, Any] = {}
            for k, v in records:
                entering[k] = reduce_fn(entering[k], v) if k in entering else v
            changes = _Changes()
            sets, removes = changes.sets, changes.removes
            # The functions may change their first argument in place (as
            # `list.extend` does): an aggregate they get is always this task's
            # own copy, never the committed one (a retried batch starts from
            # it, an earlier output holds it) nor a batch's value (the inverse
            # takes it out later).
            for k, v in entering.items():
                old = state.get(k)
                if inv_fn is None:
                    sets[k] = (None, ((t, v),) if old is None else old[1] + ((t, v),))
                elif old is None:
                    sets[k] = (private_copy(v), ((t, v),))
                else:
                    sets[k] = (reduce_fn(private_copy(old[0]), v), old[1] + ((t, v),))
            cutoff = t - window
            for k, (agg, hist) in list(sets.items()):
                if hist[0][0] <= cutoff:
                    sets[k] = _take_out(inv_fn, agg, hist, cutoff)
            # One pass at C speed finds the keys with a batch leaving (most have none).
            for k in [k for k, value in state.items() if value[1][0][0] <= cutoff]:
                if k in entering:
                    continue
                agg, hist = state[k]
                if hist[-1][0] <= cutoff:  # its last batch leaves the window
                    removes.add(k)
                else:
                    sets[k] = _take_out(inv_fn, None if inv_fn is None else private_copy(agg), hist, cutoff)
            if zero is None or t <= zero or (t - zero) % slide != 0:
                return changes, []
            # Keys in the state's order, then the new ones.
            out = [(k, sets[k] if k in sets else value) for k, value in state.items() if k not in removes]
            out.extend((k, value) for k, value in sets.items() if k not in state)
            if inv_fn is None:
                out = [(k, _reduce_values(reduce_fn, hist)) for k, (_agg, hist) in out]
            else:
                out = [(k, agg) for k, (agg, _hist) in out]
            if keep is not None:
                out = [kv for kv in out if keep(kv)]
            return changes, out

        return run

    # Snapshot columns: keys, aggregates, and per key its in-window batch values
    # as [time, value] lists (one JSON array each, not a tuple object).
    def _columns(self, items: Iterable[tuple[Any, Any]]) -> dict[str, list[Any]]:
        keys, aggs, hists = [], [], []
        for k, (agg, hist) in items:
            keys.append(k)
            aggs.append(agg)
            hists.append([[t, v] for t, v in hist])
        return {"keys": keys, "aggs": aggs, "hist": hists}

    def _from_columns(self, obj: dict[str, Any], prefix: str = "") -> list[tuple[Any, Any]]:
        found = obj.get("format", 1)
        if found == 1 and not prefix and obj.get("kind") == "reduced_window":
            return _from_whole_window(obj)
        if found == 1 and not prefix and obj.get("kind") == "window" and self._inv is None:
            return _from_window_records(obj, self._reduce, self._old_record or _as_pair)
        if found != WINDOW_FORMAT:
            raise StateError(
                f"the state of {self.describe()} is in format {found!r} of reduce_by_key_and_window state, and "
                f"this version of ingest reads formats 1 and {WINDOW_FORMAT}: run the version of ingest that wrote "
                "the checkpoint, or start from a new checkpoint directory")
        return [(k, (agg, tuple((int(t), v) for t, v in hist)))
                for k, agg, hist in zip(obj[prefix + "keys"], obj[prefix + "aggs"], obj[prefix + "hist"])]

    def pending_snapshot(self) -> bytes:
        self._snapshot_taken = True
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "reduced_window", "format": WINDOW_FORMAT,
                                 **self._columns(self._pending_items())})

    def pending_delta(self) -> bytes | None:
        # A batch changes only the keys of its entering and leaving batches, so
        # a delta is about the size of two batches (a full snapshot, the whole
        # window, is read from the workers once every `full_snapshot_every`).
        self._snapshot_taken = True
        pending = self._pending or []
        columns = self._columns(kv for c in pending for kv in c.sets.items())
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "reduced_window_delta", "format": WINDOW_FORMAT,
                                 "del": [k for c in pending for k in c.removes],
                                 **{f"set_{name}": column for name, column in columns.items()}})


def _take_out(inv_fn: Callable[[Any, Any], Any] | None, agg: Any, hist: tuple[tuple[int, Any], ...], cutoff: int
              ) -> tuple[Any, tuple[tuple[int, Any], ...]]:
    """A key's state after its batches up to `cutoff` left the window (`agg`
    is the caller's own copy; at least one batch stays)."""
    n = 0
    while hist[n][0] <= cutoff:
        if inv_fn is not None:
            agg = inv_fn(agg, hist[n][1])
        n += 1
    return agg, hist[n:]


def _reduce_values(reduce_fn: Callable[[Any, Any], Any], hist: tuple[tuple[int, Any], ...]) -> Any:
    """A key's in-window values reduced, oldest first, into a copy of the first
    (the function may change it in place; the values stay the state's)."""
    agg = private_copy(hist[0][1])
    for _t, v in hist[1:]:
        agg = reduce_fn(agg, v)
    return agg


def _from_whole_window(obj: dict[str, Any]) -> list[tuple[Any, Any]]:
    """Format 1 (the window as one value) as keyed state: each key's values
    come from the per-batch aggregates that hold it, oldest first."""
    hists: dict[Any, list[tuple[int, Any]]] = {}
    for t, batch in obj["batches"]:
        for k, v in batch:
            hists.setdefault(k, []).append((int(t), v))
    return [(k, (agg, tuple(hists.get(k, ())))) for k, agg in obj["agg"]]


def _as_pair(record: Any) -> tuple[Any, Any]:
    key, value = record
    return key, value


def _from_window_records(obj: dict[str, Any], reduce_fn: Callable[[Any, Any], Any],
                         as_pair: Callable[[Any], tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """A `window` file of earlier versions (each in-window batch's records) as
    keyed state without an inverse: per key, each batch's values reduced."""
    hists: dict[Any, list[tuple[int, Any]]] = {}
    for t, parts in obj["entries"]:
        batch: dict[Any, Any] = {}
        for part in parts:
            for record in part:
                k, v = as_pair(record)
                batch[k] = reduce_fn(batch[k], v) if k in batch else v
        for k, v in batch.items():
            hists.setdefault(k, []).append((int(t), v))
    return [(k, (None, tuple(hist))) for k, hist in hists.items()]
