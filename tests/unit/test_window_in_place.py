"""`reduce_by_key_and_window` with functions that change their first argument
in place (to save an allocation, as `list.extend` does): the window's
aggregate of a key stays its own object, never one of a batch's values that
the inverse function will later take out, nor the committed aggregate that a
retried batch starts from.
"""

from __future__ import annotations

from typing import Any

from ingest import ManualClock, StreamingContext

BATCHES = [[("a", 1)], [("a", 2)], [("a", 3)], [("a", 4)], []]


def extend(acc: list[int], more: list[int]) -> list[int]:
    acc.extend(more)
    return acc


def drop_oldest(acc: list[int], old: list[int]) -> list[int]:
    del acc[:len(old)]
    return acc


def windows(retries: int, fail_once_at: set[int], *, inverse: bool = True) -> list[tuple[int, list[Any]]]:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                           max_batch_retries=retries)
    seen: list[tuple[int, list[Any]]] = []

    def flaky(batch: Any) -> None:
        if batch.time in fail_once_at:
            fail_once_at.discard(batch.time)
            raise RuntimeError("sink unavailable")

    windowed = ssc.queue_stream(BATCHES).map(lambda kv: (kv[0], [kv[1]])).reduce_by_key_and_window(
        extend, drop_oldest if inverse else None, 2.0)
    windowed.foreach_batch(lambda b: seen.append((b.time, sorted((k, list(v)) for k, v in b.collect()))))
    windowed.foreach_batch(flaky)
    ssc.start()
    try:
        ssc.step(len(BATCHES))
    finally:
        ssc.stop(graceful=False)
    return seen


EXPECTED = [(1000, [("a", [1])]), (2000, [("a", [1, 2])]), (3000, [("a", [2, 3])]), (4000, [("a", [3, 4])]),
            (5000, [("a", [4])])]


def test_in_place_reduce_and_inverse_give_each_window_its_records():
    assert windows(0, set()) == EXPECTED


def test_in_place_reduce_in_a_retried_batch_applies_the_batch_once():
    seen = windows(1, {3000})
    assert [s for s in seen if s[0] != 3000] == [s for s in EXPECTED if s[0] != 3000]
    assert [s for s in seen if s[0] == 3000][-1] == (3000, [("a", [2, 3])])


def test_in_place_reduce_without_an_inverse_leaves_the_windows_values_alone():
    # Each slide reduces the key's in-window values into a copy of the first.
    assert windows(0, set(), inverse=False) == EXPECTED
    seen = windows(1, {3000}, inverse=False)
    assert [s for s in seen if s[0] != 3000] == [s for s in EXPECTED if s[0] != 3000]
