"""The state files of the windows. `reduce_by_key_and_window` (with or
without an inverse) and `window()` write format 2: keyed (per key its
aggregate and in-window batch values; per slice of `window()` its records),
with deltas between full snapshots. Files of earlier versions (format 1: the
whole window as one value; `window` files of the window's records) are still
read into the same state, and a newer format is refused naming both."""

from __future__ import annotations

import operator

import pytest

from ingest import ManualClock, StreamingContext
from ingest.errors import StateError
from ingest.serde import JsonSerde
from ingest.window import WINDOW_FORMAT, ReducedWindowedDStream


def windowed_op() -> ReducedWindowedDStream:
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    op = ssc.queue_stream([]).reduce_by_key_and_window(operator.add, operator.sub, 3.0, num_partitions=2)
    assert isinstance(op, ReducedWindowedDStream)
    return op


def test_a_format_1_snapshot_is_read_as_each_keys_aggregate_and_in_window_batch_values() -> None:
    # As the whole-window layout stored batches 2000 and 3000 of a 3 s window.
    old = JsonSerde().dumps({"v": 1, "kind": "reduced_window",
                             "agg": [["a", 5], [("t", 1), 7], ["b", 1]],
                             "counts": [["a", 2], [("t", 1), 1], ["b", 1]],
                             "batches": [[2000, [["a", 2], [("t", 1), 7]]], [3000, [["a", 3], ["b", 1]]]]})
    op = windowed_op()
    op.restore(old, [])
    assert sorted(op.state_items(), key=repr) == sorted([
        ("a", (5, ((2000, 2), (3000, 3)))),
        (("t", 1), (7, ((2000, 7),))),
        ("b", (1, ((3000, 1),))),
    ], key=repr)
    assert op.state_size() == 3


def test_a_format_2_snapshot_and_its_deltas_restore_the_state_they_were_written_from() -> None:
    op = windowed_op()
    serde = JsonSerde()
    full = serde.dumps({"v": 1, "kind": "reduced_window", "format": 2, "keys": ["a", "b"], "aggs": [5, 1],
                        "hist": [[[2000, 2], [3000, 3]], [[3000, 1]]]})
    delta = serde.dumps({"v": 1, "kind": "reduced_window_delta", "format": 2, "del": ["b"],
                         "set_keys": ["a"], "set_aggs": [3], "set_hist": [[[3000, 3]]]})
    op.restore(full, [delta])
    assert op.state_items() == [("a", (3, ((3000, 3),)))]


def test_a_window_file_of_earlier_versions_is_read_by_the_reduce_without_an_inverse() -> None:
    # reduce_by_key_and_window(fn, None, ...) was window(...).reduce_by_key(fn):
    # its state id was window-0 and its file held the window's records.
    old = JsonSerde().dumps({"v": 1, "kind": "window", "entries": [
        [2000, [[["a", 1], ["b", 4]], [["a", 2]]]], [3000, [[], [["a", 3]]]]]})
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    op = ssc.queue_stream([]).reduce_by_key_and_window(operator.add, None, 3.0)
    assert op.state_id == "window-0"
    op.restore(old, [])
    assert sorted(op.state_items()) == [("a", (None, ((2000, 3), (3000, 3)))), ("b", (None, ((2000, 4),)))]


def test_a_window_file_of_earlier_versions_is_read_by_reduce_by_window_without_an_inverse() -> None:
    # reduce_by_window(fn, None, ...) was window(...).reduce(fn): plain records.
    old = JsonSerde().dumps({"v": 1, "kind": "window", "entries": [[2000, [[1, 2], [3]]], [3000, [[4]]]]})
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.queue_stream([]).reduce_by_window(operator.add, None, 3.0)
    (op,) = ssc._graph.stateful
    assert op.state_id == "window-0"
    op.restore(old, [])
    assert op.state_items() == [(0, (None, ((2000, 6), (3000, 4))))]


def test_a_newer_format_is_refused_naming_the_format_found_and_those_this_version_reads() -> None:
    newer = JsonSerde().dumps({"v": 1, "kind": "reduced_window", "format": WINDOW_FORMAT + 1, "keys": []})
    op = windowed_op()
    with pytest.raises(StateError) as info:
        op.restore(newer, [])
    message = str(info.value)
    assert f"format {WINDOW_FORMAT + 1}" in message
    assert f"reads formats 1 and {WINDOW_FORMAT}" in message
    assert "reduce_by_key_and_window-0" in message


def run(batches, checkpoint, steps, *, restart_after=None):
    """Sums per key over a 3 s window sliding every 2 s, each output sorted;
    with `restart_after`, the driver stops after that many batches and a new
    one goes on from the checkpoint."""
    out = {}

    def build():
        ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        ssc.checkpoint(str(checkpoint), full_snapshot_every=3)
        ssc.queue_stream(batches, name="pairs").reduce_by_key_and_window(
            operator.add, operator.sub, 3.0, 2.0, num_partitions=3).foreach_batch(
            lambda b: out.__setitem__(b.time, sorted(b.collect())))
        return ssc

    for n in ([restart_after, steps - restart_after] if restart_after else [steps]):
        ssc = StreamingContext.get_or_create(str(checkpoint), build)
        ssc.start()
        try:
            ssc.step(n)
        finally:
            ssc.stop(graceful=False)
    return out


@pytest.mark.parametrize("restart_after", [3, 4, 5])
def test_a_driver_restarted_from_the_checkpoint_gives_the_uninterrupted_runs_windows(tmp_path, restart_after):
    batches = [[("a", 1), ("b", 2)], [("a", 3)], [("c", 5), ("a", 1)], [], [("b", 4)], [("a", 2)], [], []]
    steps = len(batches)
    whole = run(batches, tmp_path / "whole", steps)
    assert whole[2000] == [("a", 4), ("b", 2)] and whole[8000] == [("a", 2)]
    assert run(batches, tmp_path / "restarted", steps, restart_after=restart_after) == whole


def test_window_reads_its_file_of_earlier_versions_and_writes_format_2() -> None:
    # window() kept every in-window batch's partitions as one value.
    old = JsonSerde().dumps({"v": 1, "kind": "window", "entries": [[2000, [["x", "y"], [], ["z"]]], [3000, [[1]]]]})
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    op = ssc.queue_stream([]).window(3.0)
    op.restore(old, [])
    assert op.state_items() == [((2000, 0), ["x", "y"]), ((2000, 2), ["z"]), ((3000, 0), [1])]
    written = JsonSerde().loads(op.pending_snapshot())
    assert (written["kind"], written["format"]) == ("window", WINDOW_FORMAT)
    again = windowed_op().ssc.queue_stream([]).window(3.0)
    again.restore(op.pending_snapshot(), [])
    assert again.state_items() == op.state_items()


def test_window_refuses_a_newer_format_naming_both() -> None:
    newer = JsonSerde().dumps({"v": 1, "kind": "window", "format": WINDOW_FORMAT + 1, "keys": [], "values": []})
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    op = ssc.queue_stream([]).window(3.0)
    with pytest.raises(StateError, match=f"format {WINDOW_FORMAT + 1} of window state.*reads formats 1 and "
                                         f"{WINDOW_FORMAT}"):
        op.restore(newer, [])
