"""Stateful streams: state that lives across batches and survives restarts.

Every stateful operator has a stable `state_id` (its `name=`, or the operator
and its rank among operators of the same kind, e.g. `update_state_by_key-0`),
so adding or renaming other transformations does not disturb its state.

The lifecycle per batch, driven by the scheduler:
`update(t)` computes the *pending* state from the committed state and the
batch's data (every batch, in order, whether or not an output reads the
stream at that time); outputs run; on success the checkpoint writes
`pending_snapshot()` or `pending_delta()` and then `commit_batch(t)` makes the
pending state the committed one; on failure `abort_batch(t)` drops it, so a
retried batch starts from the same state.

Keyed state is split into partitions by `portable_hash(key)`; each partition is
updated as one task on the context's executor. State is snapshotted with the
operator's serde (JSON by default). `map_with_state` writes deltas (only the
keys a batch touched) between full snapshots; `update_state_by_key` calls its
function for every key on every batch, so its snapshots are always full.

On an executor whose workers keep state (`DaskExecutor`) and with a durable
checkpoint, keyed partitions stay in the workers between batches
(`ingest.state_store`): the driver keeps only the batch's changes (for the
delta) and, while the checkpoint does not hold the base yet, a copy of it.
"""

from __future__ import annotations

import copy
import datetime
import functools
import hashlib
import itertools
import logging
import uuid
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, TypeVar

from ingest.dataset import Dataset, portable_hash
from ingest.dstream import DStream
from ingest.errors import ConfigError, StateError
from ingest.serde import JsonSerde
from ingest.state_store import MISSING, ReadTask, ResidentTask, forget, read_resident, run_resident

if TYPE_CHECKING:
    from ingest.context import StreamingContext

T = TypeVar("T")
S = TypeVar("S")

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class StatefulDStream(DStream[T]):
    """Base of every stream whose result depends on earlier batches."""

    def __init__(self, ssc: "StreamingContext", parents: list[DStream[Any]], op_name: str,
                 name: str | None, serde: Any | None) -> None:
        super().__init__(ssc, parents, op_name)
        self.state_id = ssc._graph.add_stateful(self, name)
        self.serde = serde or JsonSerde()
        if not (hasattr(self.serde, "dumps") and hasattr(self.serde, "loads")):
            raise ConfigError(f"serde for {self.describe()} must have dumps(obj) -> bytes and loads(bytes) -> obj")

    def describe(self) -> str:
        return f"{self.op_name} '{self.state_id}' ({self.site})"

    def update(self, time_ms: int) -> None:
        raise NotImplementedError

    def pending_snapshot(self) -> bytes:
        raise NotImplementedError

    def pending_delta(self) -> bytes | None:
        """The pending batch's changes, or None when this operator only writes full snapshots."""
        return None

    def commit_batch(self, time_ms: int) -> None:
        raise NotImplementedError

    def abort_batch(self, time_ms: int) -> None:
        raise NotImplementedError

    def restore(self, full: bytes | None, deltas: list[bytes]) -> None:
        raise NotImplementedError

    def state_size(self) -> int:
        return 0

    def release(self) -> None:
        """The context stopped: free what the operator keeps outside the driver."""

    def _parent_dataset(self, time_ms: int) -> Dataset[Any]:
        parent = self.parents[0]
        if parent.is_time_valid(time_ms):
            return parent.get_or_compute(time_ms)
        return Dataset([], self.ssc.executor)

    def _load(self, data: bytes) -> dict[str, Any]:
        obj = self.serde.loads(data)
        if not isinstance(obj, dict) or obj.get("v") != SNAPSHOT_VERSION:
            raise StateError(f"state of {self.describe()} has an unknown layout; it was written by another "
                             "version of ingest or with another serde")
        return obj


class _Changes:
    """What a batch did to one state partition."""

    __slots__ = ("sets", "removes")

    def __init__(self) -> None:
        self.sets: dict[Any, Any] = {}
        self.removes: set[Any] = set()


