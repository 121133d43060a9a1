"""Stateful and windowed streams, checked batch by batch against plain-Python
references of the same computation.

Every job runs on a `ManualClock` starting at 0 with a 1 s batch interval, so
batch i (1-based) has time `i * 1000` and a window or slide of n seconds spans
n batches. Windows cover `(t - window, t]`, as in Spark.
"""

from __future__ import annotations

import operator
import time
from collections import Counter
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import ConfigError, DStream, ManualClock, StreamingContext

MS = 1000
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])


def new_context() -> StreamingContext:
    return StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)


def run(batches: list[list[Any]], build: Callable[[DStream[Any]], dict[str, DStream[Any]]]
        ) -> dict[str, list[tuple[int, list[Any]]]]:
    """Run `build(input)`'s streams over `batches`; every output as [(batch time, records)]."""
    ssc = new_context()
    source = ssc.queue_stream(batches)
    outputs: dict[str, list[tuple[int, list[Any]]]] = {}
    for name, stream in build(source).items():
        collected = outputs.setdefault(name, [])
        stream.foreach_batch(lambda batch, collected=collected: collected.append((batch.time, batch.collect())))
    ssc.start()
    try:
        ssc.step(len(batches))
    finally:
        ssc.stop(graceful=False)
    return outputs


def canonical(records: list[Any]) -> list[Any]:
    return sorted(records, key=repr)


def canonical_outputs(outputs: list[tuple[int, list[Any]]]) -> list[tuple[int, list[Any]]]:
    return [(t, canonical(records)) for t, records in outputs]


pair_batches = st.lists(st.lists(st.tuples(KEYS, st.integers(1, 4)), max_size=6), min_size=1, max_size=12)


# -- update_state_by_key ----------------------------------------------------------------------


def running_total(values: list[int], old: int | None) -> int | None:
    """Adds new values; a key without new values decays by one and is removed at zero."""
    if not values:
        return None if old is None or old <= 1 else old - 1
    return (old or 0) + sum(values)


def reference_update_state_by_key(batches: list[list[tuple[str, int]]], initial: dict[str, int]
                                  ) -> list[tuple[int, list[tuple[str, int]]]]:
    state = dict(initial)
    out = []
    for i, batch in enumerate(batches, 1):
        grouped: dict[str, list[int]] = {}
        for k, v in batch:
            grouped.setdefault(k, []).append(v)
        for k in set(state) | set(grouped):
            new = running_total(grouped.get(k, []), state.get(k))
            if new is None:
                state.pop(k, None)
            else:
                state[k] = new
        out.append((i * MS, canonical(list(state.items()))))
    return out


@PROPERTY
@given(batches=pair_batches, initial=st.dictionaries(KEYS, st.integers(1, 3), max_size=3),
       partitions=st.integers(1, 3))
def test_update_state_by_key_matches_a_running_reference(batches, initial, partitions):
    out = run(batches, lambda s: {"state": s.update_state_by_key(
        running_total, initial_state=initial, num_partitions=partitions)})
    assert canonical_outputs(out["state"]) == reference_update_state_by_key(batches, initial)


def test_update_state_by_key_returning_none_removes_the_key():
    def keep_until_stop(values: list[str], old: list[str] | None) -> list[str] | None:
        if "stop" in values:
            return None
        return (old or []) + values

    out = run([[("a", "x"), ("b", "y")], [("a", "stop")], [], [("a", "z")]],
              lambda s: {"state": s.update_state_by_key(keep_until_stop)})
    assert canonical_outputs(out["state"]) == [
        (1000, [("a", ["x"]), ("b", ["y"])]),
        (2000, [("b", ["y"])]),
        (3000, [("b", ["y"])]),
        (4000, [("a", ["z"]), ("b", ["y"])]),  # a fresh start: the removed state is gone
    ]


