"""Checkpoint records are tied to their files: a record copied, swapped or
crafted (valid checksum, wrong fields) is a project error naming the file, and a
checkpoint of an older format is refused naming its version, never misread."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import crc32c
import pytest

from ingest import CheckpointError, CorruptRecordError, ManualClock, StreamingContext
from ingest.checkpoint import CheckpointLog
from offsets import KafkaRanges, OffsetRange, QueueItems
from offsets.records import CommitRecord, IntentRecord, RecordCodec, RecordId, frame

BATCHES = [["a"], ["b", "c"], ["d"], ["e"], ["f"], ["g"]]


def name(t: int) -> str:
    return f"{t:020d}"


def run(directory: Path, steps: int, seen: list[tuple[int, list[Any]]] | None = None,
        counts: dict[int, Any] | None = None) -> StreamingContext:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory))
    words = ssc.queue_stream(BATCHES, name="words")
    words.foreach_batch(lambda b: (seen if seen is not None else []).append((b.time, b.collect())))
    totals = words.map(lambda w: ("n", 1)).update_state_by_key(lambda vs, old: (old or 0) + len(vs), name="total")
    totals.foreach_batch(lambda b: (counts if counts is not None else {}).__setitem__(b.time, b.collect()))
    words.map(lambda w: (w, 1)).update_state_by_key(lambda vs, old: (old or 0) + len(vs), name="per-word") \
        .foreach_batch(lambda b: None)
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)
    return ssc


# -- records against their file names ----------------------------------------------------------------


def test_a_commit_copied_over_the_newest_is_corrupt_and_that_batch_is_rerun(tmp_path, caplog):
    run(tmp_path, 3)
    newest = tmp_path / "commits" / name(3000)
    shutil.copy(tmp_path / "commits" / name(2000), newest)
    with pytest.raises(CorruptRecordError, match=f"{newest}: holds the commit of batch 2000, but its name says"):
        CheckpointLog(str(tmp_path)).read_commit(3000)

    seen: list[tuple[int, list[Any]]] = []
    with caplog.at_level(logging.WARNING):
        run(tmp_path, 1, seen)
    assert seen == [(3000, ["d"]), (4000, ["e"])]
    assert str(newest) in caplog.text


def test_an_intent_renamed_to_another_batch_is_corrupt_naming_the_file(tmp_path):
    run(tmp_path, 2)
    moved = tmp_path / "offsets" / name(5000)
    shutil.copy(tmp_path / "offsets" / name(1000), moved)
    with pytest.raises(CorruptRecordError, match=f"{moved}: holds the intent of batch 1000"):
        CheckpointLog(str(tmp_path)).read_intent(5000)
    with pytest.raises(CheckpointError, match=str(moved)):  # a batch to re-run whose intent is not its own
        run(tmp_path, 1)


def test_state_files_of_two_operators_swapped_are_corrupt_and_recovery_falls_back(tmp_path, caplog):
    counts: dict[int, Any] = {}
    run(tmp_path, 3, counts=counts)
    a = tmp_path / "state" / "total" / f"{name(3000)}.full"
    b = tmp_path / "state" / "per-word" / f"{name(3000)}.full"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    with pytest.raises(CorruptRecordError, match="of operator 'per-word', but its name says .* operator 'total'"):
        CheckpointLog(str(tmp_path)).read_state(f"state/total/{name(3000)}.full")

    after: dict[int, Any] = {}
    with caplog.at_level(logging.WARNING):
        run(tmp_path, 1, counts=after)
    assert after == {4000: [("n", 5)]}  # the state of batch 2000, then batch 3000 replayed: not swapped
    assert str(a) in caplog.text


# -- crafted records: valid checksum, wrong fields ------------------------------------------------------


CODEC = RecordCodec()


@pytest.mark.parametrize("body, message", [
    ({"time_ms": 3000, "summary": {}, "state": {"total": "x"}}, "not a non-empty list"),
    ({"time_ms": 3000, "summary": {}, "state": {"total": [f"state/other/{name(3000)}.full"]}},
     "not a state file of that operator"),
    ({"time_ms": 3000, "summary": {}, "state": {"total": [f"state/total/{name(9000)}.full"]}},
     "not a state file of that operator"),
    ({"time_ms": 3000, "summary": {}, "state": {"total": [f"state/total/{name(3000)}.delta"]}},
     "do not start with one full snapshot"),
    ({"time_ms": 3000, "summary": [], "state": {}}, "without a summary"),
    ({"time_ms": 2000, "summary": {}, "state": {}}, "body says batch 2000"),
    ([1, 2], "body is a list"),
    ({"time_ms": 3000, "summary": {}, "state": {}, "next": {"words": {"kind": "queue", "v": 1}}},
     "malformed queue position"),
    ({"time_ms": 3000, "summary": {}, "state": {}, "next": {"words": {"kind": "nope"}}}, "not known"),
    ({"time_ms": 3000, "summary": {}, "state": {}, "committed_at": "noon"}, "committed_at"),
])
def test_a_crafted_commit_with_a_valid_checksum_is_a_project_error_naming_the_file(tmp_path, body, message):
    data = frame(RecordId("commit", 3000), json.dumps(body).encode())
    with pytest.raises((CorruptRecordError, CheckpointError), match=message) as err:
        CODEC.decode_commit(data, "/ckpt/commits/3", 3000)
    assert "/ckpt/commits/3" in str(err.value)


def test_typed_records_round_trip():
    intent = IntentRecord(1000, {"k": KafkaRanges((OffsetRange("t", 0, 5, 9),), records_lost=2),
                                 "q": QueueItems(("a",), 3)})
    assert CODEC.decode_intent(CODEC.encode_intent(intent), "f", 1000) == intent
    commit = CommitRecord(1000, {"records": 5}, {"total": (f"state/total/{name(1000)}.full",)},
                          {"q": QueueItems((), 3)}, committed_at=12.5)
    assert CODEC.decode_commit(CODEC.encode_commit(commit), "f", 1000) == commit


def test_a_checkpoint_file_replaced_by_a_directory_is_a_project_error_naming_it(tmp_path):
    run(tmp_path, 2)
    commit = tmp_path / "commits" / name(2000)
    commit.unlink()
    commit.mkdir()
    with pytest.raises(CorruptRecordError, match=f"{commit} is a directory"):
        CheckpointLog(str(tmp_path)).read_commit(2000)


# -- older formats -------------------------------------------------------------------------------------------


def v1_record(kind: str, body: dict[str, Any]) -> bytes:
    """A record exactly as the release with checkpoint format 1 framed it."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    prefix = b"INGEST-CKPT 1 %s %d " % (kind.encode(), len(payload))
    return prefix + b"%08x\n" % crc32c.crc32c(payload, crc32c.crc32c(prefix)) + payload