class KeyedStateDStream(StatefulDStream[T]):
    """State as a dict per key, split into partitions."""

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], op_name: str, *,
                 num_partitions: int | None, initial_state: Any, name: str | None, serde: Any | None) -> None:
        super().__init__(ssc, [parent], op_name, name, serde)
        n = num_partitions if num_partitions is not None else max(1, ssc.executor.parallelism)
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"num_partitions must be a positive integer, got {num_partitions!r}")
        self.num_partitions = n
        self._committed: list[dict[Any, Any]] = [{} for _ in range(n)]
        self._pending: list[_Changes] | None = None
        self._pending_time: int | None = None
        self._outputs: list[list[Any]] = []
        # On a cluster that keeps state (see ingest.state_store), decided at the
        # first batch: the partitions live on workers and `_committed` is only
        # the driver's copy of a base the workers may lack (initial or restored
        # state, or one reloaded from the checkpoint after a worker died), None
        # once a commit's snapshot holds it.
        self._resident: bool | None = None
        self._token = ""  # set with _resident: "<state id>@<checkpoint>#<nonce of this run>"
        self._base_version: str | None = None
        self._pending_version: str | None = None
        self._snapshot_taken = False  # the checkpoint stored the pending state (so the copy may go)
        self._sizes = [0] * n
        self._pending_sizes: list[int] | None = None
        self.resident_reloads = 0
        """State partitions reloaded from the checkpoint because their worker was gone."""
        if initial_state is not None:
            items = initial_state.items() if isinstance(initial_state, dict) else initial_state
            for k, v in items:
                self._committed[portable_hash(k) % n][k] = self._initial_value(v)

    def _initial_value(self, value: Any) -> Any:
        return value

    def _task(self) -> Callable[[tuple[int, dict[Any, Any], list[Any], int]], tuple[_Changes, list[Any]]]:
        raise NotImplementedError

    def _batch_records(self, time_ms: int) -> list[list[Any]]:
        """The batch's records for each state partition (by key)."""
        shuffled = self._parent_dataset(time_ms).partition_by(self.num_partitions).glom()
        return shuffled or [[] for _ in range(self.num_partitions)]

    def _advances_at(self, time_ms: int) -> bool:
        """Whether the state changes at batch `time_ms`: at the stream's own
        times by default (a window's state moves with every batch instead)."""
        return self.is_time_valid(time_ms)

    def _attempts_may_retry(self) -> bool:
        """Whether a failed attempt of a batch is retried from the committed
        state (which user functions must then see only copies of)."""
        return self.ssc.max_batch_retries > 0

    def update(self, time_ms: int) -> None:
        if self._pending_time == time_ms:
            return
        if not self._advances_at(time_ms):  # the parent slides slower than the batch interval
            self._pending, self._outputs, self._pending_time = None, [], time_ms
            return
        shuffled = self._batch_records(time_ms)
        if self._resident is None:
            self._resident = bool(getattr(self.ssc.executor, "keeps_state", False) and self.ssc._log.durable)
            where = hashlib.blake2b(str(self.ssc.checkpoint_dir).encode(), digest_size=6).hexdigest()
            self._token = f"{self.state_id}@{where}#{uuid.uuid4().hex[:12]}"
        if self._resident:
            self._update_resident(time_ms, shuffled)
            return
        task = self._task()
        results = self.ssc.executor.map(
            task, [(i, self._committed[i], shuffled[i], time_ms) for i in range(self.num_partitions)])
        self._pending = [changes for changes, _ in results]
        self._outputs = [out for _, out in results]
        self._pending_time = time_ms

    # -- state partitions kept on cluster workers ------------------------------------------

    def _affinity(self) -> list[str | None]:
        # By state id, not by token: the same partitions go to the same workers
        # after a driver restart too (their old entries are not reused, but the
        # spread stays even).
        return [f"state:{self.state_id}/{i}" for i in range(self.num_partitions)]

    def _update_resident(self, time_ms: int, shuffled: list[list[Any]]) -> None:
        """One task per partition on the worker that keeps it; a worker
        without the base state answers MISSING, and its partition runs again
        with the base sent along (from the driver's copy, or reloaded from the
        checkpoint's last commit, which a commit wrote from exactly this base)."""
        run = functools.partial(run_resident, functools.partial(_run_sized, self._task()), _apply_changes)
        new = f"{time_ms}-{uuid.uuid4().hex[:8]}"
        seeds = self._committed

        def tasks(which: list[int]) -> list[ResidentTask]:
            return [ResidentTask(self._token, i, self._base_version, None if seeds is None else seeds[i],
                                 shuffled[i], time_ms, new) for i in which]

        which = list(range(self.num_partitions))
        affinity = self._affinity()
        results: list[Any] = self.ssc.executor.map(run, tasks(which), affinity=affinity)
        missing = [i for i, r in zip(which, results) if _is_missing(r)]
        if missing:
            seeds = self._reload_base(missing)
            again = self.ssc.executor.map(run, tasks(missing), affinity=[affinity[i] for i in missing])
            for i, r in zip(missing, again):
                if _is_missing(r):  # a task with its seed always has its base: a bug, not a fault
                    raise StateError(f"state partition {i} of {self.describe()} was sent with its base and its "
                                     "worker still reported it missing")
                results[i] = r
        self._pending = [r[0] for r in results]
        self._outputs = [r[1] for r in results]
        self._pending_sizes = [r[2] for r in results]
        self._pending_time, self._pending_version, self._snapshot_taken = time_ms, new, False

    def _reload_base(self, missing: list[int]) -> list[dict[Any, Any]]:
        """The base state for partitions whose worker lost them."""
        if self._committed is None:
            stored = self.ssc._log.committed_state(self.state_id)
            if stored is None:
                raise StateError(f"state partitions {missing} of {self.describe()} were lost with their worker "
                                 "and the checkpoint holds no commit of them; restart the job")
            self._committed = self._parts_from(*stored)
        self.resident_reloads += len(missing)
        log.warning("state partition(s) %s of %s were not on their worker (it died or is new): sent again from "
                    "the last commit", missing, self.describe())
        return self._committed

    def _read_resident(self, pending: bool) -> list[list[tuple[Any, Any]]]:
        """Every partition's items as of the committed state (plus the pending
        batch when `pending`), read from the workers; a partition whose worker
        is gone is rebuilt here from the checkpoint and the batch's changes."""
        new = self._pending_version if pending and self._pending is not None else None
        read = functools.partial(read_resident, _apply_changes, _overlay)
        parts: list[Any] = self.ssc.executor.map(
            read, [ReadTask(self._token, i, self._base_version, new) for i in range(self.num_partitions)],
            affinity=self._affinity())
        for i, items in enumerate(parts):
            if _is_missing(items):
                base = (self._committed if self._committed is not None else self._reload_base([i]))[i]
                parts[i] = list(base.items()) if new is None else list(_overlay(base, self._pending[i]))
        return parts

    def compute(self, time_ms: int) -> Dataset[T]:
        self.update(time_ms)
        return Dataset.from_partitions(self._outputs, self.ssc.executor)

    def _pending_items(self) -> Iterable[tuple[Any, Any]]:
        """Every key's state as of the pending batch (the committed one if none)."""
        if self._resident:
            if self._pending is not None and self._changes_are_whole_state:
                return (kv for changes in self._pending for kv in changes.sets.items())
            return (kv for part in self._read_resident(pending=True) for kv in part)
        return self._driver_pending_items()

    _changes_are_whole_state = False
    """Whether a batch's changes set every key that stays (so they are the whole pending state)."""

    _in_update_order_needed = False
    """Whether each partition must list its keys oldest update first (see `_in_update_order`)."""

    def _driver_pending_items(self) -> Iterable[tuple[Any, Any]]:
        assert self._committed is not None
        for i, part in enumerate(self._committed):
            changes = self._pending[i] if self._pending is not None else None
            if changes is None:
                yield from part.items()
                continue
            for k, v in part.items():
                if k not in changes.sets and k not in changes.removes:
                    yield k, v
            yield from changes.sets.items()

    # Snapshots are columns (keys, values, ...), not lists of pairs: no object per
    # key to build or mark, which keeps large states cheap to write and read.
    def _columns(self, items: Iterable[tuple[Any, Any]]) -> dict[str, list[Any]]:
        keys, values = [], []
        for k, v in items:
            keys.append(k)
            values.append(v)
        return {"keys": keys, "values": values}

    def _from_columns(self, obj: dict[str, Any], prefix: str = "") -> list[tuple[Any, Any]]:
        return list(zip(obj[prefix + "keys"], obj[prefix + "values"]))

    def pending_snapshot(self) -> bytes:
        self._snapshot_taken = True
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "full", **self._columns(self._pending_items())})

    def commit_batch(self, time_ms: int) -> None:
        if self._resident:
            self._commit_resident()
        if self._pending is None:
            return
        if self._committed is not None:
            for part, changes in zip(self._committed, self._pending):
                _apply(part, changes.sets, changes.removes, self._in_update_order_needed)
        self._pending = None
        self._pending_time = None
        self._outputs = []

    def abort_batch(self, time_ms: int) -> None:
        self._pending = None
        self._pending_time = None
        self._outputs = []
        self._pending_version, self._pending_sizes, self._snapshot_taken = None, None, False

    def release(self) -> None:
        if self._resident:
            self.ssc.executor.run_on_every_worker(forget, self._token)

    def _commit_resident(self) -> None:
        """The workers make the attempt committed when the next batch names it
        as its base; the driver's copy of the base goes once the checkpoint
        holds the new state (not after a replay during recovery, which writes
        no snapshot: the copy is then kept up to date instead)."""
        if self._pending is not None:
            self._base_version = self._pending_version
            assert self._pending_sizes is not None
            self._sizes = self._pending_sizes
        if self._snapshot_taken:
            self._committed = None
        self._pending_version, self._pending_sizes, self._snapshot_taken = None, None, False

    def restore(self, full: bytes | None, deltas: list[bytes]) -> None:
        self._committed = self._parts_from(full, deltas)
        self._base_version = None  # the workers' partitions (if any) are of another run or another time
        self._sizes = [len(p) for p in self._committed]
        self.abort_batch(0)

    def _parts_from(self, full: bytes | None, deltas: list[bytes]) -> list[dict[Any, Any]]:
        """The partitions of a full snapshot and the deltas after it."""
        parts: list[dict[Any, Any]] = [{} for _ in range(self.num_partitions)]
        n = self.num_partitions
        if full is not None:
            for k, v in self._from_columns(self._load(full)):
                parts[portable_hash(k) % n][k] = v
        for data in deltas:
            delta = self._load(data)
            sets: dict[int, dict[Any, Any]] = {}
            for k, v in self._from_columns(delta, "set_"):
                sets.setdefault(portable_hash(k) % n, {})[k] = v
            removes = set(delta["del"])
            for i, part in enumerate(parts):
                _apply(part, sets.get(i, {}), removes, self._in_update_order_needed)
        return [self._in_update_order(part) for part in parts]

    def _in_update_order(self, part: dict[Any, Any]) -> dict[Any, Any]:
        """A restored partition in the order its operator needs."""
        return part

    def state_size(self) -> int:
        if self._resident and self._base_version is not None:
            return sum(self._sizes)
        return sum(len(p) for p in self._committed or ())

    def state_items(self) -> list[tuple[Any, Any]]:
        """The committed state (for tests and inspection)."""
        if self._resident:
            return [kv for part in self._read_resident(pending=False) for kv in part]
        return [kv for part in self._committed for kv in part.items()]