def test_update_state_by_key_calls_the_function_for_idle_keys_with_no_values():
    calls: list[tuple[str, list[int], Any]] = []

    def record(values: list[int], old: int | None) -> int:
        return (old or 0) + sum(values)

    def spy(stream: DStream[Any]) -> dict[str, DStream[Any]]:
        def fn(values: list[int], old: int | None) -> int:
            calls.append((len(calls), values, old))
            return record(values, old)
        return {"state": stream.update_state_by_key(fn, initial_state={"z": 7})}

    out = run([[("a", 1)], []], spy)
    assert canonical_outputs(out["state"]) == [(1000, [("a", 1), ("z", 7)]), (2000, [("a", 1), ("z", 7)])]
    assert sorted((values, old) for _, values, old in calls) == [
        ([], 1), ([], 7), ([], 7), ([1], None)]


# -- map_with_state ---------------------------------------------------------------------------------


def tally(key: str, value: int | None, state: Any) -> Any:
    """0 removes the key, a negative value reads without writing (and outputs
    nothing), anything else adds to the total."""
    if state.is_timing_out():
        return ("timeout", key, value, state.get())
    if value == 0:
        state.remove()
        return ("removed", key)
    if value < 0:
        return None
    total = state.get_option(0) + value
    state.update(total)
    return ("total", key, total)


def reference_map_with_state(batches: list[list[tuple[str, int]]], timeout_s: int | None = None,
                             initial: dict[str, int] | None = None
                             ) -> tuple[list[tuple[int, list[Any]]], list[tuple[int, list[Any]]]]:
    """(outputs, state snapshots) per batch."""
    state: dict[str, int] = dict(initial or {})
    last_seen = {k: MS for k in state}  # initial keys start their idle clock with the first batch
    outputs, snapshots = [], []
    for i, batch in enumerate(batches, 1):
        t = i * MS
        out = []
        touched = set()
        for k, v in batch:
            touched.add(k)
            if v == 0:
                state.pop(k, None)
                out.append(("removed", k))
            elif v > 0:
                state[k] = state.get(k, 0) + v
                out.append(("total", k, state[k]))
            if k in state:
                last_seen[k] = t
        if timeout_s is not None:
            for k in list(state):
                if k not in touched and last_seen[k] + timeout_s * MS <= t:
                    out.append(("timeout", k, None, state.pop(k)))
        outputs.append((t, canonical(out)))
        snapshots.append((t, canonical(list(state.items()))))
    return outputs, snapshots


def map_with_state_job(timeout: float | None = None, initial: dict[str, int] | None = None,
                       partitions: int | None = None) -> Callable[[DStream[Any]], dict[str, DStream[Any]]]:
    def build(stream: DStream[Any]) -> dict[str, DStream[Any]]:
        mapped = stream.map_with_state(tally, timeout=timeout, initial_state=initial, num_partitions=partitions)
        return {"out": mapped, "snapshots": mapped.state_snapshots()}
    return build


signed_batches = st.lists(st.lists(st.tuples(KEYS, st.integers(-1, 3)), max_size=6), min_size=1, max_size=12)


@PROPERTY
@given(batches=signed_batches, partitions=st.integers(1, 3))
def test_map_with_state_outputs_and_snapshots_match_a_reference(batches, partitions):
    out = run(batches, map_with_state_job(partitions=partitions))
    expected_out, expected_snapshots = reference_map_with_state(batches)
    assert canonical_outputs(out["out"]) == expected_out
    assert canonical_outputs(out["snapshots"]) == expected_snapshots


@PROPERTY
@given(batches=st.lists(st.lists(st.tuples(KEYS, st.integers(-1, 3)), max_size=3), min_size=1, max_size=12),
       timeout=st.integers(1, 4), initial=st.dictionaries(KEYS, st.integers(1, 3), max_size=2))
def test_map_with_state_timeouts_match_a_reference(batches, timeout, initial):
    out = run(batches, map_with_state_job(timeout=float(timeout), initial=initial, partitions=2))
    expected_out, expected_snapshots = reference_map_with_state(batches, timeout, initial)
    assert canonical_outputs(out["out"]) == expected_out
    assert canonical_outputs(out["snapshots"]) == expected_snapshots


