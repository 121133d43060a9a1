"""Specification of the DStream transformations.

Every transformation runs over many batches of a queue stream on a manual
clock and is checked, batch by batch, against the same computation in plain
Python. Where the framework does not define an order (shuffles), results are
compared as multisets.
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import BatchFailedError, ManualClock, StreamingContext

# Each example starts and stops a context: keep the count moderate.
streams_settings = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.lists(st.integers(-1000, 1000), max_size=25)
batches_of_numbers = st.lists(numbers, min_size=1, max_size=6)
pair = st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(-50, 50))
batches_of_pairs = st.lists(st.lists(pair, max_size=15), min_size=1, max_size=6)
partitions = st.integers(1, 4)

BATCH_MS = 1000


def run(batches: list[list[Any]], build: Callable[..., Any], *, num_partitions: int = 1,
        others: list[list[list[Any]]] = (), **options: Any) -> list[list[Any]]:
    """Run `build(stream, *other_streams)` over `batches` (one queued list per
    batch) and return the records of each batch of the stream it returns."""
    ssc = StreamingContext(batch_interval=BATCH_MS / 1000, clock=ManualClock(), stop_on_signal=False,
                           log_batches=False, **options)
    try:
        first = ssc.queue_stream(batches, num_partitions=num_partitions)
        rest = [ssc.queue_stream(b, num_partitions=num_partitions) for b in others]
        out: list[list[Any]] = []
        build(first, *rest).foreach_batch(lambda batch: out.append(batch.collect()))
        ssc.start()
        ssc.step(max([len(batches)] + [len(b) for b in others]))
    finally:
        ssc.stop(graceful=False)
    return out


def multiset(records: list[Any]) -> Counter[str]:
    return Counter(repr(r) for r in records)


def grouped(records: list[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = defaultdict(list)
    for k, v in records:
        out[k].append(v)
    return out


def normalized_groups(records: list[tuple[Any, list[Any]]]) -> dict[Any, list[Any]]:
    keys = [k for k, _ in records]
    assert len(keys) == len(set(keys)), f"a key appears twice: {records}"
    return {k: sorted(vs) for k, vs in records}


def pad(batches: list[list[Any]], n: int) -> list[list[Any]]:
    return batches + [[] for _ in range(n - len(batches))]


# -- narrow transformations: order within a batch is kept -------------------------


@streams_settings
@given(batches_of_numbers, partitions)
def test_map_applies_the_function_to_every_record(batches, n):
    assert run(batches, lambda s: s.map(lambda x: x * 3 + 1), num_partitions=n) == \
        [[x * 3 + 1 for x in b] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_flat_map_concatenates_the_returned_iterables(batches, n):
    fn = lambda x: [x] * (x % 3)  # noqa: E731 - 0, 1 or 2 copies
    assert run(batches, lambda s: s.flat_map(fn), num_partitions=n) == \
        [[y for x in b for y in fn(x)] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_filter_keeps_the_records_the_predicate_accepts(batches, n):
    assert run(batches, lambda s: s.filter(lambda x: x % 2 == 0), num_partitions=n) == \
        [[x for x in b if x % 2 == 0] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_map_partitions_calls_the_function_once_per_partition_with_its_records(batches, n):
    out = run(batches, lambda s: s.map_partitions(lambda it: [list(it)]), num_partitions=n)
    for got, b in zip(out, batches, strict=True):
        assert len(got) == n  # one call per partition, empty partitions included
        assert [x for part in got for x in part] == b


@streams_settings
@given(batches_of_pairs, partitions)
def test_map_values_maps_values_and_keeps_keys(batches, n):
    assert run(batches, lambda s: s.map_values(lambda v: -v), num_partitions=n) == \
        [[(k, -v) for k, v in b] for b in batches]


@streams_settings
@given(batches_of_pairs, partitions)
def test_flat_map_values_pairs_each_returned_value_with_its_key(batches, n):
    assert run(batches, lambda s: s.flat_map_values(lambda v: range(v % 3)), num_partitions=n) == \
        [[(k, u) for k, v in b for u in range(v % 3)] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_transform_with_a_one_argument_function_gets_the_batch_dataset(batches, n):
    out = run(batches, lambda s: s.transform(lambda ds: ds.filter(lambda x: x > 0).map(str)), num_partitions=n)
    assert out == [[str(x) for x in b if x > 0] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_transform_with_a_two_argument_function_gets_the_batch_time_too(batches, n):
    out = run(batches, lambda s: s.transform(lambda t, ds: ds.map(lambda x: (t, x))), num_partitions=n)
    assert out == [[((i + 1) * BATCH_MS, x) for x in b] for i, b in enumerate(batches)]


def test_transform_that_does_not_return_a_dataset_fails_the_batch():
    with pytest.raises(BatchFailedError, match="must return a Dataset, got list"):
        run([[1]], lambda s: s.transform(lambda ds: ds.collect()))


@streams_settings
@given(batches_of_numbers, batches_of_numbers, partitions)
def test_union_has_the_records_of_both_streams(left, right, n):
    size = max(len(left), len(right))
    out = run(left, lambda a, b: a.union(b), others=[right], num_partitions=n)
    assert out == [x + y for x, y in zip(pad(left, size), pad(right, size))]


def test_union_of_three_streams_through_the_context():
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    try:
        streams = [ssc.queue_stream([[i, i + 10]]) for i in range(3)]
        out: list[list[int]] = []
        ssc.union(*streams).foreach_batch(lambda b: out.append(b.collect()))
        ssc.start()
        ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert out == [[0, 10, 1, 11, 2, 12]]


# -- wide transformations: compared as multisets ----------------------------------


@streams_settings
@given(batches_of_numbers, partitions, st.integers(1, 5))
def test_repartition_keeps_every_record_in_the_requested_number_of_partitions(batches, n, target):
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    seen: list[list[list[int]]] = []
    try:
        ssc.queue_stream(batches, num_partitions=n).repartition(target).foreach_batch(
            lambda b: seen.append(b.partitions()))
        ssc.start()
        ssc.step(len(batches))
    finally:
        ssc.stop(graceful=False)
    for parts, b in zip(seen, batches, strict=True):
        assert len(parts) == target
        assert multiset([x for p in parts for x in p]) == multiset(b)


@streams_settings
@given(batches_of_numbers, partitions)
def test_count_gives_one_record_per_batch_with_its_size(batches, n):
    assert run(batches, lambda s: s.count(), num_partitions=n) == [[len(b)] for b in batches]


@streams_settings
@given(batches_of_numbers, partitions)
def test_count_by_value_counts_each_distinct_record(batches, n):
    out = run(batches, lambda s: s.map(lambda x: x % 7).count_by_value(), num_partitions=n)
    assert [dict(got) for got in out] == [dict(Counter(x % 7 for x in b)) for b in batches]
    assert all(len(got) == len(dict(got)) for got in out)


@streams_settings
@given(batches_of_numbers, partitions)
def test_reduce_gives_the_reduced_value_of_each_non_empty_batch(batches, n):
    out = run(batches, lambda s: s.reduce(operator.add), num_partitions=n)
    assert out == [[sum(b)] if b else [] for b in batches]


def test_reduce_combines_partitions_with_the_same_function():
    # max is associative and commutative: any partitioning gives the same answer.
    out = run([[5, 1, 9, 3, 7], [2]], lambda s: s.reduce(max), num_partitions=3)
    assert out == [[9], [2]]


def test_reduce_function_that_raises_value_error_fails_the_batch():
    def broken(a, b):
        raise ValueError("bad record")

    with pytest.raises(BatchFailedError, match="bad record"):
        run([[1, 2, 3]], lambda s: s.reduce(broken))


@streams_settings
@given(batches_of_pairs, partitions, st.none() | st.integers(1, 4))
def test_reduce_by_key_reduces_the_values_of_each_key(batches, n, out_parts):
    out = run(batches, lambda s: s.reduce_by_key(operator.add, out_parts), num_partitions=n)
    expected = [{k: sum(vs) for k, vs in grouped(b).items()} for b in batches]
    assert [dict(got) for got in out] == expected
    assert [len(got) for got in out] == [len(e) for e in expected]  # each key once


@streams_settings
@given(batches_of_pairs, partitions)
def test_combine_by_key_builds_one_combiner_per_key(batches, n):
    out = run(batches, lambda s: s.combine_by_key(lambda v: (v, 1), lambda c, v: (c[0] + v, c[1] + 1),
                                                  lambda c, d: (c[0] + d[0], c[1] + d[1])), num_partitions=n)
    assert [dict(got) for got in out] == [{k: (sum(vs), len(vs)) for k, vs in grouped(b).items()} for b in batches]


@streams_settings
@given(batches_of_pairs, partitions, st.none() | st.integers(1, 4))
def test_group_by_key_lists_every_value_of_each_key(batches, n, out_parts):
    out = run(batches, lambda s: s.group_by_key(out_parts), num_partitions=n)
    assert [normalized_groups(got) for got in out] == \
        [{k: sorted(vs) for k, vs in grouped(b).items()} for b in batches]


def expected_join(left: list[tuple[Any, Any]], right: list[tuple[Any, Any]], kind: str) -> list[Any]:
    lg, rg = grouped(left), grouped(right)
    out = []
    keys = set(lg) | set(rg)
    for k in keys:
        ls, rs = lg.get(k, []), rg.get(k, [])
        if kind in ("left", "full") and not rs:
            rs_ = [None]
        else:
            rs_ = rs
        if kind in ("right", "full") and not ls:
            ls_ = [None]
        else:
            ls_ = ls
        if kind == "inner" and (not ls or not rs):
            continue
        if kind == "left" and not ls:
            continue
        if kind == "right" and not rs:
            continue
        out.extend((k, (v, w)) for v in ls_ for w in rs_)
    return out


JOINS = {"inner": "join", "left": "left_outer_join", "right": "right_outer_join", "full": "full_outer_join"}


@pytest.mark.parametrize("kind", list(JOINS))
@streams_settings
@given(left=batches_of_pairs, right=batches_of_pairs, n=partitions, out_parts=st.none() | st.integers(1, 3))
def test_joins_pair_the_values_of_equal_keys(kind, left, right, n, out_parts):
    size = max(len(left), len(right))
    out = run(left, lambda a, b: getattr(a, JOINS[kind])(b, num_partitions=out_parts), others=[right],
              num_partitions=n)
    expected = [expected_join(x, y, kind) for x, y in zip(pad(left, size), pad(right, size))]
    assert [multiset(got) for got in out] == [multiset(e) for e in expected]


@streams_settings
@given(left=batches_of_pairs, right=batches_of_pairs, n=partitions)
def test_cogroup_lists_each_streams_values_for_every_key_of_either(left, right, n):
    size = max(len(left), len(right))
    out = run(left, lambda a, b: a.cogroup(b), others=[right], num_partitions=n)
    for got, x, y in zip(out, pad(left, size), pad(right, size), strict=True):
        lg, rg = grouped(x), grouped(y)
        assert len(got) == len({k for k, _ in got})
        assert {k: (sorted(a), sorted(b)) for k, (a, b) in got} == \
            {k: (sorted(lg.get(k, [])), sorted(rg.get(k, []))) for k in set(lg) | set(rg)}


def test_two_outputs_over_one_shuffled_stream_see_the_same_records():
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    first: list[Any] = []
    second: list[Any] = []
    try:
        groups = ssc.queue_stream([[("a", 1), ("b", 2), ("a", 3), ("a", 4)]], num_partitions=3).group_by_key()
        groups.foreach_batch(lambda b: first.append(normalized_groups(b.collect())))
        groups.foreach_batch(lambda b: second.append((b.count(), normalized_groups(b.collect()))))
        ssc.start()
        ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert first == [{"a": [1, 3, 4], "b": [2]}]
    assert second == [(2, {"a": [1, 3, 4], "b": [2]})]


def test_chained_transformations_across_many_batches_match_plain_python():
    batches = [[f"w{(i * 7 + j) % 11} w{j % 3}" for j in range(i * 5)] for i in range(12)]
    out = run(batches, lambda s: s.flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add)
              .filter(lambda kv: kv[1] > 1), num_partitions=3)
    expected = [{w: c for w, c in Counter(w for line in b for w in line.split()).items() if c > 1} for b in batches]
    assert [dict(got) for got in out] == expected


# -- the same results on every executor and partitioning ----------------------------------


SAMPLE_BATCHES = [[(f"k{(i * 13 + j) % 9}", i * 100 + j) for j in range(i * 11 % 37)] for i in range(8)]
OTHER_BATCHES = [[(f"k{(i + j) % 5}", -j) for j in range(i * 3 % 7)] for i in range(8)]

# name: (build(a, b), expected(batch time, records of a, records of b))
PIPELINES: dict[str, tuple[Callable[..., Any], Callable[[int, list[Any], list[Any]], list[Any]]]] = {
    "map+filter": (lambda a, b: a.map(lambda kv: (kv[0], kv[1] * 2)).filter(lambda kv: kv[1] % 3 != 0),
                   lambda t, x, y: [(k, v * 2) for k, v in x if (v * 2) % 3 != 0]),
    "count": (lambda a, b: a.count(), lambda t, x, y: [len(x)]),
    "reduce": (lambda a, b: a.map(lambda kv: kv[1]).reduce(operator.add),
               lambda t, x, y: [sum(v for _, v in x)] if x else []),
    "reduce_by_key": (lambda a, b: a.reduce_by_key(operator.add),
                      lambda t, x, y: [(k, sum(vs)) for k, vs in grouped(x).items()]),
    "group_by_key": (lambda a, b: a.group_by_key().map_values(sorted),
                     lambda t, x, y: [(k, sorted(vs)) for k, vs in grouped(x).items()]),
    "count_by_value": (lambda a, b: a.map(lambda kv: kv[0]).count_by_value(),
                       lambda t, x, y: list(Counter(k for k, _ in x).items())),
    "repartition": (lambda a, b: a.repartition(3), lambda t, x, y: x),
    "union": (lambda a, b: a.union(b), lambda t, x, y: x + y),
    "join": (lambda a, b: a.join(b), lambda t, x, y: expected_join(x, y, "inner")),
    "left_outer_join": (lambda a, b: a.left_outer_join(b), lambda t, x, y: expected_join(x, y, "left")),
    "full_outer_join": (lambda a, b: a.full_outer_join(b), lambda t, x, y: expected_join(x, y, "full")),
    "cogroup": (lambda a, b: a.cogroup(b).map_values(lambda g: (sorted(g[0]), sorted(g[1]))),
                lambda t, x, y: [(k, (sorted(grouped(x).get(k, [])), sorted(grouped(y).get(k, []))))
                                 for k in set(grouped(x)) | set(grouped(y))]),
    "transform": (lambda a, b: a.transform(lambda t, ds: ds.map(lambda kv: (t, kv[0]))),
                  lambda t, x, y: [(t, k) for k, _ in x]),
}


@pytest.mark.parametrize("executor,num_partitions", [
    ("inline", 1), ("inline", 4), ("threads", 3), ("processes", 3),
])
def test_results_do_not_depend_on_the_executor_or_the_partitioning(make_context, executor, num_partitions):
    ssc = make_context(executor=executor, parallelism=2, log_batches=False)
    a = ssc.queue_stream(SAMPLE_BATCHES, num_partitions=num_partitions)
    b = ssc.queue_stream(OTHER_BATCHES, num_partitions=num_partitions)
    outputs: dict[str, list[list[Any]]] = {}
    for name, (build, _expected) in PIPELINES.items():
        sink = outputs.setdefault(name, [])
        build(a, b).foreach_batch(lambda batch, sink=sink: sink.append(batch.collect()), name=name)
    ssc.start()
    ssc.step(len(SAMPLE_BATCHES))
    ssc.stop(graceful=True)
    assert ssc.error is None
    for name, (_build, expected) in PIPELINES.items():
        got = outputs[name]
        assert len(got) == len(SAMPLE_BATCHES), name
        for i, (x, y) in enumerate(zip(SAMPLE_BATCHES, OTHER_BATCHES)):
            assert multiset(got[i]) == multiset(expected((i + 1) * BATCH_MS, x, y)), f"{name}, batch {i}"
