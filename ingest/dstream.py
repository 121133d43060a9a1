"""DStreams: a stream as a sequence of per-batch datasets.

Each `DStream` computes one `Dataset` per batch time. Transformations build new
DStreams whose datasets are computed from their parents' datasets of the same
batch; output operations (`pprint`, `foreach_batch`, `save_as_text_files`)
consume them. The graph is rebuilt by the application's code on every start, so
nothing here is ever serialized: a checkpoint stores only data (positions, state).
"""

from __future__ import annotations

import operator
import os
import traceback
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Iterator, Sequence, TypeVar

from ingest.dataset import Dataset
from ingest.errors import ConfigError
from ingest.input_stats import PartitionLag, WalStats
from offsets import OpaquePosition, Position

if TYPE_CHECKING:
    from ingest.batch import Batch
    from ingest.context import StreamingContext
    from ingest.output import OutputOperation

T = TypeVar("T")
U = TypeVar("U")

def _our_code(filename: str) -> bool:
    parts = os.path.normpath(filename).split(os.sep)
    return any(p in ("ingest", "receivers", "direct", "offsets") for p in parts[-3:-1]) and "tests" not in parts


def creation_site() -> str:
    """`file:line` of the user code that called into the DStream API."""
    for frame in reversed(traceback.extract_stack(limit=30)[:-1]):
        if not _our_code(frame.filename):
            return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return "<unknown>"