def test_map_with_state_idle_key_times_out_exactly_once_with_no_value_and_is_gone():
    calls: list[tuple[int, str, Any, bool]] = []

    def build(stream: DStream[Any]) -> dict[str, DStream[Any]]:
        def fn(key: str, value: Any, state: Any) -> Any:
            calls.append((key, value, state.is_timing_out()))
            if not state.is_timing_out():
                state.update(value)
            return (key, value, state.is_timing_out())
        mapped = stream.map_with_state(fn, timeout=2.0)
        return {"out": mapped, "snapshots": mapped.state_snapshots()}

    # b is seen at 2 s only; a is seen at 1 s and again at 3 s (before its 2 s ran out at 3 s).
    out = run([[("a", 1), ("b", 2)], [], [("a", 3)], [], [], [], []], build)
    assert canonical_outputs(out["out"]) == [
        (1000, [("a", 1, False), ("b", 2, False)]),
        (2000, []),
        (3000, [("a", 3, False), ("b", None, True)]),  # b idle for 2 s of batch time
        (4000, []),
        (5000, [("a", None, True)]),
        (6000, []),
        (7000, []),
    ]
    assert calls.count(("b", None, True)) == 1 and calls.count(("a", None, True)) == 1
    assert out["snapshots"][-3:] == [(5000, []), (6000, []), (7000, [])]
    assert canonical_outputs(out["snapshots"])[:4] == [
        (1000, [("a", 1), ("b", 2)]), (2000, [("a", 1), ("b", 2)]), (3000, [("a", 3)]), (4000, [("a", 3)])]


def test_map_with_state_key_seen_every_batch_never_times_out():
    def fn(key: str, value: Any, state: Any) -> Any:
        if state.is_timing_out():
            return ("timeout", key)
        state.update(value)
        return None

    out = run([[("a", i)] for i in range(8)], lambda s: {"out": s.map_with_state(fn, timeout=1.0)})
    assert [records for _, records in out["out"]] == [[]] * 8


def test_map_with_state_drops_none_outputs_and_keeps_state():
    def fn(key: str, value: int, state: Any) -> Any:
        state.update(state.get_option(0) + value)
        return None if value % 2 else (key, state.get())

    out = run([[("a", 1), ("a", 2)], [("a", 3), ("a", 4)]], lambda s: {"out": s.map_with_state(fn)})
    assert out["out"] == [(1000, [("a", 3)]), (2000, [("a", 10)])]


def test_map_with_state_update_while_timing_out_fails_the_batch():
    def fn(key: str, value: Any, state: Any) -> Any:
        state.update(1)  # not allowed when the key is timing out
        return None

    ssc = new_context()
    ssc.queue_stream([[("a", 1)], [], []]).map_with_state(fn, timeout=1.0).foreach_batch(lambda b: None)
    ssc.start()
    try:
        ssc.step(1)
        with pytest.raises(Exception, match="timing out"):
            ssc.step(1)
    finally:
        ssc.stop(graceful=False)


def test_map_with_state_on_a_sliding_window_emits_every_timeout():
    def fn(key: str, value: Any, state: Any) -> Any:
        if state.is_timing_out():
            return ("timeout", key)
        state.update(value)
        return ("seen", key)

    out = run([[("a", 1)], [], [], [], [], [], [], []],
              lambda s: {"out": s.window(2.0, 2.0).map_with_state(fn, timeout=3.0)})
    assert [t for t, _ in out["out"]] == [2000, 4000, 6000, 8000]
    assert [r for _, records in out["out"] for r in records] == [("seen", "a"), ("timeout", "a")]


def test_update_state_by_key_on_a_sliding_window_updates_once_per_slide():
    out = run([[("a", 1)], [], [], []],
              lambda s: {"state": s.window(2.0, 2.0).update_state_by_key(lambda vs, old: (old or 0) + 1)})
    assert out["state"] == [(2000, [("a", 1)]), (4000, [("a", 2)])]


