"""`Dataset`: the data of one batch, split into partitions.

A dataset is a list of partitions; each partition is a *source* (something
with `read()`, such as a list of records or a Kafka offset range) plus a chain
of narrow operations (`map`, `filter`, ...). Narrow operations only extend the
chain; nothing runs until an action (`collect`, `count`, a shuffle) needs the
records. Then every partition runs as one task on the context's executor.

Wide operations (`reduce_by_key`, `group_by_key`, joins, `repartition`) shuffle:
map-side tasks combine and bucket records by key, then reduce-side tasks merge
each bucket; both sides run when the shuffle is built, once, and their output
becomes the sources of the new dataset's partitions. Buckets are chosen with
`portable_hash`, computed from a key's value (never its `repr`) and the same in
every process whatever `PYTHONHASHSEED` is, so equal keys meet in one partition
and a batch replayed after a restart is partitioned exactly as the first time.
Keys of types whose equality it cannot reproduce (instances of plain user
classes, for instance) are refused with a `ConfigError` saying to map them to
a tuple or a str.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import operator
import zlib
from dataclasses import dataclass
from decimal import Decimal
from collections.abc import Sequence
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from ingest.errors import ConfigError
from ingest.executor import InlineExecutor, TaskExecutor

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")

# An operation maps (partition index, records) to records.
PartitionOp = Callable[[int, Iterable[Any]], Iterable[Any]]


class ListSource:
    """A partition whose records are already in memory."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def read(self) -> Sequence[Any]:
        return self.items

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Partition:
    source: Any  # anything with read() -> Iterable
    ops: tuple[PartitionOp, ...] = ()


def _compute(task: tuple[int, Partition]) -> Sequence[Any]:
    """One partition's records. A source may return a lazy sequence (Kafka
    records are built only when iterated); it is kept as is when no operation
    follows, so counting it needs no conversion."""
    index, part = task
    records: Iterable[Any] = part.source.read()
    for op in part.ops:
        records = op(index, records)
    return records if isinstance(records, Sequence) else list(records)


def _compute_list(task: tuple[int, Partition]) -> list[Any]:
    records = _compute(task)
    return records if isinstance(records, list) else list(records)


def _compute_then(task: tuple[int, Partition, Callable[[int, list[Any]], Any]]) -> Any:
    index, part, finish = task
    return finish(index, _compute((index, part)))


# Keys are hashed from their value, the same way in every process: never from
# `repr` (which may hold an address or depend on PYTHONHASHSEED, as a
# frozenset's order does) nor from Python's `hash` (randomized for str and
# bytes). Keys that compare equal hash equally, as they are one key in a dict:
# 1 == 1.0 == True == Decimal(1), an aware datetime equals the same instant in
# another zone, a NamedTuple equals the plain tuple. The hashes of None, bool,
# int, float, str, bytes and tuples are those of earlier releases, so a
# checkpointed job replays its batches into the same buckets after an upgrade.

_MASK = 0x7FFFFFFFFFFFFFFF
_MASK48 = 0xFFFFFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_SUPPORTED = ("None, bool, int, float, Decimal, str, bytes, datetime, date, timedelta, enum members, "
              "and tuples, NamedTuples, frozensets and dataclasses (eq=True) of those")


def portable_hash(key: Any) -> int:
    """A non-negative hash of `key` that is the same in every process and run.

    Raises `ConfigError` for a key (or a part of one) of another type: its
    equality cannot be reproduced from its value, so equal keys could land in
    different partitions. A dataclass is hashed by the fields it compares
    (`eq=True`, the default), so it must not replace the generated `__eq__`."""
    by_type = _HASH_BY_TYPE.get(type(key))
    if by_type is not None:
        return by_type(key)
    return _hash_other(key, key)


def _hash_int(key: int) -> int:
    return key & _MASK