def write_format_1_checkpoint(directory: Path) -> None:
    """Two committed batches of a queue stream, as format 1 wrote them (untyped plans)."""
    (directory / "offsets").mkdir(parents=True)
    (directory / "commits").mkdir()
    (directory / "metadata").write_bytes(v1_record("meta", {
        "format": "ingest-checkpoint", "format_version": 1, "batch_interval_ms": 1000, "inputs": ["words"],
        "stateful": [], "created_at": 1.0, "zero_time_ms": 0}))
    for t, items in ((1000, ["a"]), (2000, ["b", "c"])):
        (directory / "offsets" / name(t)).write_bytes(v1_record("intent", {
            "time_ms": t, "plans": {"words": {"records": len(items), "items": items, "next_seq": t // 1000}}}))
        (directory / "commits" / name(t)).write_bytes(v1_record("commit", {
            "time_ms": t, "summary": {"records": len(items)}, "state": {}, "committed_at": 1.0}))


def test_a_format_1_checkpoint_is_refused_naming_its_version(tmp_path):
    write_format_1_checkpoint(tmp_path)
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(tmp_path))
    seen: list[Any] = []
    ssc.queue_stream(BATCHES, name="words").foreach_batch(lambda b: seen.append(b.collect()))
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'metadata'}: checkpoint format 1, written by an older"):
        ssc.start()
    assert seen == []
    assert (tmp_path / "metadata").read_bytes().startswith(b"INGEST-CKPT 1 meta ")  # left as it was


def test_a_format_1_intent_is_refused_even_without_metadata_being_read(tmp_path):
    write_format_1_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint format 1"):
        CheckpointLog(str(tmp_path)).read_intent(2000)


@pytest.mark.parametrize("body, message", [
    ({"time_ms": 1000, "positions": ["words"]}, "'positions' is not an object"),
    ({"time_ms": 1000, "positions": {"words": {"kind": "kafka", "v": 1, "ranges": [["t", 0, 9, 3]]}}},
     "malformed kafka position"),
    ({"time_ms": 1000, "positions": {"words": {"kind": "blocks", "v": 1, "blocks": [7]}}}, "malformed blocks"),
    ({"time_ms": 1000, "positions": {"words": {"kind": "queue", "v": 9, "items": [], "next_seq": 0}}},
     "format version 9"),
    ({"positions": {}}, "body says batch None"),
])
def test_a_crafted_intent_with_a_valid_checksum_is_a_project_error_naming_the_file(body, message):
    data = frame(RecordId("intent", 1000), json.dumps(body).encode())
    with pytest.raises((CorruptRecordError, CheckpointError), match=message) as err:
        CODEC.decode_intent(data, "/ckpt/offsets/1", 1000)
    assert "/ckpt/offsets/1" in str(err.value)
