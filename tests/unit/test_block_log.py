"""Specification of the per-stream block log (`receivers.block_log`) and of the
codec its BLOCK records use (`receivers.codec`).

A `BlockLog` is both the block store and the block tracker of one receiver
stream with the write-ahead log on: blocks are readable by their handle once
`put` returned, allocation to a batch is idempotent, a reopened log is replayed
against what the checkpoint says (last committed batch, batches to re-run), and
segments go only once every record in them belongs to cleaned batches.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import pytest
from block_logs import STREAM, FakeClock, ids, reopen, segment_numbers

from ingest.errors import CheckpointError, ConfigError, CorruptRecordError
from ingest.kafka.records import KafkaRecord
from receivers.block import Block, BlockInfo
from receivers.block_log import BlockLog
from receivers.codec import decode_block, encode_block
from receivers.wal import FILE_HEADER_SIZE, RECORD_HEADER_SIZE


def records_of(block_id: str) -> list[Any]:
    return [f"{block_id}:{i}" for i in range(3)] + [(block_id, b"\x00\xff")]


def store(log: BlockLog, block_id: str, metadata: dict[str, Any] | None = None) -> BlockInfo:
    """What the receiver stream does for a received block: put, then track."""
    info = log.put(STREAM, Block(block_id, records_of(block_id), metadata))
    log.add_block(info)
    return info


# -- the store -------------------------------------------------------------------------------


def test_a_block_is_read_back_from_the_log_once_its_memory_copy_is_dropped(opened) -> None:
    log = opened()
    info = store(log, "b1", {"offsets": [["t", 0, 7]]})
    assert info.wal_handle is not None
    assert (info.num_records, dict(info.metadata)) == (4, {"offsets": [["t", 0, 7]]})
    log.remove([info])
    assert log.get(info) == records_of("b1")


def test_a_block_is_read_back_by_its_handle_after_the_log_is_reopened(opened) -> None:
    log = opened()
    infos = [store(log, f"b{i}") for i in range(5)]
    as_planned = [BlockInfo.from_json(i.to_json()) for i in infos]  # what the intent log keeps
    log = reopen(log, opened)
    assert [log.get(i) for i in reversed(as_planned)] == [records_of(f"b{i}") for i in reversed(range(5))]


def test_a_handle_naming_another_block_is_refused_naming_both(opened) -> None:
    log = opened()
    first, second = store(log, "b1"), store(log, "b2")
    log.remove([first, second])
    forged = BlockInfo("b1", STREAM, 4, None, second.wal_handle)
    with pytest.raises(ConfigError, match=r"holds block b2, not b1"):
        log.get(forged)


def test_put_refuses_records_that_are_not_plain_data_and_writes_nothing(opened) -> None:
    log = opened()
    with pytest.raises(ConfigError, match="object"):
        log.put(STREAM, Block("b1", ["fine", object()]))
    assert log.wal.records_written == 0


# -- the tracker -----------------------------------------------------------------------------


def test_allocating_the_same_batch_time_twice_returns_the_first_allocation(opened) -> None:
    log = opened()
    store(log, "b1")
    store(log, "b2")
    first = log.allocate(1000)
    store(log, "b3")
    assert ids(log.allocate(1000)) == ids(first) == ["b1", "b2"]
    assert log.has_unallocated()
    assert ids(log.allocate(2000)) == ["b3"]
    assert ids(log.allocate(1000)) == ["b1", "b2"]


def test_a_batch_time_before_the_last_allocation_gets_nothing(opened) -> None:
    log = opened()
    store(log, "b1")
    log.allocate(2000)
    store(log, "b2")
    assert log.allocate(1000) == []
    assert ids(log.allocate(3000)) == ["b2"]


def test_cleanup_forgets_the_batches_up_to_a_time_and_returns_their_blocks(opened) -> None:
    log = opened()
    store(log, "b1")
    log.allocate(1000)
    store(log, "b2")
    log.allocate(2000)
    store(log, "b3")
    log.allocate(3000)
    assert ids(log.cleanup(2000)) == ["b1", "b2"]
    assert log.cleanup(2000) == []
    assert ids(log.allocate(3000)) == ["b3"]


# -- replay after a restart ------------------------------------------------------------------


def crashed_log(opened) -> BlockLog:
    """A log as a crash leaves it:

    - batch 1000 (b1, b2): committed and cleaned;
    - batch 2000 (b3): committed, crash before its clean-up;
    - batch 3000 (b4): intent written, no commit (to be re-run);
    - batch 4000 (b5): planned (reserved in memory), crash before its intent;
    - b6, b7: received after that, never allocated."""
    log = opened()
    store(log, "b1")
    store(log, "b2")
    log.allocate(1000)
    store(log, "b3")
    log.allocate(2000)
    log.cleanup(1000)
    store(log, "b4")
    log.allocate(3000)
    store(log, "b5", {"offsets": [["t", 0, 5]]})
    log.reserve(4000)
    store(log, "b6")
    store(log, "b7")
    return log


def test_replay_keeps_the_pending_batches_allocated_to_be_re_run(opened) -> None:
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    assert ids(log.allocate(3000)) == ["b4"]  # re-run reads exactly its blocks
    assert not log.tracker.is_processed(3000)
    assert log.get(log.allocate(3000)[0]) == records_of("b4")


def test_replay_keeps_committed_batches_readable_as_processed_until_clean_up(opened) -> None:
    # A state replay after a checkpoint fallback re-reads committed batches:
    # their blocks stay until the retention point passes them.
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    assert ids(log.allocate(2000)) == ["b3"]
    assert log.get(log.allocate(2000)[0]) == records_of("b3")
    assert log.tracker.is_processed(2000)
    assert log.mark_processed(2000) == [], "already processed: nothing to acknowledge again"
    assert ids(log.clean_up(3000)) == ["b3"]
    assert log.allocate(2000) == []


def test_replay_gives_blocks_planned_without_intent_to_the_next_batch_in_order(opened) -> None:
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    assert log.has_unallocated()
    nxt = log.allocate(4000)
    assert ids(nxt) == ["b5", "b6", "b7"]
    assert [log.get(i) for i in nxt] == [records_of(b) for b in ("b5", "b6", "b7")]
    assert dict(nxt[0].metadata) == {"offsets": [["t", 0, 5]]}


def test_replay_reports_every_block_kept_with_its_metadata(opened) -> None:
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    # b3's batch committed but was not cleaned when the process died: its
    # offsets are durable and processed, so a reliable receiver resumes after
    # them too.
    assert ids(log.recovered) == ["b3", "b4", "b5", "b6", "b7"]
    assert [dict(i.metadata) for i in log.recovered if i.metadata] == [{"offsets": [["t", 0, 5]]}]


def test_a_second_replay_after_a_crash_during_the_first_gives_the_same_state(opened) -> None:
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    log = reopen(log, opened)  # died again before batch 3000 was re-run
    log.recover(last_committed_ms=2000, pending_times=[3000])
    assert ids(log.recovered) == ["b3", "b4", "b5", "b6", "b7"], "replay forgets nothing"
    assert ids(log.allocate(2000)) == ["b3"]
    assert ids(log.allocate(3000)) == ["b4"]
    assert ids(log.reserve(4000)) == ["b5", "b6", "b7"]
    log = reopen(log, opened)  # and again, with batch 4000 now planned and no intent
    log.recover(last_committed_ms=2000, pending_times=[3000])
    assert ids(log.allocate(3000)) == ["b4"]
    assert ids(log.allocate(5000)) == ["b5", "b6", "b7"]


def test_a_reallocated_batch_time_replays_to_its_newest_allocation(opened) -> None:
    log = reopen(crashed_log(opened), opened)
    log.recover(last_committed_ms=2000, pending_times=[3000])
    log.allocate(3000)
    store(log, "b8")
    # Time 4000, planned without intent before the crash, is planned again
    # after the restart, with more blocks.
    assert ids(log.allocate(4000)) == ["b5", "b6", "b7", "b8"]
    log = reopen(log, opened)
    log.recover(last_committed_ms=3000, pending_times=[4000])
    assert ids(log.allocate(4000)) == ["b5", "b6", "b7", "b8"]
    assert not log.has_unallocated()


def test_replay_of_a_log_without_any_commit_puts_every_block_back_in_order(opened) -> None:
    log = opened()
    for i in range(1, 4):
        store(log, f"b{i}")
    log.reserve(1000)  # planned, crash before its intent
    store(log, "b4")
    log = reopen(log, opened)
    log.recover(last_committed_ms=None, pending_times=[])
    assert ids(log.allocate(1000)) == ["b1", "b2", "b3", "b4"]


def test_a_planned_batch_is_journalled_only_once_its_intent_is_confirmed(opened, tmp_path: Path) -> None:
    log = opened()
    store(log, "b1")
    assert ids(log.reserve(1000)) == ["b1"]
    log = reopen(log, opened)  # crash before the intent: nothing durable says b1 went to batch 1000
    log.recover(last_committed_ms=None, pending_times=[])
    store(log, "b2")
    assert ids(log.reserve(1000)) == ["b1", "b2"]


def test_a_batch_whose_intent_was_written_but_not_its_allocation_gets_exactly_the_intent_blocks(opened) -> None:
    log = opened()
    store(log, "b1")
    store(log, "b2")
    planned = log.reserve(1000)
    log = reopen(log, opened)  # crash after the intent, before confirm()
    log.recover(last_committed_ms=None, pending_times=[1000])
    store(log, "b3")  # received after the restart, before the re-run
    assert ids(log.confirm(1000, planned)) == ["b1", "b2"]
    assert ids(log.reserve(2000)) == ["b3"]
    log = reopen(log, opened)  # the confirmed allocation is in the log now
    log.recover(last_committed_ms=None, pending_times=[1000])
    assert ids(log.tracker.blocks_of_batch(1000)) == ["b1", "b2"]
    assert ids(log.reserve(2000)) == ["b3"]


def test_confirming_a_batch_twice_journals_it_once(opened) -> None:
    log = opened()
    store(log, "b1")
    planned = log.reserve(1000)
    log.confirm(1000, planned)
    log.confirm(1000, planned)  # a re-run after a restart confirms again
    kinds = [kind for _, kind, _ in log.wal.records()]
    assert kinds.count(2) == 1  # one ALLOCATED record


def test_an_allocation_whose_batch_has_neither_intent_nor_commit_is_an_error_naming_the_intent(
        opened, tmp_path: Path) -> None:
    log = opened()
    store(log, "b1")
    store(log, "b2")
    log.allocate(1000)  # journalled: its intent was durable before
    log = reopen(log, opened)
    with pytest.raises(CheckpointError) as err:
        log.recover(last_committed_ms=None, pending_times=[])  # ... and is gone now
    message = str(err.value)
    assert str(tmp_path / "offsets" / "00000000000000001000") in message
    assert "b1, b2" in message and "blocks-00000000000000000001.wal" in message
    assert "Restore the intent file" in message


def test_an_intent_naming_blocks_the_log_does_not_hold_is_an_error_naming_it(opened, tmp_path: Path) -> None:
    log = opened()
    store(log, "b1")
    log = reopen(log, opened)
    log.recover(last_committed_ms=None, pending_times=[1000])
    ghost = BlockInfo("ghost", STREAM, 1, None, None)
    with pytest.raises(CorruptRecordError) as err:
        log.confirm(1000, [ghost])
    assert err.value.path == str(tmp_path / "offsets" / "00000000000000001000")
    assert "ghost" in str(err.value)
    assert ids(log.reserve(2000)) == ["b1"], "nothing was taken"


def test_replay_after_everything_committed_leaves_nothing_to_do(opened) -> None:
    log = opened()
    store(log, "b1")
    log.allocate(1000)
    store(log, "b2")
    log.allocate(2000)
    log = reopen(log, opened)
    log.recover(last_committed_ms=2000, pending_times=[])
    assert not log.has_unallocated()
    assert log.reserve(3000) == []
    log.clean_up(retain_from_ms=3000)
    log = reopen(log, opened)
    log.recover(last_committed_ms=2000, pending_times=[])
    assert log.recovered == []


# -- clean-up of segments --------------------------------------------------------------------


def test_segments_are_deleted_only_once_every_record_in_them_belongs_to_cleaned_batches(opened) -> None:
    clock = FakeClock()
    log = opened(segment_max_age_s=10, clock=clock)

    def in_new_segment() -> None:
        clock.now += 11  # the next append rolls to a new segment

    store(log, "b1")  # segment 1: b1 and b2, the blocks of two different batches
    log.allocate(1000)
    store(log, "b2")
    in_new_segment()
    log.allocate(2000)  # segment 2
    in_new_segment()
    store(log, "b3")  # segment 3
    log.allocate(3000)
    assert segment_numbers(log) == [1, 2, 3]

    log.cleanup(1000)  # b1 is done but b2 still needs segment 1
    assert segment_numbers(log) == [1, 2, 3]
    log.cleanup(2000)  # segments 1 and 2 hold only records of cleaned batches
    assert segment_numbers(log) == [3]
    assert ids(log.allocate(3000)) == ["b3"]
    log.remove(log.allocate(3000))
    assert log.get(log.allocate(3000)[0]) == records_of("b3")


def test_an_allocation_of_a_pending_batch_keeps_its_segment(opened) -> None:
    clock = FakeClock()
    log = opened(segment_max_age_s=10, clock=clock)
    store(log, "b1")
    log.allocate(1000)  # segment 1
    clock.now += 11
    store(log, "b2")  # segment 2
    log.allocate(2000)
    clock.now += 11
    log.cleanup(1000)  # segment 3: only the CLEANED record
    assert segment_numbers(log) == [2, 3]
    log = reopen(log, opened, segment_max_age_s=10, clock=clock)
    log.recover(last_committed_ms=1000, pending_times=[2000])
    assert ids(log.allocate(2000)) == ["b2"]
    assert log.get(log.allocate(2000)[0]) == records_of("b2")


def test_tiny_segments_are_cleaned_behind_committed_batches_and_replay_still_works(opened) -> None:
    options = {"segment_max_bytes": FILE_HEADER_SIZE + RECORD_HEADER_SIZE + 1}  # one record per segment
    log = opened(**options)
    time_ms = 0
    for round_ in range(5):
        time_ms += 1000
        store(log, f"r{round_}a")
        store(log, f"r{round_}b")
        log.allocate(time_ms)
        if round_ < 4:
            log.cleanup(time_ms)
    # Left: the BLOCK and ALLOCATED records of the last batch and the newest
    # CLEANED record (a segment starts no earlier than the oldest needed record).
    assert len(log.wal.segments) == 4
    store(log, "late")
    log = reopen(log, opened, **options)
    log.recover(last_committed_ms=4000, pending_times=[5000])
    assert ids(log.allocate(5000)) == ["r4a", "r4b"]
    assert [log.get(i) for i in log.allocate(5000)] == [records_of("r4a"), records_of("r4b")]
    assert ids(log.allocate(6000)) == ["late"]


# -- faults ----------------------------------------------------------------------------------


def test_a_log_directory_that_cannot_be_created_is_a_config_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the checkpoint directory should be")
    with pytest.raises(ConfigError) as err:
        BlockLog(str(blocker), STREAM)
    assert str(blocker / "receivers" / STREAM) in str(err.value)


def test_a_checkpoint_url_without_its_storage_is_refused_for_the_log(tmp_path: Path) -> None:
    # On HDFS and S3 the log takes the checkpoint's Storage (which carries its options).
    with pytest.raises(ConfigError, match="s3://bucket/ckpt needs its storage"):
        BlockLog("s3://bucket/ckpt", STREAM)


def test_a_record_corrupted_after_it_was_written_is_an_error_naming_the_file(opened) -> None:
    log = opened()
    info = store(log, "b1")
    store(log, "b2")
    log.remove([info])
    path = log.wal.segments[0]
    with open(path, "r+b") as f:
        f.seek(info.wal_handle["offset"] + RECORD_HEADER_SIZE + 5)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(CorruptRecordError) as err:
        log.get(info)
    assert path in str(err.value)
    assert err.value.offset == info.wal_handle["offset"]


# -- the codec -------------------------------------------------------------------------------


ROUND_TRIPS = [
    pytest.param(["text", "ünïcödé", ""], id="str"),
    pytest.param([b"\x00\x01\xff", b""], id="bytes"),
    pytest.param([None, True, False, 0, -1, 2**63 - 1, 1.5], id="scalars"),
    pytest.param([("a", 1), ("b", (2, (3, b"x"))), ()], id="tuples"),
    pytest.param([{"a": {"b": [1, (2, 3)], "c": {"d": b"\x00", "e": None}}, "f": []}], id="nested dicts"),
    pytest.param([{1: "int key", ("t", 1): "tuple key"}], id="non-string keys"),
    pytest.param([[1, [2, [3]]], [("x", [b"y"])]], id="lists"),
    pytest.param([KafkaRecord("orders", 3, 41, 1_700_000_000_000, b"k", b"v", (("h", b"1"), ("n", None))),
                  KafkaRecord("orders", 0, 0, None, None, None, None)], id="KafkaRecord"),
]


@pytest.mark.parametrize("records", ROUND_TRIPS)
def test_the_codec_round_trips_plain_data_keeping_types(records: list[Any]) -> None:
    back = decode_block(encode_block(records))
    assert back == records
    assert [type(r) for r in back] == [type(r) for r in records]
    if isinstance(records[0], KafkaRecord):
        assert isinstance(back[0].headers, tuple) and isinstance(back[0].headers[0], tuple)


def test_a_kafka_record_survives_the_log_and_a_reopen(opened) -> None:
    record = KafkaRecord("orders", 1, 99, 123, b"key", b"value", (("trace", b"abc"),))
    log = opened()
    info = log.put(STREAM, Block("b1", [record, ("pair", 1)]))
    log = reopen(log, opened)
    back = log.get(info)
    assert back == [record, ("pair", 1)]
    assert type(back[0]) is KafkaRecord


class Custom:
    pass


@pytest.mark.parametrize("bad", [object(), Custom(), {1, 2}, frozenset(), datetime.date(2024, 1, 1), 1j,
                                 [["nested", {"deep": Custom()}]]],
                         ids=["object", "class", "set", "frozenset", "date", "complex", "nested"])
def test_the_codec_rejects_other_objects_with_a_config_error_naming_the_type(bad: Any) -> None:
    with pytest.raises(ConfigError) as err:
        encode_block(["ok", bad])
    assert "plain data" in str(err.value)
    inner = bad[0][1]["deep"] if isinstance(bad, list) else bad
    assert type(inner).__name__ in str(err.value)