class DStream(Generic[T]):
    """A discretized stream: one `Dataset` per batch.

    Build DStreams from a `StreamingContext` (`queue_stream`,
    `socket_text_stream`, ...) and from other DStreams' transformations."""

    def __init__(self, ssc: "StreamingContext", parents: Sequence["DStream[Any]"], op_name: str) -> None:
        for p in parents:
            if p.ssc is not ssc:
                raise ConfigError(
                    f"cannot combine stream {p.describe()} with a stream of another StreamingContext")
        self.ssc = ssc
        self.parents: tuple[DStream[Any], ...] = tuple(parents)
        self.op_name = op_name
        self.site = creation_site()
        self.slide_ms: int = parents[0].slide_ms if parents else ssc.batch_interval_ms
        self._generated: dict[int, Dataset[T]] = {}
        self.id = ssc._graph.add_stream(self)

    # -- graph plumbing ---------------------------------------------------------

    def describe(self) -> str:
        return f"{self.op_name} (#{self.id}, {self.site})"

    def __repr__(self) -> str:
        return f"<DStream {self.describe()}>"

    def is_time_valid(self, time_ms: int) -> bool:
        zero = self.ssc._graph.zero_time_ms
        return zero is not None and time_ms > zero and (time_ms - zero) % self.slide_ms == 0

    def compute(self, time_ms: int) -> Dataset[T]:
        raise NotImplementedError

    def get_or_compute(self, time_ms: int) -> Dataset[T]:
        """The dataset of batch `time_ms`, computed once per batch."""
        ds = self._generated.get(time_ms)
        if ds is None:
            ds = self.compute(time_ms) if self.is_time_valid(time_ms) else Dataset([], self.ssc.executor)
            self._generated[time_ms] = ds
        return ds

    def forget(self, before_ms: int) -> None:
        """Drop datasets of batches before `before_ms` (after they completed)."""
        for t in [t for t in self._generated if t < before_ms]:
            del self._generated[t]

    def discard(self, time_ms: int) -> None:
        """Drop the computed dataset of batch `time_ms` so that a retry
        computes it again (from the same plans)."""
        self._generated.pop(time_ms, None)

    def _derive(self, op_name: str, fn: Callable[[Dataset[Any]], Dataset[Any]]) -> "DStream[Any]":
        return TransformedDStream(self.ssc, [self], lambda datasets, _t: fn(datasets[0]), op_name)

    # -- stateless transformations -------------------------------------------------

    def map(self, fn: Callable[[T], U]) -> "DStream[U]":
        return self._derive("map", lambda ds: ds.map(fn))

    def flat_map(self, fn: Callable[[T], Iterable[U]]) -> "DStream[U]":
        return self._derive("flat_map", lambda ds: ds.flat_map(fn))

    def filter(self, fn: Callable[[T], bool]) -> "DStream[T]":
        return self._derive("filter", lambda ds: ds.filter(fn))

    def map_partitions(self, fn: Callable[[Iterator[T]], Iterable[U]]) -> "DStream[U]":
        return self._derive("map_partitions", lambda ds: ds.map_partitions(fn))

    def map_values(self, fn: Callable[[Any], U]) -> "DStream[tuple[Any, U]]":
        return self._derive("map_values", lambda ds: ds.map_values(fn))

    def flat_map_values(self, fn: Callable[[Any], Iterable[U]]) -> "DStream[tuple[Any, U]]":
        return self._derive("flat_map_values", lambda ds: ds.flat_map_values(fn))

    def transform(self, fn: Callable[..., Dataset[U]]) -> "DStream[U]":
        """Apply any dataset-to-dataset function to each batch.

        `fn(dataset)` or `fn(batch_time_ms, dataset)`; it must return a Dataset."""
        two_args = _arity(fn) >= 2

        def apply(datasets: Sequence[Dataset[Any]], time_ms: int) -> Dataset[Any]:
            out = fn(time_ms, datasets[0]) if two_args else fn(datasets[0])
            if not isinstance(out, Dataset):
                raise TypeError(f"transform() function must return a Dataset, got {type(out).__name__}")
            return out

        return TransformedDStream(self.ssc, [self], apply, "transform")

    def transform_with(self, other: "DStream[Any]", fn: Callable[..., Dataset[U]]) -> "DStream[U]":
        """Combine this stream's and `other`'s dataset of each batch:
        `fn(ds, other_ds)` or `fn(batch_time_ms, ds, other_ds)`."""
        three_args = _arity(fn) >= 3
        return TransformedDStream(
            self.ssc, [self, other],
            lambda dss, t: fn(t, dss[0], dss[1]) if three_args else fn(dss[0], dss[1]),
            "transform_with")

    def union(self, *others: "DStream[T]") -> "DStream[T]":
        for o in others:
            if o.slide_ms != self.slide_ms:
                raise ConfigError(
                    f"union of streams with different slide intervals: {self.describe()} slides every "
                    f"{self.slide_ms} ms, {o.describe()} every {o.slide_ms} ms")
        return TransformedDStream(
            self.ssc, [self, *others], lambda dss, _t: dss[0].union(*dss[1:]), "union")

    def repartition(self, num_partitions: int) -> "DStream[T]":
        if num_partitions < 1:
            raise ConfigError(f"repartition({num_partitions}): the number of partitions must be >= 1")
        return self._derive("repartition", lambda ds: ds.repartition(num_partitions))

    def count(self) -> "DStream[int]":
        """A stream with one record per batch: the number of records (0 for an empty batch)."""
        return self._derive("count", lambda ds: Dataset.from_partitions([[ds.count()]], ds.executor))

    def count_by_value(self) -> "DStream[tuple[T, int]]":
        return self._derive("count_by_value", lambda ds: ds.count_by_value())

    def reduce(self, fn: Callable[[T, T], T]) -> "DStream[T]":
        """A stream with one record per non-empty batch: all records reduced with `fn`."""

        def apply(ds: Dataset[Any]) -> Dataset[Any]:
            found, value = ds.reduce_optional(fn)
            return Dataset.from_partitions([[value] if found else []], ds.executor)

        return self._derive("reduce", apply)

    def reduce_by_key(self, fn: Callable[[Any, Any], Any], num_partitions: int | None = None) -> "DStream[tuple[Any, Any]]":
        return self._derive("reduce_by_key", lambda ds: ds.reduce_by_key(fn, num_partitions))

    def combine_by_key(self, create: Callable[[Any], Any], merge_value: Callable[[Any, Any], Any],
                       merge_combiners: Callable[[Any, Any], Any], num_partitions: int | None = None,
                       ) -> "DStream[tuple[Any, Any]]":
        return self._derive("combine_by_key",
                            lambda ds: ds.combine_by_key(create, merge_value, merge_combiners, num_partitions))

    def group_by_key(self, num_partitions: int | None = None) -> "DStream[tuple[Any, list[Any]]]":
        return self._derive("group_by_key", lambda ds: ds.group_by_key(num_partitions))

    def _pair(self, op: str, other: "DStream[Any]", num_partitions: int | None) -> "DStream[Any]":
        if other.slide_ms != self.slide_ms:
            raise ConfigError(f"{op} of streams with different slide intervals ({self.slide_ms} ms and "
                              f"{other.slide_ms} ms)")
        return TransformedDStream(
            self.ssc, [self, other],
            lambda dss, _t: getattr(dss[0], op)(dss[1], num_partitions=num_partitions), op)

    def join(self, other: "DStream[Any]", num_partitions: int | None = None) -> "DStream[tuple[Any, tuple[Any, Any]]]":
        return self._pair("join", other, num_partitions)

    def left_outer_join(self, other: "DStream[Any]", num_partitions: int | None = None) -> "DStream[tuple[Any, tuple[Any, Any]]]":
        return self._pair("left_outer_join", other, num_partitions)

    def right_outer_join(self, other: "DStream[Any]", num_partitions: int | None = None) -> "DStream[tuple[Any, tuple[Any, Any]]]":
        return self._pair("right_outer_join", other, num_partitions)

    def full_outer_join(self, other: "DStream[Any]", num_partitions: int | None = None) -> "DStream[tuple[Any, tuple[Any, Any]]]":
        return self._pair("full_outer_join", other, num_partitions)

    def cogroup(self, other: "DStream[Any]", num_partitions: int | None = None) -> "DStream[tuple[Any, tuple[list[Any], list[Any]]]]":
        return self._pair("cogroup", other, num_partitions)

    def cache(self) -> "DStream[T]":
        """Compute each batch's dataset once and keep it in memory for the
        batch, so several outputs do not recompute it."""
        return self._derive("cache", lambda ds: ds.cache())

    # -- stateful transformations (state survives restarts with a checkpoint) -------

    def update_state_by_key(self, fn: Callable[[list[Any], Any], Any], *, num_partitions: int | None = None,
                            initial_state: Any = None, name: str | None = None, serde: Any = None,
                            ) -> "DStream[tuple[Any, Any]]":
        """Keep a state per key: every batch, `fn(new_values, old_state)` is
        called for every key that has state or new values; it returns the new
        state, or None to remove the key. Emits `(key, state)` for every key."""
        from ingest.state import UpdateStateByKeyDStream

        return UpdateStateByKeyDStream(self.ssc, self, fn, num_partitions=num_partitions,
                                       initial_state=initial_state, name=name, serde=serde)

    def map_with_state(self, fn: Callable[[Any, Any, Any], Any], *, timeout: float | None = None,
                       num_partitions: int | None = None, initial_state: Any = None, name: str | None = None,
                       serde: Any = None) -> "DStream[Any]":
        """For each `(key, value)` record, `fn(key, value, state)` returns an
        output record (None: nothing) and may `state.update(v)` or
        `state.remove()`. With `timeout` (seconds of batch time), a key without
        records for that long gets `fn(key, None, state)` with
        `state.is_timing_out()` and is removed. The returned stream also has
        `state_snapshots()`."""
        from ingest.state import MapWithStateDStream

        return MapWithStateDStream(self.ssc, self, fn, timeout, num_partitions=num_partitions,
                                   initial_state=initial_state, name=name, serde=serde)

    def window(self, window_duration: float, slide_duration: float | None = None, *, name: str | None = None,
               serde: Any = None) -> "DStream[T]":
        """All records of the last `window_duration` seconds, every
        `slide_duration` seconds (default: every batch)."""
        from ingest.window import WindowedDStream

        return WindowedDStream(self.ssc, self, window_duration, slide_duration, name=name, serde=serde)

    def count_by_window(self, window_duration: float, slide_duration: float | None = None, *,
                        name: str | None = None) -> "DStream[int]":
        """The number of records in each window: one record per slide, 0 for an empty window."""
        from ingest.dataset import Dataset

        counts = self.map(lambda _x: 1).reduce_by_window(
            operator.add, operator.sub, window_duration, slide_duration, name=name)
        return counts.transform(lambda ds: ds if ds.count() else Dataset.from_records([0], 1, ds.executor))

    def reduce_by_window(self, fn: Callable[[T, T], T], inv_fn: Callable[[T, T], T] | None,
                         window_duration: float, slide_duration: float | None = None, *,
                         name: str | None = None) -> "DStream[T]":
        """All records of each window reduced with `fn` (one record per slide).
        With `inv_fn`, windows are updated incrementally."""
        from ingest.window import ReducedWindowedDStream

        # One value under a single key; an empty window yields no record.
        # Without the inverse function a checkpoint of earlier versions holds
        # the window's records themselves: each is the value of that key.
        return ReducedWindowedDStream(self.ssc, self.map(lambda x: (0, x)), fn, inv_fn, window_duration,
                                      slide_duration, num_partitions=1, name=name,
                                      old_record=lambda x: (0, x)).map(lambda kv: kv[1])

    def reduce_by_key_and_window(self, fn: Callable[[Any, Any], Any], inv_fn: Callable[[Any, Any], Any] | None = None,
                                 window_duration: float | None = None, slide_duration: float | None = None, *,
                                 num_partitions: int | None = None,
                                 filter_fn: Callable[[tuple[Any, Any]], bool] | None = None,
                                 name: str | None = None) -> "DStream[tuple[Any, Any]]":
        """Per key, the values of each window reduced with `fn`. With
        `inv_fn` (the inverse of `fn`), each slide adds the entering batch and
        subtracts the leaving one instead of reducing the whole window; the
        result is the same either way. `filter_fn` filters the output records."""
        if window_duration is None:
            raise ConfigError("reduce_by_key_and_window needs window_duration (seconds)")
        from ingest.window import ReducedWindowedDStream

        return ReducedWindowedDStream(self.ssc, self, fn, inv_fn, window_duration, slide_duration,
                                      num_partitions=num_partitions, filter_fn=filter_fn, name=name)

    def count_by_value_and_window(self, window_duration: float, slide_duration: float | None = None, *,
                                  num_partitions: int | None = None, name: str | None = None,
                                  ) -> "DStream[tuple[T, int]]":
        return self.map(lambda x: (x, 1)).reduce_by_key_and_window(
            operator.add, operator.sub, window_duration, slide_duration, num_partitions=num_partitions, name=name)

    # -- output operations ------------------------------------------------------

    def foreach_batch(self, fn: Callable[["Batch"], None], name: str | None = None) -> "OutputOperation":
        """Run `fn(batch)` for every batch. `batch.time`, `batch.collect()`,
        `batch.offset_ranges` and `batch.positions` are available; the batch
        commits only after every output operation returned. An exactly-once
        sink (`ingest.sinks`) is registered once: the same instance twice, or
        two sinks with one identity, is a `ConfigError`."""
        from ingest.output import OutputOperation

        sink_id = getattr(fn, "sink_id", None)
        default = f"sink {sink_id}" if isinstance(sink_id, str) else "foreach_batch"
        return OutputOperation(self, fn, name or default)

    def pprint(self, num: int = 10) -> "OutputOperation":
        """Print the first `num` records of every batch under a `Time:` header."""
        from ingest.output import pprint_batch, OutputOperation

        return OutputOperation(self, lambda batch: pprint_batch(batch, num), "pprint")

    def save_as_text_files(self, prefix: str, suffix: str | None = None) -> "OutputOperation":
        """Write each batch to the directory `prefix-<batch time ms>[.suffix]`,
        one `part-NNNNN` file per partition, atomically (a re-run batch
        replaces its directory as a whole)."""
        from ingest.output import OutputOperation, TextFilesWriter

        return OutputOperation(self, TextFilesWriter(prefix, suffix), "save_as_text_files")