# A user function may change the state object it is given in place and then
# fail, or a later output of the batch may fail: the batch is retried from the
# committed state, which must not carry the failed attempt's changes (Spark
# recomputes from the serialized state). So when a failed attempt can be
# retried (max_batch_retries > 0), a function only ever sees its own copy of a
# committed value, made the first time the attempt touches the key. Without
# retries a failed batch stops the context and its in-memory state is dropped
# (a restart restores the checkpoint), so nothing is copied. Values that cannot
# change in place are never copied: numbers, strings and tuples of them cost
# nothing either way.
_IMMUTABLE = frozenset({int, float, str, bytes, bool, type(None), complex, Decimal, frozenset,
                        datetime.date, datetime.datetime, datetime.timedelta})


def private_copy(value: Any) -> Any:
    """A copy of a state value that shares nothing mutable with it: JSON-like
    shapes (lists, dicts, tuples, sets of them) are copied here, level by
    level, anything else with `copy.deepcopy`."""
    cls = type(value)
    if cls in _IMMUTABLE:
        return value
    # issuperset(map(type, ...)) checks every item at C speed: a list or dict
    # of scalars, the common case, is then copied in one call.
    if cls is list:
        if _IMMUTABLE.issuperset(map(type, value)):
            return value[:]
        return [x if type(x) in _IMMUTABLE else private_copy(x) for x in value]
    if cls is dict:  # keys are hashable, so not changed in place
        copied = value.copy()
        if not _IMMUTABLE.issuperset(map(type, value.values())):
            for k, v in value.items():
                if type(v) not in _IMMUTABLE:
                    copied[k] = private_copy(v)
        return copied
    if cls is tuple:
        if _IMMUTABLE.issuperset(map(type, value)):
            return value
        return tuple(x if type(x) in _IMMUTABLE else private_copy(x) for x in value)
    if cls is set:
        return value.copy()  # items of a set are hashable
    return copy.deepcopy(value)


