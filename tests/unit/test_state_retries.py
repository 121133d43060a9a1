"""A retried batch starts from the state before it, even when the user's
function changes its state object in place.

Spark recomputes a failed batch's state from the serialized state of the
batch before; here every attempt gets its own copy of a key's state the first
time the function sees it, so whatever an attempt did to that copy is gone
with the attempt.
"""

from __future__ import annotations

from typing import Any

from ingest import ManualClock, StreamingContext

BATCHES = [[("a", 1), ("b", 1)], [("a", 2)], [("a", 3), ("b", 2)]]
HISTORY = {"a": [1, 2, 3], "b": [1, 2]}


def run_with_one_retry(build: Any, batches: list[list[Any]]) -> tuple[list[tuple[int, list[Any]]], Any]:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                           max_batch_retries=1)
    seen: list[tuple[int, list[Any]]] = []
    stream = build(ssc.queue_stream(batches, num_partitions=2))
    stream.foreach_batch(lambda b: seen.append((b.time, sorted(b.collect()))))
    ssc.start()
    try:
        ssc.step(len(batches))
    finally:
        ssc.stop(graceful=False)
    return seen, stream


def test_update_state_by_key_function_that_appends_in_place_and_fails_once_applies_each_batch_once():
    failed: list[int] = []

    def history(values: list[int], old: list[int] | None) -> list[int]:
        state = old if old is not None else []
        state.extend(values)  # in place, then fail: the retry must not see these values
        if values == [2] and not failed:
            failed.append(1)
            raise RuntimeError("lookup service unavailable")
        return state

    seen, stream = run_with_one_retry(lambda s: s.update_state_by_key(history, num_partitions=2), BATCHES)
    assert failed == [1]
    assert dict(stream.state_items()) == HISTORY
    assert seen[-1] == (3000, sorted(HISTORY.items()))


def test_update_state_by_key_state_mutated_in_place_survives_an_output_failure_once():
    failures = {2000}

    def history(values: list[int], old: list[int] | None) -> list[int]:
        state = old if old is not None else []
        state.extend(values)
        return state

    def flaky(batch: Any) -> None:
        if batch.time in failures:
            failures.discard(batch.time)
            raise RuntimeError("sink unavailable")

    def build(source: Any) -> Any:
        states = source.update_state_by_key(history, num_partitions=2)
        states.foreach_batch(flaky)
        return states

    seen, stream = run_with_one_retry(build, BATCHES)
    assert not failures
    assert dict(stream.state_items()) == HISTORY


def test_map_with_state_function_that_appends_in_place_and_fails_once_applies_each_record_once():
    failed: list[int] = []

    def remember(key: str, value: int, state: Any) -> Any:
        values = state.get() if state.exists() else []
        values.append(value)  # in place, on the object state.get() returned
        state.update(values)
        if value == 2 and key == "a" and not failed:
            failed.append(1)
            raise RuntimeError("lookup service unavailable")
        return key, list(values)

    seen, stream = run_with_one_retry(lambda s: s.map_with_state(remember, num_partitions=2), BATCHES)
    assert failed == [1]
    assert dict(stream.state_items()) == HISTORY
    assert seen[1] == (2000, [("a", [1, 2])])


def test_private_copy_shares_nothing_that_can_change_in_place():
    from ingest.state import private_copy

    value = {"n": 1, "tags": ["x"], "seen": {"a"}, "pair": (1, [2]), "nested": [{"k": [3]}]}
    copied = private_copy(value)
    copied["tags"].append("y")
    copied["seen"].add("b")
    copied["pair"][1].append(4)
    copied["nested"][0]["k"].append(5)
    assert value == {"n": 1, "tags": ["x"], "seen": {"a"}, "pair": (1, [2]), "nested": [{"k": [3]}]}
