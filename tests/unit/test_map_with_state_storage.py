"""How `map_with_state` stores a key's state: the value itself without a
timeout, `(value, last update)` with one. Checkpoints have the same columns
either way, so a job can add or drop its timeout across a restart; a state of
None is still a state; and a partition of plain values is a dict the garbage
collector does not scan (the reason for storing plain values)."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable

import pytest

from ingest import ManualClock, StreamingContext


def counting(key: str, value: Any, state: Any) -> Any:
    if state.is_timing_out():
        return ("timeout", key, state.get())
    n = state.get_option(0) + value
    state.update(n)
    return (key, n)


def factory(batches: list[list[tuple[str, int]]], timeout: float | None, seen: list[tuple[int, Any]],
            fn: Callable[[str, Any, Any], Any] = counting) -> Callable[[], StreamingContext]:
    def build() -> StreamingContext:
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        ssc.queue_stream(batches, name="pairs").map_with_state(fn, timeout=timeout, num_partitions=2).foreach_batch(
            lambda batch: seen.extend((batch.time, r) for r in sorted(batch.collect(), key=repr)))
        return ssc
    return build


def live(directory: Path, build: Callable[[], StreamingContext], steps: int, full_every: int) -> None:
    ssc = StreamingContext.get_or_create(str(directory), build, full_snapshot_every=full_every)
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)


@pytest.mark.parametrize("full_every", [1, 100])  # restored from a full snapshot / from deltas
def test_a_restart_that_drops_the_timeout_keeps_every_count(tmp_path: Path, full_every: int) -> None:
    batches = [[("a", 1), ("b", 2)], [("a", 1)], [("a", 1), ("b", 1)]]
    seen: list[tuple[int, Any]] = []
    live(tmp_path, factory(batches, 60.0, seen), 2, full_every)
    live(tmp_path, factory(batches, None, seen), 1, full_every)
    assert seen == [(1000, ("a", 1)), (1000, ("b", 2)), (2000, ("a", 2)), (3000, ("a", 3)), (3000, ("b", 3))]


@pytest.mark.parametrize("full_every", [1, 100])
def test_a_restart_that_adds_a_timeout_starts_the_idle_clock_of_restored_keys_at_its_first_batch(
        tmp_path: Path, full_every: int) -> None:
    batches = [[("a", 1), ("b", 5)], [("a", 1)], [], [("a", 1)], [], [], []]
    seen: list[tuple[int, Any]] = []
    live(tmp_path, factory(batches, None, seen), 2, full_every)
    live(tmp_path, factory(batches, 2.0, seen), 5, full_every)
    # Restored at batch 3 (3000): "b", idle since, times out 2 s later; "a" is
    # updated at 4000 and times out at 6000 with its count carried over.
    assert seen == [(1000, ("a", 1)), (1000, ("b", 5)), (2000, ("a", 2)), (4000, ("a", 3)),
                    (5000, ("timeout", "b", 5)), (6000, ("timeout", "a", 3))]


def test_a_state_of_none_exists_in_the_next_batch() -> None:
    def keep_none(key: str, value: Any, state: Any) -> Any:
        was = (state.exists(), state.get_option("unset"))
        state.update(None)
        return (key, was)

    seen: list[tuple[int, Any]] = []
    ssc = factory([[("a", 1)], [("a", 1)]], None, seen, keep_none)()
    ssc.start()
    try:
        ssc.step(2)
    finally:
        ssc.stop(graceful=False)
    assert seen == [(1000, ("a", (False, "unset"))), (2000, ("a", (True, None)))]


def test_numbers_kept_without_a_timeout_are_a_partition_the_garbage_collector_skips() -> None:
    # Collection disabled, so that none untracks the (value, time) tuples a
    # timeout keeps (and then their dict) while the test runs.
    seen: list[tuple[int, Any]] = []
    batches = [[(f"k{i}", 1) for i in range(500)], [(f"k{i}", 1) for i in range(0, 500, 2)]]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for timeout, scanned in ((None, False), (60.0, True)):
            ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
            op = ssc.queue_stream(batches, name="pairs").map_with_state(counting, timeout=timeout, num_partitions=2)
            op.foreach_batch(lambda batch: seen.extend(batch.collect()))
            ssc.start()
            try:
                ssc.step(2)
            finally:
                ssc.stop(graceful=False)
            assert dict(op.state_items()) == {f"k{i}": 2 if i % 2 == 0 else 1 for i in range(500)}
            assert [gc.is_tracked(part) for part in op._committed] == [scanned, scanned]
    finally:
        if was_enabled:
            gc.enable()


def test_each_record_sees_its_own_key_state_whatever_the_call_before_did() -> None:
    # One State is re-pointed at each record's key: a removal, an update or a
    # read of the key before must not leak into the next call.
    def act(key: str, value: Any, state: Any) -> Any:
        before = (state.exists(), state.get_option(None))
        if value == "remove":
            state.remove()
        else:
            state.update(value)
        return (key, before)

    seen: list[tuple[int, Any]] = []
    batches = [[("a", 1), ("b", 2)], [("a", "remove"), ("b", 3), ("a", 4), ("c", "remove"), ("b", 5)]]
    ssc = factory(batches, None, seen, act)()
    ssc.start()
    try:
        ssc.step(2)
    finally:
        ssc.stop(graceful=False)
    assert [r for _t, r in seen] == sorted([("a", (False, None)), ("b", (False, None))], key=repr) + sorted(
        [("a", (True, 1)), ("b", (True, 2)), ("a", (False, None)), ("c", (False, None)), ("b", (True, 3))], key=repr)