def _is_missing(result: Any) -> bool:
    return isinstance(result, str) and result == MISSING


def _apply_changes(part: dict[Any, Any], changes: _Changes) -> None:
    _apply(part, changes.sets, changes.removes)


def _overlay(part: dict[Any, Any], changes: _Changes) -> Iterable[tuple[Any, Any]]:
    """A partition's items with a batch's changes on top, without changing it."""
    for k, v in part.items():
        if k not in changes.sets and k not in changes.removes:
            yield k, v
    yield from changes.sets.items()


def _run_sized(inner: Callable[[Any], tuple[_Changes, list[Any]]], task: tuple[int, dict[Any, Any], list[Any], int]
               ) -> tuple[_Changes, list[Any], int]:
    """A partition's batch with the partition's size after it (so the driver
    can report the state's size without holding it). Removals are always of
    keys the state had."""
    changes, out = inner(task)
    state = task[1]
    added = sum(1 for k in changes.sets if k not in state)
    return changes, out, len(state) + added - len(changes.removes)


def _apply(part: dict[Any, Any], sets: dict[Any, Any], removes: Iterable[Any], ordered: bool = True) -> None:
    """`ordered`: keep the partition's keys in the order of their last update
    (the timeout scan of map_with_state needs it); otherwise updated keys keep
    their place, and one C-level update applies the batch (re-inserting every
    key was a stateful job's largest cost per batch)."""
    for k in removes:
        part.pop(k, None)
    if not ordered:
        part.update(sets)
        return
    for k, v in sets.items():
        part.pop(k, None)  # re-insert: a dict's order is then the order of last update
        part[k] = v