class TransformedDStream(DStream[T]):
    """A stream computed from its parents' datasets of the same batch."""

    def __init__(self, ssc: "StreamingContext", parents: Sequence[DStream[Any]],
                 fn: Callable[[Sequence[Dataset[Any]], int], Dataset[T]], op_name: str) -> None:
        super().__init__(ssc, parents, op_name)
        self._fn = fn

    def compute(self, time_ms: int) -> Dataset[T]:
        return self._fn([p.get_or_compute(time_ms) for p in self.parents], time_ms)


class InputDStream(DStream[T]):
    """A stream fed by a source. The scheduler drives it through the batch lifecycle:

    1. `plan(t)` decides what batch `t` reads and returns it as a typed
       `offsets.Position` (offset ranges, block references, records, ...);
    2. the position is written to the intent log before anything runs, then
       `on_intent_written(t, position)` is called (also before a batch re-run
       from the intent log after a restart): the place to make durable what
       `plan` decided only in memory, so that nothing durable ever describes
       a batch whose intent is not;
    3. `materialize(t, position)` turns a position into a Dataset, also when
       the position comes back from the intent log after a restart;
    4. `on_batch_committed(t, position)` runs after the batch's commit is
       durable: the place to acknowledge the source (it deletes nothing);
    5. `clean_up(retain_from_ms)` runs after every input acknowledged: data of
       batches older than `retain_from_ms` may be deleted, nothing else.

    After a restart, `restore(position)` gets the position to resume from.

    A custom input whose `plan` still returns a plain JSON value keeps working:
    the core wraps the value in an `OpaquePosition`, and `materialize`,
    `on_batch_committed`, `next_position` and `restore` then receive that
    `OpaquePosition` (the plan's value is its `.value`).
    """

    kind = "input"

    def __init__(self, ssc: "StreamingContext", name: str | None = None) -> None:
        self.name = ssc._graph.input_name(self.kind, name)
        self._plans: dict[int, Position] = {}
        super().__init__(ssc, [], self.kind)
        ssc._graph.add_input(self)

    def describe(self) -> str:
        return f"{self.kind} stream '{self.name}' ({self.site})"

    # lifecycle hooks, called by the context ---------------------------------

    def start(self) -> None:
        """Start receiving (if this input receives). Must not block."""

    def stop_input(self, graceful: bool, timeout: float | None) -> None:
        """Stop taking in new data. Graceful: keep what was received so that
        the remaining batches can process it."""

    def has_unplanned_data(self) -> bool:
        """True while data has been received that no batch has planned yet."""
        return False

    def close(self) -> None:
        """Release resources after the last batch."""

    # what the input reports about its source (metrics, batch log lines) -------

    def lag(self) -> tuple[PartitionLag, ...]:
        """Per partition, how far the newest planned batch is behind the
        source's end, as seen while planning (no extra call to the source).
        Empty for inputs that cannot tell."""
        return ()

    def wal_stats(self) -> WalStats | None:
        """The input's write-ahead log, if it keeps one."""
        return None

    # batch lifecycle ---------------------------------------------------------

    def plan(self, time_ms: int) -> Position:
        """What batch `time_ms` reads, as a typed position."""
        raise NotImplementedError

    def materialize(self, time_ms: int, position: Position) -> Dataset[T]:
        raise NotImplementedError

    def on_intent_written(self, time_ms: int, position: Position) -> None:
        """The intent naming `position` for batch `time_ms` is durable (just
        written, or read back for a re-run after a restart: the call must be
        idempotent). Nothing to do by default."""

    def on_batch_committed(self, time_ms: int, position: Position) -> None:
        """The batch that read `position` committed: acknowledge the source.
        Delete nothing here; deleting is `clean_up`'s job."""

    def next_position(self, position: Position) -> Position | None:
        """Where this input resumes after the batch that read `position`
        (stored in the commit record). None: the input has no resume point of
        its own, and a restart restores it from its newest planned position."""
        return None

    def resume_point(self, committed: Position | None, pending: list[Position]) -> Position | None:
        """After a restart: where this input resumes, from the next position
        stored with the newest readable commit (None: no commit had one) and
        the positions of the batches that will be re-run, oldest first.

        The default moves `committed` on with `next_position` past each
        re-run batch; None means "no resume point of its own" (the core then
        restores the newest planned position). Inputs whose resume point
        depends on more than the last batch (a file stream's remembered
        files) fold `pending` into `committed` instead."""
        position = committed
        for planned in pending:
            position = self.next_position(planned)
            if position is None:
                break
        return position

    def clean_up(self, retain_from_ms: int) -> None:
        """Data of batches with time < `retain_from_ms` is no longer needed by
        any retained commit's replay or any pending batch: it may be deleted."""

    def on_recovery(self, last_committed_ms: int | None, pending_times: list[int]) -> None:
        """After a restart, before `restore` and before `start`: the last
        committed batch and the batches that will be re-run."""

    def restore(self, position: Position) -> None:
        """After a restart: continue from `position`, this input's resume
        point (its `next_position` after the newest batch in the checkpoint),
        or, for inputs without `next_position`, its newest planned position."""

    def set_plan(self, time_ms: int, position: Position | None) -> None:
        if position is None:
            self._plans.pop(time_ms, None)
        else:
            self._plans[time_ms] = position

    def compute(self, time_ms: int) -> Dataset[T]:
        if time_ms not in self._plans:
            return Dataset([], self.ssc.executor)
        return self.materialize(time_ms, self._plans[time_ms])

    def forget(self, before_ms: int) -> None:
        super().forget(before_ms)
        for t in [t for t in self._plans if t < before_ms]:
            del self._plans[t]


def as_position(value: Any) -> Position:
    """A plan as a typed position: plain values of custom inputs are wrapped."""
    return value if isinstance(value, Position) else OpaquePosition(value)


def _arity(fn: Callable[..., Any]) -> int:
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 99
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty)


__all__ = ["DStream", "InputDStream", "TransformedDStream", "as_position"]