def test_retried_batch_sees_the_same_records_and_the_state_before_it():
    batches = [[("a", 1)], [("a", 2), ("b", 1)], [("b", 3)], [("a", 1)]]
    failures = {2000}

    def flaky(batch: Any) -> None:
        if batch.time in failures:
            failures.discard(batch.time)
            raise RuntimeError("sink unavailable")

    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                           max_batch_retries=1)
    source = ssc.queue_stream(batches)
    seen: dict[str, list[tuple[int, list[Any]]]] = {"records": [], "totals": []}
    source.foreach_batch(lambda b: seen["records"].append((b.time, b.collect())))
    source.update_state_by_key(running_total).foreach_batch(
        lambda b: seen["totals"].append((b.time, canonical(b.collect()))))
    source.foreach_batch(flaky)  # last: the outputs above saw the failed attempt too
    ssc.start()
    try:
        ssc.step(4)
    finally:
        ssc.stop(graceful=False)
    assert not failures  # the first attempt of batch 2 did fail
    assert seen["records"][1:3] == [(2000, [("a", 2), ("b", 1)])] * 2
    expected = reference_update_state_by_key(batches, {})
    assert seen["totals"] == expected[:2] + expected[1:]


# -- windows ---------------------------------------------------------------------------------------


def window_of(batches: list[list[Any]], i: int, window: int) -> list[Any]:
    """Records of the batches in (t - window, t] for batch i (1-based)."""
    return [r for j in range(max(1, i - window + 1), i + 1) for r in batches[j - 1]]


def slide_times(batches: list[list[Any]], slide: int) -> list[int]:
    return [i for i in range(1, len(batches) + 1) if i % slide == 0]


int_batches = st.lists(st.lists(st.integers(0, 5), max_size=5), min_size=1, max_size=12)
durations = st.tuples(st.integers(1, 4), st.integers(1, 3))  # (window, slide) in batches


@PROPERTY
@given(batches=int_batches, sizes=durations)
def test_window_holds_the_records_of_the_last_window_at_each_slide(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"w": s.window(float(window), float(slide))})
    assert canonical_outputs(out["w"]) == [
        (i * MS, canonical(window_of(batches, i, window))) for i in slide_times(batches, slide)]


def test_window_outputs_only_at_slide_times():
    out = run([[1], [2], [3], [4], [5], [6], [7]], lambda s: {"w": s.window(3.0, 2.0)})
    assert canonical_outputs(out["w"]) == [(2000, [1, 2]), (4000, [2, 3, 4]), (6000, [4, 5, 6])]


@pytest.mark.parametrize("window, slide", [(1.5, None), (2.0, 0.5), (2.0, 1.5), (0, None), (-1.0, None)])
def test_window_durations_must_be_positive_multiples_of_the_batch_interval(window, slide):
    ssc = new_context()
    with pytest.raises(ConfigError, match="duration"):
        ssc.queue_stream([]).window(window, slide)


@PROPERTY
@given(batches=int_batches, sizes=durations)
def test_count_by_window_counts_every_window(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"c": s.count_by_window(float(window), float(slide))})
    # One count per slide, 0 for an empty window (also before the first record).
    assert out["c"] == [(i * MS, [len(window_of(batches, i, window))]) for i in slide_times(batches, slide)]


@PROPERTY
@given(batches=int_batches, sizes=durations)
def test_reduce_by_window_without_inverse_reduces_non_empty_windows(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"r": s.reduce_by_window(operator.add, None, float(window), float(slide))})
    assert out["r"] == [(i * MS, [sum(window_of(batches, i, window))] if window_of(batches, i, window) else [])
                        for i in slide_times(batches, slide)]


@PROPERTY
@given(batches=int_batches, sizes=durations)
def test_reduce_by_window_with_inverse_equals_reducing_the_window(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"r": s.reduce_by_window(operator.add, operator.sub, float(window),
                                                          float(slide))})
    assert out["r"] == [(i * MS, [sum(window_of(batches, i, window))] if window_of(batches, i, window) else [])
                        for i in slide_times(batches, slide)]


def test_reduce_by_window_with_and_without_inverse_agree_when_the_window_empties():
    out = run([[], [4], [1], [], [], []], lambda s: {
        "inv": s.reduce_by_window(operator.add, operator.sub, 2.0),
        "plain": s.reduce_by_window(operator.add, None, 2.0)})
    assert out["inv"] == [(1000, []), (2000, [4]), (3000, [5]), (4000, [1]), (5000, []), (6000, [])]
    assert out["plain"] == out["inv"]