# -- update_state_by_key ----------------------------------------------------------------


class UpdateStateByKeyDStream(KeyedStateDStream[tuple[Any, S]]):
    """`fn(new_values, old_state_or_None) -> new_state_or_None` for every key,
    every batch (None removes the key). Emits `(key, state)` for every key."""

    _changes_are_whole_state = True  # the function runs for every key, every batch

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], fn: Callable[[list[Any], Any], Any], **kw: Any):
        super().__init__(ssc, parent, "update_state_by_key", **kw)
        self._fn = fn

    def _task(self) -> Callable[..., tuple[_Changes, list[Any]]]:
        fn = self._fn
        isolate = self._attempts_may_retry()

        def run(task: tuple[int, dict[Any, Any], list[Any], int]) -> tuple[_Changes, list[Any]]:
            _i, state, records, _t = task
            grouped: dict[Any, list[Any]] = {}
            for k, v in records:
                grouped.setdefault(k, []).append(v)
            changes = _Changes()
            out = []
            for k in itertools.chain(state, (k for k in grouped if k not in state)):
                old = state.get(k)
                new = fn(grouped.get(k, []), private_copy(old) if isolate and type(old) not in _IMMUTABLE else old)
                if new is None:
                    if k in state:
                        changes.removes.add(k)
                else:
                    changes.sets[k] = new
                    out.append((k, new))
            return changes, out

        return run


# -- map_with_state -----------------------------------------------------------------------


