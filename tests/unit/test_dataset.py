"""Specification of `Dataset`, one batch's partitioned records."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import Dataset, InlineExecutor, ProcessExecutor, ThreadExecutor
from ingest.dataset import portable_hash

records = st.lists(st.integers(-1000, 1000), max_size=60)
pairs = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", ""]), st.integers(-100, 100)), max_size=40)


@pytest.fixture(params=["inline", "threads", "processes"])
def executor(request):
    ex = {"inline": lambda: InlineExecutor(), "threads": lambda: ThreadExecutor(2),
          "processes": lambda: ProcessExecutor(2)}[request.param]()
    yield ex
    ex.shutdown()


@given(records, st.integers(1, 8))
def test_from_records_makes_exactly_the_requested_partitions_in_order(items, n):
    ds = Dataset.from_records(items, n)
    parts = ds.glom()
    assert ds.num_partitions == n
    assert [r for p in parts for r in p] == items
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_narrow_operations_run_only_when_an_action_needs_the_records():
    calls = []
    ds = Dataset.from_records([1, 2, 3], 2).map(lambda x: calls.append(x) or x * 10).filter(lambda x: x > 10)
    assert calls == []
    assert ds.collect() == [20, 30]
    assert sorted(calls) == [1, 2, 3]


def test_cache_computes_the_chain_once_for_later_actions():
    calls = []
    cached = Dataset.from_records(range(6), 3).map(lambda x: calls.append(x) or x + 1).cache()
    assert cached.collect() == [1, 2, 3, 4, 5, 6]
    assert cached.count() == 6
    assert sorted(calls) == list(range(6))


def test_take_returns_the_first_records_in_partition_order():
    ds = Dataset.from_partitions([[1, 2], [], [3, 4, 5]])
    assert ds.take(0) == []
    assert ds.take(3) == [1, 2, 3]
    assert ds.take(10) == [1, 2, 3, 4, 5]
    assert ds.first() == 1


def test_first_and_reduce_of_an_empty_dataset_raise_value_error():
    empty = Dataset.from_partitions([[], []])
    assert empty.is_empty()
    with pytest.raises(ValueError, match="empty"):
        empty.first()
    with pytest.raises(ValueError, match="empty"):
        empty.reduce(operator.add)


def test_reduce_skips_empty_partitions_on_every_executor(executor):
    ds = Dataset.from_partitions([[], [1, 2], [], [3], []], executor)
    assert ds.reduce(operator.add) == 6
    assert ds.map(lambda x: [x]).reduce(operator.add) == [1, 2, 3]


def test_group_by_key_gives_the_same_groups_when_computed_again():
    # A key present in several partitions: merging must not reuse (and grow)
    # the map side's lists when the result is computed a second time.
    grouped = Dataset.from_partitions([[("a", 1), ("b", 2)], [("a", 3)], [("a", 4), ("b", 5)]]).group_by_key()
    first = sorted((k, sorted(v)) for k, v in grouped.collect())
    second = sorted((k, sorted(v)) for k, v in grouped.collect())
    assert first == second == [("a", [1, 3, 4]), ("b", [2, 5])]
    assert grouped.count() == 2


def test_combine_by_key_allows_combiners_that_update_their_first_argument():
    def merge(acc, other):
        acc.update(other)
        return acc

    ds = Dataset.from_partitions([[("k", 1), ("k", 2)], [("k", 2), ("k", 3)]]).combine_by_key(
        lambda v: {v}, lambda acc, v: acc | {v}, merge)
    assert ds.collect() == [("k", {1, 2, 3})]
    assert ds.collect() == [("k", {1, 2, 3})]


@given(pairs, st.integers(1, 4), st.integers(1, 5))
def test_reduce_by_key_puts_each_key_in_one_partition_chosen_by_portable_hash(items, in_parts, out_parts):
    ds = Dataset.from_records(items, in_parts).reduce_by_key(operator.add, out_parts)
    parts = ds.glom()
    assert len(parts) == out_parts
    for index, part in enumerate(parts):
        for key, _total in part:
            assert portable_hash(key) % out_parts == index
    expected: Counter[str] = Counter()
    for k, v in items:
        expected[k] += v
    assert dict(ds.collect()) == {k: expected[k] for k in {k for k, _ in items}}


@given(records, st.integers(1, 4), st.integers(1, 6))
def test_repartition_keeps_every_record_and_balances_a_single_partition(items, in_parts, n):
    ds = Dataset.from_records(items, in_parts).repartition(n)
    parts = ds.glom()
    assert len(parts) == n
    assert Counter(r for p in parts for r in p) == Counter(items)
    if in_parts == 1:
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_shuffle_with_zero_partitions_is_refused():
    with pytest.raises(ValueError, match="num_partitions must be >= 1"):
        Dataset.from_records([("a", 1)]).reduce_by_key(operator.add, 0)


def test_cogroup_of_three_datasets_lists_each_inputs_values_per_key():
    a = Dataset.from_records([("x", 1), ("y", 2), ("x", 3)], 2)
    b = Dataset.from_records([("y", "b1")])
    c = Dataset.from_records([("z", None), ("x", "c1")], 2)
    result = {k: tuple(sorted(vs, key=repr) for vs in groups) for k, groups in a.cogroup(b, c).collect()}
    assert result == {
        "x": ([1, 3], [], ["c1"]),
        "y": ([2], ["b1"], []),
        "z": ([], [], [None]),
    }


def test_union_keeps_the_partitions_of_both_sides_in_order():
    left = Dataset.from_partitions([[1], [2]])
    right = Dataset.from_partitions([[3, 4]])
    assert left.union(right).glom() == [[1], [2], [3, 4]]


def test_map_partitions_with_index_sees_each_partition_and_its_index():
    ds = Dataset.from_partitions([[1, 2], [], [3]])
    assert ds.map_partitions_with_index(lambda i, it: [(i, list(it))]).collect() == [(0, [1, 2]), (1, []), (2, [3])]


def test_partition_tasks_run_on_the_datasets_executor(executor):
    ds = Dataset.from_partitions([[1], [2], [3], [4]], executor)
    where = ds.map_partitions(lambda it: [(os.getpid(), __import__("threading").current_thread().name)]).collect()
    pids = {pid for pid, _ in where}
    threads = {name for _, name in where}
    if isinstance(executor, ProcessExecutor):
        assert os.getpid() not in pids
    elif isinstance(executor, ThreadExecutor):
        assert pids == {os.getpid()}
        assert all(name.startswith("ingest-task") for name in threads)
    else:
        assert pids == {os.getpid()}
        assert threads == {__import__("threading").current_thread().name}


KEYS = ["", "a", "key-1", "ünïcödé", 0, 1, -1, 2**40, 3.0, 2.5, None, True, ("a", 1), ("nested", ("t", 2)), b"raw"]


def test_portable_hash_does_not_depend_on_the_process_or_hash_seed():
    script = (
        "import json; from ingest.dataset import portable_hash; "
        f"keys = {KEYS!r}; print(json.dumps([portable_hash(k) for k in keys]))"
    )
    here = [portable_hash(k) for k in KEYS]
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here
    assert all(isinstance(h, int) and h >= 0 for h in here)


def test_portable_hash_agrees_for_numbers_that_compare_equal():
    # Equal keys must land in the same bucket, as they are one key in a dict.
    assert portable_hash(3) == portable_hash(3.0)
    assert portable_hash(True) == portable_hash(1)
    assert portable_hash(0) == portable_hash(False) == portable_hash(0.0)


@given(pairs)
def test_partition_by_one_partition_keeps_every_pair_in_order(items):
    parts = Dataset.from_records(items, 3).partition_by(1).glom()
    assert parts == [items]