def window_sums(batches: list[list[tuple[str, int]]], i: int, window: int) -> dict[str, int]:
    sums: dict[str, int] = {}
    for k, v in window_of(batches, i, window):
        sums[k] = sums.get(k, 0) + v
    return sums


@PROPERTY
@given(batches=pair_batches, sizes=durations)
def test_reduce_by_key_and_window_without_inverse_reduces_each_window(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"r": s.reduce_by_key_and_window(
        operator.add, None, float(window), float(slide), num_partitions=2)})
    assert canonical_outputs(out["r"]) == [
        (i * MS, canonical(list(window_sums(batches, i, window).items()))) for i in slide_times(batches, slide)]


@PROPERTY
@given(batches=pair_batches, sizes=durations)
def test_reduce_by_key_and_window_with_inverse_equals_recomputation(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"r": s.reduce_by_key_and_window(
        operator.add, operator.sub, float(window), float(slide))})
    # A key leaves with its last in-window batch, whatever its value.
    assert canonical_outputs(out["r"]) == [
        (i * MS, canonical(list(window_sums(batches, i, window).items()))) for i in slide_times(batches, slide)]


def test_a_filter_dropping_a_key_still_in_the_window_does_not_break_the_window():
    """+2 then -2 sums to 0: the filter hides the key, the window still holds it."""
    out = run([[("a", 2)], [("a", -2)], [("b", 1)], [], []], lambda s: {"r": s.reduce_by_key_and_window(
        operator.add, operator.sub, 3.0, filter_fn=lambda kv: kv[1] != 0)})
    assert out["r"] == [(1000, [("a", 2)]), (2000, []), (3000, [("b", 1)]), (4000, [("a", -2), ("b", 1)]),
                        (5000, [("b", 1)])]


@PROPERTY
@given(batches=pair_batches, sizes=durations)
def test_reduce_by_key_and_window_with_inverse_and_filter_equals_recomputation(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {
        "inverse": s.reduce_by_key_and_window(operator.add, operator.sub, float(window), float(slide),
                                              filter_fn=lambda kv: kv[1] != 0),
        "plain": s.reduce_by_key_and_window(operator.add, None, float(window), float(slide))})
    assert canonical_outputs(out["inverse"]) == canonical_outputs(out["plain"])
    assert [t for t, _ in out["inverse"]] == [i * MS for i in slide_times(batches, slide)]


@PROPERTY
@given(batches=st.lists(st.lists(st.sampled_from("xyz"), max_size=5), min_size=1, max_size=12), sizes=durations)
def test_count_by_value_and_window_counts_values_in_the_window(batches, sizes):
    window, slide = sizes
    out = run(batches, lambda s: {"c": s.count_by_value_and_window(float(window), float(slide))})
    assert canonical_outputs(out["c"]) == [
        (i * MS, canonical(list(Counter(window_of(batches, i, window)).items())))
        for i in slide_times(batches, slide)]


def test_windowed_operators_of_one_job_see_the_same_batches():
    batches = [["x"], ["y", "x"], [], ["z"], ["x"]]
    out = run(batches, lambda s: {
        "count": s.count_by_window(2.0),
        "values": s.count_by_value_and_window(2.0),
        "window": s.window(2.0)})
    assert out["count"] == [(t, [len(records)]) for t, records in out["window"]]
    assert canonical_outputs(out["values"]) == [
        (t, canonical(list(Counter(records).items()))) for t, records in out["window"]]


# -- stepping (every test above relies on step(n) running n batches) -------------------------------


def test_step_runs_the_requested_number_of_batches_when_the_scheduler_thread_lags(monkeypatch):
    from ingest.scheduler import BatchScheduler

    run_batch = BatchScheduler.run_batch

    def lagging(self: BatchScheduler, *args: Any, **kwargs: Any) -> Any:
        info = run_batch(self, *args, **kwargs)
        time.sleep(0.05)  # the scheduler thread loses the CPU right after a batch
        return info

    monkeypatch.setattr(BatchScheduler, "run_batch", lagging)
    out = run([[1], [2], [3]], lambda s: {"all": s})
    assert out["all"] == [(1000, [1]), (2000, [2]), (3000, [3])]