class State(Generic[S]):
    """The state of one key inside a `map_with_state` function.

    The rules are Spark's: `get()` needs a state (`exists()`, or use
    `get_option()`); `update()` and `remove()` are refused for a key that is
    timing out (it is removed after the call anyway); after `remove()` the
    call may neither `update()` nor `remove()` again. Breaking a rule raises
    `StateError` naming the key, which fails the batch. As in Spark, a State
    is valid only during the call it is passed to (the next call may reuse
    it for another key): keep its value, not the State."""

    __slots__ = ("_key", "_exists", "_value", "_timing_out", "_removed", "_shared")

    def __init__(self, exists: bool, value: Any = None, timing_out: bool = False, *, key: Any = None,
                 shared: bool = False) -> None:
        # map_with_state's per-record loop re-points one State at each key
        # (MapWithStateDStream._task): a field added here that a call can
        # change must be reset there too.
        self._key = key
        self._exists = exists
        self._value = value
        self._timing_out = timing_out
        self._removed = False
        # `value` is the committed state itself: copied before the function
        # first sees it (see private_copy).
        self._shared = shared

    def _read(self) -> Any:
        if self._shared:
            self._value, self._shared = private_copy(self._value), False
        return self._value

    def exists(self) -> bool:
        return self._exists

    def get(self) -> S:
        if not self._exists:
            gone = "was removed in this call" if self._removed else "has no state"
            raise StateError(f"State.get() for key {self._key!r}: the key {gone}; check state.exists() first "
                             "or use state.get_option(default)")
        return self._read()

    def get_option(self, default: Any = None) -> Any:
        if not self._exists:
            return default
        if self._shared:  # _read(), inlined: this runs once per record of a stateful job
            self._value, self._shared = private_copy(self._value), False
        return self._value

    def update(self, value: S) -> None:
        if self._timing_out:
            raise StateError(f"State.update() for key {self._key!r}, which is timing out: its state is removed "
                             "after this call; return an output instead of updating")
        if self._removed:
            raise StateError(f"State.update() for key {self._key!r}, which was removed in this call: "
                             "update or remove a key, not both")
        self._value, self._exists, self._shared = value, True, False

    def remove(self) -> None:
        if self._timing_out:
            raise StateError(f"State.remove() for key {self._key!r}, which is timing out: it is removed "
                             "after this call anyway")
        if self._removed:
            raise StateError(f"State.remove() for key {self._key!r}, which was already removed in this call: "
                             "remove a key once")
        self._value, self._exists, self._removed, self._shared = None, False, True, False

    def is_timing_out(self) -> bool:
        return self._timing_out


_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_ABSENT = object()  # no entry (a state may be None)