def _hash_str(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


def _hash_bytes(key: bytes) -> int:
    return zlib.crc32(key)


def _hash_float(key: float) -> int:
    return _hash_int(int(key)) if key.is_integer() else zlib.crc32(repr(key).encode())


def _hash_items(items: Iterable[Any], root: Any) -> int:
    h = 0x345678
    for item in items:
        by_type = _HASH_BY_TYPE.get(type(item))
        h = ((h * 1000003) ^ (by_type(item) if by_type is not None else _hash_other(item, root))) & _MASK48
    return h


def _hash_tuple(key: tuple[Any, ...], root: Any = None) -> int:
    return _hash_items(key, key if root is None else root)


def _hash_frozenset(key: frozenset[Any], root: Any = None) -> int:
    # Order-independent: a sum of well-mixed element hashes (a frozenset's
    # iteration order depends on PYTHONHASHSEED).
    root = key if root is None else root
    acc = len(key) * 0x9E3779B97F4A7C15
    for item in key:
        by_type = _HASH_BY_TYPE.get(type(item))
        h = by_type(item) if by_type is not None else _hash_other(item, root)
        h = ((h ^ (h >> 31)) * 0xBF58476D1CE4E5B9) & _MASK64
        acc += h ^ (h >> 29)
    return (acc ^ 0x5F3759DF) & _MASK


def _hash_decimal(key: Decimal) -> int:
    if key.is_nan():
        return zlib.crc32(b"nan")
    if key.is_infinite() or key == key.to_integral_value():
        return _hash_float(float(key)) if key.is_infinite() else _hash_int(int(key))
    as_float = float(key)
    if Decimal(as_float) == key:  # equal to that float, so it must hash as it does
        return _hash_float(as_float)
    # Canonical digits, independent of the decimal context: 1.10 == 1.1.
    sign, digits, exponent = key.as_tuple()
    trimmed = list(digits)
    while len(trimmed) > 1 and trimmed[-1] == 0:
        trimmed.pop()
        exponent += 1  # type: ignore[operator]
    return _hash_tuple(("decimal", sign, "".join(map(str, trimmed)), exponent))


def _micros(days: int, seconds: int, microseconds: int) -> int:
    return (days * 86400 + seconds) * 1_000_000 + microseconds


def _hash_datetime(key: datetime.datetime) -> int:
    # As Python's own equality: naive by fields (fold ignored), aware by the
    # UTC instant (the offset taken with fold=0, as `hash(datetime)` does).
    naive = key.replace(tzinfo=None, fold=0)
    offset = key.replace(fold=0).utcoffset()
    since = naive - datetime.datetime.min
    if offset is None:
        return _hash_tuple(("datetime", _micros(since.days, since.seconds, since.microseconds)))
    since -= offset
    return _hash_tuple(("datetime-utc", _micros(since.days, since.seconds, since.microseconds)))


def _hash_date(key: datetime.date) -> int:
    return _hash_tuple(("date", key.toordinal()))


def _hash_timedelta(key: datetime.timedelta) -> int:
    return _hash_tuple(("timedelta", _micros(key.days, key.seconds, key.microseconds)))


_HASH_BY_TYPE: dict[type, Callable[[Any], int]] = {
    type(None): lambda _key: 0,
    bool: int,
    int: _hash_int,
    str: _hash_str,
    bytes: _hash_bytes,
    bytearray: _hash_bytes,
    float: _hash_float,
    tuple: _hash_tuple,
    frozenset: _hash_frozenset,
    Decimal: _hash_decimal,
    datetime.datetime: _hash_datetime,
    datetime.date: _hash_date,
    datetime.timedelta: _hash_timedelta,
}

# Subclasses that keep their base's equality hash as their base: IntEnum and
# str-valued enums, NamedTuples. The most derived bases come first.
_BASES = (bool, int, float, str, bytes, tuple, frozenset, Decimal, datetime.datetime, datetime.date,
          datetime.timedelta)


def _hash_other(key: Any, root: Any) -> int:
    cls = type(key)
    for base in _BASES:
        if isinstance(key, base):
            if cls.__eq__ is base.__eq__ and cls.__hash__ is base.__hash__:
                if base is tuple:
                    return _hash_tuple(key, root)
                if base is frozenset:
                    return _hash_frozenset(key, root)
                return _HASH_BY_TYPE[base](key)
            break
    if isinstance(key, enum.Enum) and cls.__eq__ is object.__eq__:
        # Compared by identity, and one member per (class, name) in every process.
        return _hash_tuple(("enum", cls.__module__, cls.__qualname__, key.name))
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None and params.eq and dataclasses.is_dataclass(key):
        values = tuple(getattr(key, f.name) for f in dataclasses.fields(key) if f.compare)
        return _hash_items((cls.__module__, cls.__qualname__) + values, root)
    what = f"{cls.__module__}.{cls.__qualname__}"
    inside = "" if key is root else f" inside the key {_short_repr(root)}"
    raise ConfigError(
        f"cannot partition by a key of type {what} ({_short_repr(key)}){inside}: ingest must put equal keys in "
        f"the same partition in every process, so it hashes keys by value and knows how to do that only for "
        f"{_SUPPORTED}. Map the key to one of those first, e.g. to a tuple of its fields or to a str "
        f"(`.map(lambda kv: ((kv[0].a, kv[0].b), kv[1]))`), or make it a frozen dataclass.")


def _short_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:  # noqa: BLE001 - only for the message
        text = f"<{type(obj).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


class Dataset(Generic[T]):
    """Immutable, lazily computed, partitioned records of one batch."""

    __slots__ = ("_parts", "_executor")

    def __init__(self, parts: Sequence[Partition], executor: TaskExecutor | None = None) -> None:
        self._parts: tuple[Partition, ...] = tuple(parts)
        self._executor = executor or InlineExecutor()

    # -- construction -------------------------------------------------------

    @classmethod
    def from_partitions(cls, partitions: Iterable[Sequence[Any]], executor: TaskExecutor | None = None) -> "Dataset[Any]":
        return cls([Partition(ListSource(list(p))) for p in partitions], executor)

    @classmethod
    def from_records(cls, records: Iterable[Any], num_partitions: int = 1, executor: TaskExecutor | None = None) -> "Dataset[Any]":
        """Exactly `num_partitions` partitions of consecutive records, sizes
        differing by at most one (some are empty when there are fewer records)."""
        items = list(records)
        if num_partitions <= 1:
            return cls.from_partitions([items], executor)
        n, total = num_partitions, len(items)
        return cls.from_partitions([items[i * total // n : (i + 1) * total // n] for i in range(n)], executor)

    def empty(self) -> "Dataset[Any]":
        return Dataset([], self._executor)

    @property
    def num_partitions(self) -> int:
        return len(self._parts)

    @property
    def partitions(self) -> tuple[Partition, ...]:
        return self._parts

    @property
    def executor(self) -> TaskExecutor:
        return self._executor

    def _with_op(self, op: PartitionOp) -> "Dataset[Any]":
        return Dataset([Partition(p.source, p.ops + (op,)) for p in self._parts], self._executor)

    # -- narrow transformations --------------------------------------------

    def map(self, fn: Callable[[T], U]) -> "Dataset[U]":
        return self._with_op(lambda _i, it: map(fn, it))

    def flat_map(self, fn: Callable[[T], Iterable[U]]) -> "Dataset[U]":
        return self._with_op(lambda _i, it: itertools.chain.from_iterable(map(fn, it)))

    def filter(self, fn: Callable[[T], bool]) -> "Dataset[T]":
        return self._with_op(lambda _i, it: filter(fn, it))

    def map_partitions(self, fn: Callable[[Iterator[T]], Iterable[U]]) -> "Dataset[U]":
        return self._with_op(lambda _i, it: fn(iter(it)))

    def map_partitions_with_index(self, fn: Callable[[int, Iterator[T]], Iterable[U]]) -> "Dataset[U]":
        return self._with_op(lambda i, it: fn(i, iter(it)))

    def map_values(self, fn: Callable[[V], U]) -> "Dataset[tuple[Any, U]]":
        return self._with_op(lambda _i, it: ((k, fn(v)) for k, v in it))

    def flat_map_values(self, fn: Callable[[V], Iterable[U]]) -> "Dataset[tuple[Any, U]]":
        return self._with_op(lambda _i, it: ((k, u) for k, v in it for u in fn(v)))

    def keys(self) -> "Dataset[Any]":
        return self._with_op(lambda _i, it: (k for k, _v in it))

    def values(self) -> "Dataset[Any]":
        return self._with_op(lambda _i, it: (v for _k, v in it))

    def union(self, *others: "Dataset[T]") -> "Dataset[T]":
        parts = list(self._parts)
        for other in others:
            parts.extend(other._parts)
        return Dataset(parts, self._executor)

    # -- actions --------------------------------------------------------------

    def glom(self) -> list[list[T]]:
        """Compute every partition; return their records, partition by partition."""
        return self._map_parts(_compute_list, list(enumerate(self._parts)))

    def _run(self, finish: Callable[[int, list[Any]], Any]) -> list[Any]:
        return self._map_parts(_compute_then, [(i, p, finish) for i, p in enumerate(self._parts)])

    def _map_parts(self, fn: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
        """One task per partition; a source with an `affinity` key (a Kafka
        topic-partition) asks the executor for the same worker every batch."""
        affinity = [getattr(p.source, "affinity", None) for p in self._parts]
        if any(key is not None for key in affinity):
            return self._executor.map(fn, tasks, affinity=affinity)
        return self._executor.map(fn, tasks)

    def collect(self) -> list[T]:
        return [record for part in self.glom() for record in part]

    def count(self) -> int:
        return sum(self._run(lambda _i, records: len(records)))

    def is_empty(self) -> bool:
        return self.count() == 0

    def take(self, n: int) -> list[T]:
        out: list[T] = []
        for i, part in enumerate(self._parts):
            if len(out) >= n:
                break
            out.extend(_compute((i, part))[: n - len(out)])
        return out

    def first(self) -> T:
        head = self.take(1)
        if not head:
            raise ValueError("first() of an empty dataset")
        return head[0]

    def reduce_optional(self, fn: Callable[[T, T], T]) -> tuple[bool, T | None]:
        """`(True, value)` with all records reduced by `fn`, or `(False, None)`
        for an empty dataset. Errors of `fn` propagate."""
        marker = _EMPTY
        partials = [p for p in self._run(lambda _i, records: _reduce_or(records, fn, marker)) if p is not marker]
        if not partials:
            return False, None
        return True, _reduce_or(partials, fn, marker)

    def reduce(self, fn: Callable[[T, T], T]) -> T:
        """Reduce all records with an associative function. Raises ValueError
        when there is nothing to reduce."""
        found, value = self.reduce_optional(fn)
        if not found:
            raise ValueError("reduce() of an empty dataset")
        return value  # type: ignore[return-value]

    def foreach_partition(self, fn: Callable[[Iterator[T]], None]) -> None:
        self._run(lambda _i, records: fn(iter(records)))

    def foreach(self, fn: Callable[[T], None]) -> None:
        def apply(_i: int, records: list[Any]) -> None:
            for record in records:
                fn(record)

        self._run(apply)

    def cache(self) -> "Dataset[T]":
        """Compute now and keep the records in memory, so later actions and
        shuffles do not run the chain again."""
        return Dataset.from_partitions(self.glom(), self._executor)

    # -- wide transformations (shuffles) ---------------------------------------

    def _shuffle(
        self,
        num_partitions: int,
        map_side: Callable[[int, list[Any]], list[list[Any]]],
        reduce_side: PartitionOp,
    ) -> "Dataset[Any]":
        buckets_per_task = self._run(map_side)
        inputs = []
        for b in range(num_partitions):
            merged = list(itertools.chain.from_iterable(task_buckets[b] for task_buckets in buckets_per_task))
            inputs.append(Partition(ListSource(merged), (reduce_side,)))
        if reduce_side is _pass:
            return Dataset([Partition(p.source) for p in inputs], self._executor)
        # The reduce side runs now, exactly once. Left lazy, it would run again
        # for every action over the same map-side output, and combiners that
        # update their first argument in place (group_by_key's lists, user
        # merge_combiners) would merge the same values twice.
        reduced = self._executor.map(_compute, list(enumerate(inputs)))
        return Dataset([Partition(ListSource(records)) for records in reduced], self._executor)

    def _default_partitions(self, num_partitions: int | None) -> int:
        if num_partitions is not None:
            if num_partitions < 1:
                raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
            return num_partitions
        return max(1, self.num_partitions)

    def combine_by_key(
        self,
        create: Callable[[V], Any],
        merge_value: Callable[[Any, V], Any],
        merge_combiners: Callable[[Any, Any], Any],
        num_partitions: int | None = None,
    ) -> "Dataset[tuple[Any, Any]]":
        n = self._default_partitions(num_partitions)

        def map_side(_i: int, records: list[Any]) -> list[list[Any]]:
            combined: dict[Any, Any] = {}
            for k, v in records:
                if k in combined:
                    combined[k] = merge_value(combined[k], v)
                else:
                    combined[k] = create(v)
            buckets: list[list[Any]] = [[] for _ in range(n)]
            for k, c in combined.items():
                buckets[portable_hash(k) % n].append((k, c))
            return buckets

        def reduce_side(_i: int, pairs: Iterable[Any]) -> Iterable[Any]:
            merged: dict[Any, Any] = {}
            for k, c in pairs:
                merged[k] = merge_combiners(merged[k], c) if k in merged else c
            return merged.items()

        return self._shuffle(n, map_side, reduce_side)

    def reduce_by_key(self, fn: Callable[[V, V], V], num_partitions: int | None = None) -> "Dataset[tuple[Any, V]]":
        return self.combine_by_key(_identity, fn, fn, num_partitions)

    def group_by_key(self, num_partitions: int | None = None) -> "Dataset[tuple[Any, list[Any]]]":
        return self.combine_by_key(_single, _append, _extend, num_partitions)

    def count_by_value(self) -> "Dataset[tuple[Any, int]]":
        return self.map(lambda x: (x, 1)).reduce_by_key(operator.add)

    def partition_by(self, num_partitions: int) -> "Dataset[tuple[Any, Any]]":
        """Hash-partition `(key, value)` pairs by key, keeping every pair."""
        n = self._default_partitions(num_partitions)

        def map_side(_i: int, records: list[Any]) -> list[list[Any]]:
            if n == 1:
                # Every key lands in the one partition: hashing each record (the
                # top of a stateful job's profile on one partition) decides nothing.
                # Keys are still hashed, and so checked, where a partition must be
                # chosen: restoring state into several partitions, or n > 1.
                return [records if isinstance(records, list) else list(records)]
            buckets: list[list[Any]] = [[] for _ in range(n)]
            for rec in records:
                buckets[portable_hash(rec[0]) % n].append(rec)
            return buckets

        return self._shuffle(n, map_side, _pass)

    def repartition(self, num_partitions: int) -> "Dataset[T]":
        """Spread records evenly over `num_partitions` partitions (round robin,
        deterministic)."""
        n = self._default_partitions(num_partitions)

        def map_side(i: int, records: list[Any]) -> list[list[Any]]:
            buckets: list[list[Any]] = [[] for _ in range(n)]
            for j, rec in enumerate(records):
                buckets[(i + j) % n].append(rec)
            return buckets

        return self._shuffle(n, map_side, _pass)

    def cogroup(self, *others: "Dataset[Any]", num_partitions: int | None = None) -> "Dataset[tuple[Any, tuple[list[Any], ...]]]":
        """For each key of any input, `(key, (values_in_self, values_in_other, ...))`."""
        width = 1 + len(others)
        n = self._default_partitions(num_partitions if num_partitions is not None else max(
            [self.num_partitions] + [o.num_partitions for o in others]))
        tagged = [self.map(_tagger(0))] + [o.map(_tagger(i + 1)) for i, o in enumerate(others)]
        union = tagged[0].union(*tagged[1:])

        def map_side(_i: int, records: list[Any]) -> list[list[Any]]:
            buckets: list[list[Any]] = [[] for _ in range(n)]
            for rec in records:
                buckets[portable_hash(rec[0]) % n].append(rec)
            return buckets

        def reduce_side(_i: int, tagged_pairs: Iterable[Any]) -> Iterable[Any]:
            groups: dict[Any, tuple[list[Any], ...]] = {}
            for k, (tag, v) in tagged_pairs:
                group = groups.get(k)
                if group is None:
                    group = groups[k] = tuple([] for _ in range(width))
                group[tag].append(v)
            return groups.items()

        return union._shuffle(n, map_side, reduce_side)

    def join(self, other: "Dataset[Any]", num_partitions: int | None = None) -> "Dataset[tuple[Any, tuple[Any, Any]]]":
        return self.cogroup(other, num_partitions=num_partitions).flat_map(
            lambda kv: [(kv[0], (v, w)) for v in kv[1][0] for w in kv[1][1]])

    def left_outer_join(self, other: "Dataset[Any]", num_partitions: int | None = None) -> "Dataset[tuple[Any, tuple[Any, Any]]]":
        return self.cogroup(other, num_partitions=num_partitions).flat_map(
            lambda kv: [(kv[0], (v, w)) for v in kv[1][0] for w in (kv[1][1] or [None])])

    def right_outer_join(self, other: "Dataset[Any]", num_partitions: int | None = None) -> "Dataset[tuple[Any, tuple[Any, Any]]]":
        return self.cogroup(other, num_partitions=num_partitions).flat_map(
            lambda kv: [(kv[0], (v, w)) for v in (kv[1][0] or [None]) for w in kv[1][1]])

    def full_outer_join(self, other: "Dataset[Any]", num_partitions: int | None = None) -> "Dataset[tuple[Any, tuple[Any, Any]]]":
        return self.cogroup(other, num_partitions=num_partitions).flat_map(
            lambda kv: [(kv[0], (v, w)) for v in (kv[1][0] or [None]) for w in (kv[1][1] or [None])])

    def __repr__(self) -> str:
        return f"Dataset({self.num_partitions} partitions)"


class _Empty:
    """Marks a partition with nothing to reduce. Pickled by name, so that it is
    still the same object after a round trip through a process pool."""

    __slots__ = ()

    def __reduce__(self) -> str:
        return "_EMPTY"


_EMPTY = _Empty()


def _reduce_or(records: Iterable[Any], fn: Callable[[Any, Any], Any], default: Any) -> Any:
    it = iter(records)
    try:
        acc = next(it)
    except StopIteration:
        return default
    for rec in it:
        acc = fn(acc, rec)
    return acc


def _identity(x: Any) -> Any:
    return x


def _single(x: Any) -> list[Any]:
    return [x]


def _append(acc: list[Any], x: Any) -> list[Any]:
    acc.append(x)
    return acc


def _extend(acc: list[Any], more: list[Any]) -> list[Any]:
    acc.extend(more)
    return acc


def _pass(_i: int, records: Iterable[Any]) -> Iterable[Any]:
    return records


def _tagger(tag: int) -> Callable[[Any], Any]:
    return lambda kv: (kv[0], (tag, kv[1]))
