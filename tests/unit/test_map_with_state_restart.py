"""`map_with_state` timeouts after a restart that changes the operator's
number of partitions: each key still times out in the first batch at least
`timeout` after its last record, never later.

A restart re-buckets the checkpointed keys into the new partitions, so keys
that were in different partitions (each in order of last update) end up in
one; the timeout scan must still see them oldest first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ingest import ManualClock, StreamingContext
from ingest.dataset import portable_hash

# With 2 partitions, "a" is in partition 1 and "d" in partition 0; with 1 they meet.
OLD, YOUNG = "a", "d"
BATCHES = [[(OLD, 1)], [(YOUNG, 1)], [], [], [], []]


def expire(key: str, value: Any, state: Any) -> Any:
    if state.is_timing_out():
        return ("timeout", key)
    state.update(value)
    return None


def factory(partitions: int, seen: list[tuple[int, Any]]) -> Callable[[], StreamingContext]:
    def build() -> StreamingContext:
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        pairs = ssc.queue_stream(BATCHES, name="pairs")
        pairs.map_with_state(expire, timeout=3.0, num_partitions=partitions).foreach_batch(
            lambda batch: seen.extend((batch.time, r) for r in batch.collect()))
        return ssc
    return build


def live(directory: Path, partitions: int, steps: int, seen: list[tuple[int, Any]]) -> None:
    ssc = StreamingContext.get_or_create(str(directory), factory(partitions, seen), full_snapshot_every=1)
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)


def test_keys_time_out_in_the_batch_due_after_a_restart_with_fewer_partitions(tmp_path: Path) -> None:
    assert portable_hash(OLD) % 2 == 1 and portable_hash(YOUNG) % 2 == 0
    seen: list[tuple[int, Any]] = []
    live(tmp_path, 2, 2, seen)  # OLD last seen at 1 s, YOUNG at 2 s; a full snapshot of both
    live(tmp_path, 1, 4, seen)
    assert seen == [(4000, ("timeout", OLD)), (5000, ("timeout", YOUNG))]


def test_keys_time_out_in_the_batch_due_after_a_restart_with_other_partitions(tmp_path: Path) -> None:
    seen: list[tuple[int, Any]] = []
    live(tmp_path, 2, 2, seen)
    live(tmp_path, 3, 4, seen)
    assert seen == [(4000, ("timeout", OLD)), (5000, ("timeout", YOUNG))]