class MapWithStateDStream(KeyedStateDStream[Any]):
    """`fn(key, value, state) -> output` for every record; with `timeout`, a key
    idle for that long gets one last call `fn(key, None, state)` with
    `state.is_timing_out()` true and is then removed. Outputs that are None
    are dropped. The stored state of a key is its value, or `(value,
    last_seen_ms)` with a timeout (the only use of the time). A plain value
    saves a tuple per record, and a partition of plain values (numbers,
    strings) is a dict the garbage collector never scans: each batch's new
    tuples made it one that every full collection walked key by key (with the
    rest of a stateful job's collections, a fifth of its CPU). Checkpoints
    hold the same columns either way (`seen` is null without a timeout), so a
    job may add or drop its timeout across a restart."""

    def __init__(self, ssc: "StreamingContext", parent: DStream[Any], fn: Callable[[Any, Any, State[Any]], Any],
                 timeout: float | None, **kw: Any) -> None:
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ConfigError(f"map_with_state timeout must be a positive number of seconds or None, got {timeout!r}")
        self._fn = fn
        self._timeout_ms = None if timeout is None else int(round(timeout * 1000))
        self._in_update_order_needed = self._timed = self._timeout_ms is not None
        super().__init__(ssc, parent, "map_with_state", **kw)

    def _initial_value(self, value: Any) -> Any:
        return (value, None) if self._timed else value

    def _task(self) -> Callable[..., tuple[_Changes, list[Any]]]:
        fn, timeout_ms, timed = self._fn, self._timeout_ms, self._timed
        isolate = self._attempts_may_retry()

        def run(task: tuple[int, dict[Any, Any], list[Any], int]) -> tuple[_Changes, list[Any]]:
            _i, state, records, t = task
            changes = _Changes()
            out = []
            # Bound once: this loop runs once per record (the top of a stateful job's profile).
            sets, removes, append, get = changes.sets, changes.removes, out.append, state.get
            # One State for the partition, pointed at each record's key in
            # turn (as Spark's StateImpl is): building one per record was this
            # loop's largest own cost. It is valid only during the call.
            cur: State[Any] = State(False)
            for k, v in records:
                cur._key = k
                cur._removed = False
                pending = sets.get(k, _ABSENT)
                if pending is not _ABSENT:
                    value = pending[0] if timed else pending
                    cur._exists, cur._value = True, value
                    # Still the committed object when no earlier call read or replaced it.
                    cur._shared = (isolate and type(value) not in _IMMUTABLE and k in state
                                   and value is (state[k][0] if timed else state[k]))
                elif k in removes:
                    cur._exists, cur._value, cur._shared = False, None, False
                else:
                    committed = get(k, _ABSENT)
                    if committed is _ABSENT:
                        cur._exists, cur._value, cur._shared = False, None, False
                    else:
                        value = committed[0] if timed else committed
                        cur._exists, cur._value = True, value
                        cur._shared = isolate and type(value) not in _IMMUTABLE
                result = fn(k, v, cur)
                if result is not None:
                    append(result)
                if cur._exists:
                    sets[k] = (cur._value, t) if timed else cur._value
                    if removes:
                        removes.discard(k)
                else:
                    sets.pop(k, None)
                    if k in state:
                        removes.add(k)
            if timeout_ms is not None:
                for k, (value, seen) in state.items():  # oldest update first
                    if seen is None:  # from initial_state: its idle clock starts with the first batch
                        if k not in changes.sets and k not in changes.removes:
                            changes.sets[k] = (value, t)
                        continue
                    if seen + timeout_ms > t:
                        break
                    if k in changes.sets or k in changes.removes:
                        continue
                    result = fn(k, None, State(True, value, timing_out=True, key=k, shared=isolate))
                    if result is not None:
                        out.append(result)
                    changes.removes.add(k)
            return changes, out

        return run

    def _in_update_order(self, part: dict[Any, Any]) -> dict[Any, Any]:
        # The timeout scan stops at the first key not yet due, so a partition
        # must list its keys oldest update first. Each partition of a snapshot
        # is in that order, but keys re-bucketed into another number of
        # partitions interleave partitions that were apart. Sorting is stable,
        # and near linear on the sorted runs that a restore concatenates.
        if self._timeout_ms is None:
            return part
        return dict(sorted(part.items(), key=_last_seen))

    def _columns(self, items: Iterable[tuple[Any, Any]]) -> dict[str, list[Any]]:
        pairs = list(items)
        return self._split(list(map(_FIRST, pairs)), list(map(_SECOND, pairs)))

    def _split(self, keys: list[Any], stored: list[Any]) -> dict[str, list[Any]]:
        # Split at C speed (map, itemgetter): a Python loop over every changed
        # key was a tenth of a stateful job's checkpoint cost.
        if not self._timed:
            return {"keys": keys, "values": stored, "seen": [None] * len(keys)}
        return {"keys": keys, "values": list(map(_FIRST, stored)), "seen": list(map(_SECOND, stored))}

    def _from_columns(self, obj: dict[str, Any], prefix: str = "") -> list[tuple[Any, Any]]:
        if not self._timed:  # the times of a checkpoint written with a timeout are not needed
            return list(zip(obj[prefix + "keys"], obj[prefix + "values"]))
        return list(zip(obj[prefix + "keys"], zip(obj[prefix + "values"], obj[prefix + "seen"])))

    def pending_delta(self) -> bytes | None:
        if self._pending is None:
            return None
        self._snapshot_taken = True
        keys: list[Any] = []
        states: list[Any] = []
        for c in self._pending:
            keys.extend(c.sets)
            states.extend(c.sets.values())
        columns = self._split(keys, states)
        removes = [k for c in self._pending for k in c.removes]
        return self.serde.dumps({"v": SNAPSHOT_VERSION, "kind": "delta", "del": removes,
                                 **{f"set_{name}": column for name, column in columns.items()}})

    def state_items(self) -> list[tuple[Any, Any]]:
        """The committed `(key, state)` pairs (for tests and inspection), without
        the times of last update that a timeout keeps."""
        return self._values_only(super().state_items())

    def _values_only(self, items: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
        """`(key, value)` pairs of stored items, without a timeout's times."""
        return [(k, v[0]) for k, v in items] if self._timed else list(items)

    def state_snapshots(self) -> DStream[tuple[Any, Any]]:
        """A stream of `(key, state)` for every key after each batch."""
        from ingest.dstream import TransformedDStream

        def snapshot(_datasets: Any, time_ms: int) -> Dataset[Any]:
            self.update(time_ms)
            return Dataset.from_records(self._values_only(self._pending_items()), 1, self.ssc.executor)

        return TransformedDStream(self.ssc, [self], snapshot, "state_snapshots")


def _last_seen(item: tuple[Any, tuple[Any, int | None]]) -> int:
    seen = item[1][1]
    return -1 if seen is None else seen  # initial state, never seen: its idle clock starts with the next batch
