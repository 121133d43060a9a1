"""Specification of the receiver side of the retention contract (`BlockLog`
and `ReceivedBlockTracker`) and of how the block log treats records it did
not write.

A batch's blocks go through three separate steps: `allocate(t)` when it is
planned, `mark_processed(t)` once its output committed (the source may be
acknowledged; nothing is deleted) and `clean_up(retain_from_ms)` once the
retention point passed it (forgotten, its segments deleted when nothing else
needs them). Blocks not yet allocated are never forgotten.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import msgpack
import pytest
from block_logs import STREAM, FakeClock, ids, reopen, segment_numbers

from ingest.errors import CorruptRecordError, StorageError
from receivers.block import Block, BlockInfo
from receivers.block_log import ALLOCATED, BLOCK, CLEANED, PROCESSED, RELEASED, BlockLog
from receivers.block_log import verify as block_log_verify
from receivers.codec import encode_block
from receivers.tracker import ReceivedBlockTracker


def records_of(block_id: str) -> list[Any]:
    return [f"{block_id}:{i}" for i in range(3)]


def store(log: BlockLog, block_id: str) -> BlockInfo:
    return log.store_block(STREAM, Block(block_id, records_of(block_id)))


# -- storing is one step --------------------------------------------------------------------


def test_store_block_appends_and_tracks_in_one_step(opened) -> None:
    log = opened()
    info = store(log, "b1")
    assert ids(log.tracker.tracked()) == ["b1"]
    log.remove([info])
    assert log.get(info) == records_of("b1")


def test_a_clean_up_waits_for_a_block_being_stored_and_keeps_its_segment(opened) -> None:
    clock = FakeClock()
    log = opened(segment_max_age_s=10, clock=clock)
    store(log, "b1")
    log.allocate(1000)
    log.mark_processed(1000)
    clock.now += 11  # b2 starts segment 2
    cleaners: list[threading.Thread] = []
    real_put = log.put

    def put_then_clean_up(stream: str, block: Block) -> BlockInfo:
        info = real_put(stream, block)  # durable: a receiver may acknowledge its source from here
        clock.now += 11  # the CLEANED record starts segment 3
        cleaner = threading.Thread(target=log.clean_up, args=(2000,))
        cleaner.start()
        cleaner.join(0.5)  # it must wait for the block to be tracked
        assert cleaner.is_alive(), "clean-up ran between the append and the tracking"
        cleaners.append(cleaner)
        return info

    log.put = put_then_clean_up  # type: ignore[method-assign]
    store(log, "b2")
    cleaners[0].join(10)
    assert 2 in segment_numbers(log)
    log = reopen(log, opened)
    log.recover(last_committed_ms=1000, pending_times=[])
    assert [log.get(i) for i in log.allocate(2000)] == [records_of("b2")]


def test_the_memory_tracker_stores_and_tracks_under_one_lock() -> None:
    tracker = ReceivedBlockTracker()
    seen: list[bool] = []

    def store_it() -> BlockInfo:
        seen.append(tracker._lock.locked())
        return BlockInfo("b1", STREAM, 1)

    assert tracker.add(store_it).block_id == "b1"
    assert seen == [True]
    assert ids(tracker.allocate(1000)) == ["b1"]


# -- mark_processed: acknowledge, delete nothing -----------------------------------------------


def test_mark_processed_journals_the_batch_and_deletes_nothing(opened) -> None:
    log = opened()
    b1 = store(log, "b1")
    log.allocate(1000)
    segments = list(log.wal.segments)
    assert ids(log.mark_processed(1000)) == ["b1"]
    assert log.mark_processed(1000) == [], "the second mark returns nothing to acknowledge"
    assert log.wal.segments == segments
    assert [kind for _, kind, _ in log.wal.records()][-1] == PROCESSED
    log.remove([b1])
    assert log.get(b1) == records_of("b1")


def test_a_processed_batch_is_not_re_run_nor_released_even_if_the_checkpoint_fell_back(opened) -> None:
    log = opened()
    store(log, "b1")
    log.allocate(1000)
    log.mark_processed(1000)
    store(log, "b2")
    log = reopen(log, opened)
    # The checkpoint's newest commit was unreadable: it says nothing committed.
    log.recover(last_committed_ms=None, pending_times=[])
    assert ids(log.allocate(2000)) == ["b2"], "b1 was not handed to the next batch again"
    assert [log.get(i) for i in log.allocate(1000)] == [records_of("b1")], "still readable for a replay"
    assert log.tracker.is_processed(1000)


# -- clean_up: forget behind the retention point ----------------------------------------------


def three_batches(opened) -> tuple[BlockLog, FakeClock]:
    """Batches 1000, 2000, 3000 (blocks b1, b2, b3), each in a segment of its
    own, all processed; b4 received and not allocated."""
    clock = FakeClock()
    log = opened(segment_max_age_s=10, clock=clock)
    for n in (1, 2, 3):
        store(log, f"b{n}")
        log.allocate(n * 1000)
        log.mark_processed(n * 1000)
        clock.now += 11
    store(log, "b4")
    return log, clock


def test_clean_up_forgets_only_batches_before_the_retention_point(opened) -> None:
    log, _ = three_batches(opened)
    assert ids(log.clean_up(2000)) == ["b1"]
    assert log.allocate(1000) == []
    assert ids(log.allocate(2000)) == ["b2"]
    assert ids(log.allocate(3000)) == ["b3"]
    assert log.clean_up(2000) == []


def test_clean_up_deletes_only_segments_whose_records_all_belong_to_forgotten_batches(opened) -> None:
    log, _ = three_batches(opened)
    log.clean_up(2000)
    assert segment_numbers(log)[0] == 2
    log.clean_up(4000)  # everything allocated is forgotten; b4 is in flight
    assert segment_numbers(log)[0] == 4
    assert ids(log.tracker.tracked()) == ["b4"]
    (b4,) = log.tracker.tracked()
    log.remove([b4])
    assert log.get(b4) == records_of("b4")


def test_a_retention_point_behind_a_committed_batch_keeps_it_readable_across_a_restart(opened) -> None:
    # A corrupt newest commit makes the next start replay from an older one:
    # every batch at or after the retention point must still be readable.
    log, clock = three_batches(opened)
    log.clean_up(2000)
    log = reopen(log, opened, segment_max_age_s=10, clock=clock)
    log.recover(last_committed_ms=3000, pending_times=[])
    assert [log.get(i) for t in (2000, 3000) for i in log.allocate(t)] == [records_of("b2"), records_of("b3")]
    assert ids(log.allocate(4000)) == ["b4"]


def test_clean_up_of_an_unprocessed_tracker_returns_the_blocks_for_the_store() -> None:
    tracker = ReceivedBlockTracker()
    tracker.add_block(BlockInfo("b1", STREAM, 1))
    tracker.allocate(1000)
    tracker.add_block(BlockInfo("b2", STREAM, 1))
    assert ids(tracker.mark_processed(1000)) == ["b1"]
    assert ids(tracker.clean_up(1001)) == ["b1"]
    assert ids(tracker.tracked()) == ["b2"]


# -- records it did not write --------------------------------------------------------------------


CRAFTED = [
    pytest.param(BLOCK, b"\xc1", id="block-not-msgpack"),
    pytest.param(BLOCK, msgpack.packb({"id": "b1"}), id="block-a-map"),
    pytest.param(BLOCK, msgpack.packb(["b1", None]), id="block-two-fields"),
    pytest.param(BLOCK, msgpack.packb([7, None, []]), id="block-id-an-int"),
    pytest.param(BLOCK, msgpack.packb(["b1", [1], []]), id="block-metadata-a-list"),
    pytest.param(BLOCK, msgpack.packb(["b1", None, "records"]), id="block-records-a-string"),
    pytest.param(BLOCK, msgpack.packb(["b1", None, [msgpack.ExtType(2, msgpack.packb([1]))]]),
                 id="block-kafka-record-of-one-field"),
    pytest.param(BLOCK, msgpack.packb(["b1", None, [msgpack.ExtType(3, msgpack.packb(5))]]),
                 id="block-kafka-columns-not-a-list"),
    pytest.param(BLOCK, msgpack.packb(["b1", {(1,): 2}, []], strict_types=False)[:-1], id="block-cut-short"),
    pytest.param(ALLOCATED, b"{not json", id="allocated-not-json"),
    pytest.param(ALLOCATED, b"[1000]", id="allocated-a-list"),
    pytest.param(ALLOCATED, json.dumps({"time": "1000", "blocks": []}).encode(), id="allocated-time-a-string"),
    pytest.param(ALLOCATED, json.dumps({"time": 1000, "blocks": "b1"}).encode(), id="allocated-blocks-a-string"),
    pytest.param(ALLOCATED, json.dumps({"time": 1000, "blocks": ["missing"]}).encode(),
                 id="allocated-unknown-block"),
    pytest.param(PROCESSED, json.dumps({"when": 1000}).encode(), id="processed-without-time"),
    pytest.param(RELEASED, b"\xff\xfe", id="released-not-utf8"),
    pytest.param(CLEANED, encode_block([{"times": 1000}]), id="cleaned-times-not-a-list"),
    pytest.param(CLEANED, encode_block([[1000]]), id="cleaned-not-a-map"),
    pytest.param(CLEANED, encode_block([{"times": [None]}]), id="cleaned-time-none"),
    pytest.param(99, b"", id="unknown-record-type"),
]


@pytest.mark.parametrize("kind, payload", CRAFTED)
def test_a_record_with_a_valid_checksum_and_a_malformed_payload_is_corruption_naming_it(
        opened, kind: int, payload: bytes) -> None:
    log = opened()
    log.put(STREAM, Block("b0", records_of("b0")))
    handle = log.wal.append(payload, kind)
    log = reopen(log, opened)
    with pytest.raises(CorruptRecordError) as caught:
        log.recover(last_committed_ms=None, pending_times=[])
    assert caught.value.path == log.wal.path_of(handle)
    assert caught.value.offset == handle.offset
    assert f"{log.wal.path_of(handle)} at byte offset {handle.offset}" in str(caught.value)


def test_a_block_read_back_with_a_malformed_payload_is_corruption_naming_it(opened) -> None:
    log = opened()
    handle = log.wal.append(msgpack.packb({"not": "a block"}), BLOCK)
    forged = BlockInfo("b1", STREAM, 1, None, handle.to_dict())
    with pytest.raises(CorruptRecordError) as caught:
        log.get(forged)
    assert (caught.value.path, caught.value.offset) == (log.wal.path_of(handle), handle.offset)


# -- verify: what fsck reports -------------------------------------------------------------------


def test_verify_of_a_healthy_checkpoint_finds_nothing_even_while_the_log_is_open(opened, tmp_path: Path) -> None:
    log, _ = three_batches(opened)
    log.clean_up(2000)
    assert block_log_verify(str(tmp_path)) == []
    assert block_log_verify(str(tmp_path / "receivers" / STREAM)) == []


def test_verify_reports_a_malformed_record_as_a_restart_would_and_changes_nothing(opened, tmp_path: Path) -> None:
    log = opened()
    store(log, "b0")
    handle = log.wal.append(json.dumps({"time": "soon"}).encode(), PROCESSED)
    path = log.wal.path_of(handle)
    log.close()
    before = Path(path).read_bytes()
    (problem,) = block_log_verify(str(tmp_path))
    assert f"{path} at byte offset {handle.offset}" in problem
    assert Path(path).read_bytes() == before
    log = opened()
    with pytest.raises(CorruptRecordError) as caught:
        log.recover(last_committed_ms=None, pending_times=[])
    assert str(caught.value) == problem


def test_verify_reports_an_allocation_whose_block_record_is_gone(opened, tmp_path: Path) -> None:
    log = opened()
    handle = log.wal.append(json.dumps({"time": 1000, "blocks": ["lost"]}).encode(), ALLOCATED)
    log.close()
    (problem,) = block_log_verify(str(tmp_path))
    assert "block lost" in problem and f"offset {handle.offset}" in problem


@pytest.mark.parametrize("name", ["blocks.lock", "blocks.bounds", "blocks-00000000000000000001.wal"])
def test_verify_reports_a_directory_in_place_of_a_file_of_the_log_as_a_restart_would_fail(
        opened, tmp_path: Path, name: str) -> None:
    log = opened()
    store(log, "b1")
    log.close()
    path = tmp_path / "receivers" / STREAM / name
    path.unlink()
    path.mkdir()
    problems = block_log_verify(str(tmp_path))
    assert [p for p in problems if f"WAL file {path} is a directory" in p], problems
    with pytest.raises(StorageError):
        opened()


def test_verify_with_the_checkpoint_batches_reports_an_allocation_whose_intent_is_lost(
        opened, tmp_path: Path) -> None:
    log = opened()
    store(log, "b1")
    log.allocate(1000)  # committed
    store(log, "b2")
    log.allocate(2000)  # pending: its intent is there
    store(log, "b3")
    log.allocate(3000)  # neither intent nor commit: the intent was lost
    log.close()
    assert block_log_verify(str(tmp_path), checkpoint=(1000, [2000, 3000])) == []
    (problem,) = block_log_verify(str(tmp_path), checkpoint=(1000, [2000]))
    assert f"intent file {tmp_path / 'offsets' / '00000000000000003000'} is missing" in problem
    assert block_log_verify(str(tmp_path)) == [], "without the checkpoint's batches nothing to compare"
