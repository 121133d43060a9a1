"""Window operations: results over the last `window` seconds, every `slide` seconds.

Both are keyed state (`ingest.state.KeyedStateDStream`), so on a cluster that
keeps state their windows live on the workers (`ingest.state_store`), and a
checkpoint stores deltas between full snapshots. `WindowedDStream`
(`window()`) keeps the slices of the window (one per batch and parent
partition) as its keys. `ReducedWindowedDStream` implements
`reduce_by_key_and_window` (and so `reduce_by_window`, `count_by_window` and
`count_by_value_and_window`): per key its per-batch values still in the window
and, with an inverse function, its running aggregate. Each batch adds the
values that enter and takes out those that leave (with the inverse function,
when there is one), and a key leaves the state exactly when its last batch
leaves the window, so the result always equals reducing the whole window and
the state stays bounded. `filter_fn` only filters the output.

Durations must be multiples of the parent's slide interval (the batch interval
for ordinary streams); a windowed stream's output runs only at times that are
multiples of its slide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ingest.dataset import Dataset, Partition, portable_hash
from ingest.dstream import DStream
from ingest.errors import ConfigError, IngestError, StateError
from ingest.state import (SNAPSHOT_VERSION, KeyedStateDStream, _apply_changes, _Changes, _is_missing, _overlay,
                          private_copy)
from ingest.state_store import ReadTask, read_resident

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


class WindowSliceLostError(IngestError):
    """A partition of `window()`'s records is on no live worker (its worker
    died during the batch): the batch attempt fails, and its retry sends the
    partition again from the last commit."""


class WindowedDStream(KeyedStateDStream[Any]):
    """`window()`: the records of the batches in the window.

    Keyed state whose keys are the window's slices, `(batch time, parent
    partition)`, and whose values are their records, spread over the state
    partitions by key: so on a cluster that keeps state the slices live on
    the workers (`ingest.state_store`) like keyed state, each batch's task
    adds the entering slices and drops the leaving ones there, and the
    window's dataset is one partition per state partition that reads its
    slices on the worker holding them (only the batch's records go to the
    workers, and no record of the window comes back unless an output asks).
    Elsewhere the slices are in the driver, as keyed state is. Snapshots are
    keyed too: a delta is the entering slices and the keys of the leaving ones
    (format 2); the `window` file of earlier versions (every in-window
    batch's partitions) is still read."""

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], window_duration: float,
                 slide_duration: float | None, *, name: str | None = None, serde: Any | None = None) -> None:
        self.window_ms = window_ms(parent, "window duration", window_duration, 0)
        slide = window_ms(parent, "slide duration", slide_duration, parent.slide_ms)
        super().__init__(ssc, parent, "window", num_partitions=None, initial_state=None, name=name, serde=serde)
        self.slide_ms = slide

    def _advances_at(self, time_ms: int) -> bool:
        return self.parents[0].is_time_valid(time_ms)

    def _batch_records(self, time_ms: int) -> list[list[Any]]:
        n = self.num_partitions
        out: list[list[Any]] = [[] for _ in range(n)]
        for j, part in enumerate(self._parent_dataset(time_ms).glom()):
            if part:
                out[portable_hash((time_ms, j)) % n].append(((time_ms, j), list(part)))
        return out

    def _task(self) -> Callable[[tuple[int, dict[Any, Any], list[Any], int]], tuple[_Changes, list[Any]]]:
        window = self.window_ms

        def run(task: tuple[int, dict[Any, Any], list[Any], int]) -> tuple[_Changes, list[Any]]:
            _i, state, slices, t = task
            changes = _Changes()
            changes.sets.update(slices)
            cutoff = t - window
            changes.removes.update(key for key in state if key[0] <= cutoff)
            return changes, []

        return run

    def compute(self, time_ms: int) -> Dataset[Any]:
        self.update(time_ms)
        if self._resident:
            new = self._pending_version if self._pending is not None else None
            return Dataset([Partition(WindowSlices(self._token, i, self._base_version, new, key, self.describe()))
                            for i, key in enumerate(self._affinity())], self.ssc.executor)
        parts = []
        for i, part in enumerate(self._committed or ()):
            changes = self._pending[i] if self._pending is not None else _Changes()
            parts.append([r for _, records in _overlay(part, changes) for r in records])
        return Dataset.from_partitions(parts, self.ssc.executor)

    def _in_update_order(self, part: dict[Any, Any]) -> dict[Any, Any]:
        return dict(sorted(part.items()))  # slices oldest first, whatever partitions they came from

    def _from_columns(self, obj: dict[str, Any], prefix: str = "") -> list[tuple[Any, Any]]:
        found = obj.get("format", 1)
        if found == 1 and not prefix and obj.get("kind") == "window":
            return [((int(t), j), list(part)) for t, parts in obj["entries"] for j, part in enumerate(parts) if part]
        if found != WINDOW_FORMAT:
            raise StateError(
                f"the state of {self.describe()} is in format {found!r} of window state, and this version of "
                f"ingest reads formats 1 and {WINDOW_FORMAT}: run the version of ingest that wrote the checkpoint, "
                "or start from a new checkpoint directory")
        return [((int(k[0]), int(k[1])), list(v)) for k, v in zip(obj[prefix + "keys"], obj[prefix + "values"])]

    def pending_snapshot(self) -> bytes:
        self._snapshot_taken = True
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "window", "format": WINDOW_FORMAT,
                                 **self._columns(self._pending_items())})

    def pending_delta(self) -> bytes | None:
        # The entering slices and the keys of the leaving ones: one batch's records.
        self._snapshot_taken = True
        pending = self._pending or []
        columns = self._columns(kv for c in pending for kv in c.sets.items())
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "window_delta", "format": WINDOW_FORMAT,
                                 "del": [k for c in pending for k in c.removes],
                                 **{f"set_{name}": column for name, column in columns.items()}})


@dataclass(frozen=True)
class WindowSlices:
    """A partition of `window()`'s dataset on a cluster: the records of state
    partition `partition`'s slices as of version `base` plus the batch
    attempt `new`, read on the worker that keeps them (`affinity` places the
    task there, loosely: elsewhere, the slices are asked of every worker)."""

    token: str
    partition: int
    base: str | None
    new: str | None
    affinity: str
    operator: str

    def read(self) -> list[Any]:
        task = ReadTask(self.token, self.partition, self.base, self.new)
        items = read_resident(_apply_changes, _overlay, task)
        if _is_missing(items):
            items = self._from_another_worker(task)
        return [r for _, records in items for r in records]

    def _from_another_worker(self, task: ReadTask) -> list[Any]:
        from distributed import get_client

        try:
            found = get_client().run(read_resident, _apply_changes, _overlay, task, on_error="return")
        except Exception:  # noqa: BLE001 - the cluster is going away: reported as the lost partition below
            found = {}
        for items in found.values():
            if isinstance(items, list):
                return items
        raise WindowSliceLostError(
            f"partition {self.partition} of the window of {self.operator} is on no live worker (its worker died "
            "during the batch); the batch attempt fails, and with StreamingContext(max_batch_retries=N) its retry "
            "sends the partition again from the last commit")


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
