"""Each commit carries every input's next position, so a restart resumes from
the newest commit even when the intent of that batch is unreadable or gone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from ingest import ManualClock, StreamingContext
from ingest.checkpoint import CheckpointLog
from offsets import QueueItems

BATCHES = [["a"], ["b", "c"], ["d"], ["e"], ["f"], ["g"]]


def name(t: int) -> str:
    return f"{t:020d}"


def run(directory: Path, steps: int, seen: list[tuple[int, list[Any]]]) -> None:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory))
    ssc.queue_stream(BATCHES, name="words").foreach_batch(lambda b: seen.append((b.time, b.collect())))
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)


def test_every_commit_records_the_next_position_of_every_input(tmp_path):
    run(tmp_path, 3, [])
    log = CheckpointLog(str(tmp_path))
    assert [log.read_commit(t).next_positions for t in (1000, 2000, 3000)] == [
        {"words": QueueItems((), 1)}, {"words": QueueItems((), 2)}, {"words": QueueItems((), 3)}]


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x04
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [flip_a_bit, Path.unlink])
def test_an_unreadable_newest_committed_intent_does_not_make_the_queue_read_a_batch_again(tmp_path, caplog, damage):
    run(tmp_path, 3, [])
    damage(tmp_path / "offsets" / name(3000))
    seen: list[tuple[int, list[Any]]] = []
    with caplog.at_level(logging.WARNING):
        run(tmp_path, 2, seen)
    assert seen == [(4000, ["e"]), (5000, ["f"])]  # not ["d"] again


def test_the_warning_about_a_corrupt_committed_intent_says_the_inputs_resume_from_the_commit(tmp_path, caplog):
    run(tmp_path, 3, [])
    flip_a_bit(tmp_path / "offsets" / name(3000))
    with caplog.at_level(logging.WARNING):
        run(tmp_path, 1, [])
    warning = next(r.getMessage() for r in caplog.records if "offsets" in r.getMessage())
    assert str(tmp_path / "offsets" / name(3000)) in warning
    assert "resume from the next positions stored with the newest commit, so no data is read twice" in warning


def test_batches_to_rerun_move_the_resume_point_past_them(tmp_path):
    seen: list[tuple[int, list[Any]]] = []
    run(tmp_path, 3, seen)
    (tmp_path / "commits" / name(3000)).unlink()  # batch 3000 has an intent and no commit
    seen.clear()
    run(tmp_path, 1, seen)
    assert seen == [(3000, ["d"]), (4000, ["e"])]
