"""Specification of the segmented write-ahead log (`receivers.wal`)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import receivers.wal as wal_module
from ingest.errors import ConfigError, CorruptRecordError, StateError, StorageError
from receivers.wal import (
    FILE_HEADER_SIZE,
    FORMAT_VERSION,
    RECORD_HEADER_SIZE,
    RecordHandle,
    WriteAheadLog,
    read_records,
    verify,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def payload(i: int, size: int = 40) -> bytes:
    return (f"record-{i}-".encode() * size)[:size]


def write_log(directory: Path, payloads: list[bytes], **options: object) -> list[RecordHandle]:
    with WriteAheadLog(directory, **options) as wal:
        return [wal.append(p) for p in payloads]


def read_all(directory: Path, **options: object) -> list[bytes]:
    with WriteAheadLog(directory, **options) as wal:
        return [p for _, _, p in wal.records()]


def segment_path(directory: Path, seq: int, name: str = "wal") -> Path:
    return directory / f"{name}-{seq:020d}.wal"


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


# ----------------------------------------------------------------- round trips


def test_records_come_back_in_write_order_with_their_types(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        written = [(wal.append(payload(i), record_type=i % 4), i % 4, payload(i)) for i in range(20)]
        assert list(wal.records()) == written


def test_read_by_handle_returns_that_payload_in_any_order(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=300) as wal:
        handles = [wal.append(payload(i, size=10 + i)) for i in range(30)]
        for i in reversed(range(30)):
            assert wal.read(handles[i]) == payload(i, size=10 + i)
        assert len(wal.segments) > 1


def test_empty_payload_round_trips(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        handle = wal.append(b"")
        assert handle.length == 0
        assert wal.read(handle) == b""
    assert read_all(tmp_path) == [b""]


def test_records_survive_close_and_reopen(tmp_path: Path) -> None:
    payloads = [payload(i) for i in range(10)]
    handles = write_log(tmp_path, payloads)
    with WriteAheadLog(tmp_path) as wal:
        assert [(h, p) for h, _, p in wal.records()] == list(zip(handles, payloads))
        assert [wal.read(h) for h in handles] == payloads


def test_append_many_writes_a_group_with_one_sync(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="always") as wal:
        wal.append(b"first")
        syncs = wal.fsyncs
        handles = wal.append_many([payload(i) for i in range(100)], record_type=9)
        assert wal.fsyncs == syncs + 1
        assert wal.records_written == 101
        assert len({h.segment for h in handles}) == 1
        offsets = [h.offset for h in handles]
        assert offsets == sorted(offsets)
        assert all(b.offset == a.offset + RECORD_HEADER_SIZE + a.length for a, b in zip(handles, handles[1:]))
        assert [(t, p) for _, t, p in wal.records()][1:] == [(9, payload(i)) for i in range(100)]
        assert wal.bytes_written == sum(RECORD_HEADER_SIZE + len(p) for p in [b"first"] + [payload(i) for i in range(100)])


def test_append_many_larger_than_one_vectored_write_round_trips(tmp_path: Path) -> None:
    payloads = [payload(i, size=i % 7) for i in range(3000)]  # 6000 buffers, several pwritev calls
    with WriteAheadLog(tmp_path) as wal:
        handles = wal.append_many(payloads)
        assert [wal.read(h) for h in handles] == payloads
    assert read_all(tmp_path) == payloads


def test_partial_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwritev = os.pwritev

    calls = []

    def short_writes(fd: int, buffers: list[bytes], offset: int) -> int:
        calls.append(len(buffers))
        data = b"".join(bytes(b) for b in buffers)[:limit]
        return real_pwritev(fd, [data], offset)

    # Small records are joined into one buffer, large ones written as separate
    # buffers; a short write must resume at the right byte in both cases.
    for limit, payloads in [
        (5, [b"", payload(1, size=13), b"x", payload(2, size=40)]),
        (4099, [b"", payload(1, size=30_000), b"", payload(2, size=30_000), b"x"]),
    ]:
        calls.clear()
        with WriteAheadLog(tmp_path / str(limit)) as wal:
            monkeypatch.setattr(os, "pwritev", short_writes)
            handles = wal.append_many(payloads)
            monkeypatch.undo()
            assert [wal.read(h) for h in handles] == payloads
        assert len(calls) > 2
        assert read_all(tmp_path / str(limit)) == payloads
    assert calls[0] == 10  # the large records went out as 2 buffers each


def test_append_many_of_nothing_writes_nothing(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        assert wal.append_many([]) == []
        assert wal.records_written == 0 and wal.fsyncs == 0


def test_record_handle_round_trips_through_a_dict(tmp_path: Path) -> None:
    handle = RecordHandle(segment=3, offset=1024, length=77)
    assert handle.to_dict() == {"segment": 3, "offset": 1024, "length": 77}
    assert RecordHandle.from_dict(handle.to_dict()) == handle
    assert RecordHandle(1, 90, 5) < RecordHandle(2, 24, 1)


@pytest.mark.parametrize(
    "bad",
    [
        {"segment": 1, "offset": 24},
        {"segment": 1, "offset": 24, "length": 3, "extra": 1},
        {"segment": "1", "offset": 24, "length": 3},
        {"segment": 1, "offset": -1, "length": 3},
        {"segment": 1, "offset": 24, "length": True},
        [1, 24, 3],
    ],
)
def test_record_handle_from_dict_rejects_other_shapes(bad: object) -> None:
    with pytest.raises(ConfigError, match="handle"):
        RecordHandle.from_dict(bad)  # type: ignore[arg-type]


# -------------------------------------------------------------------- format


def test_segment_bytes_follow_the_documented_format(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        handle = wal.append(b"hello", record_type=0x0102)
    data = segment_path(tmp_path, 1).read_bytes()

    header = data[:FILE_HEADER_SIZE]
    assert header[:8] == b"\x89WAL\r\n\x1a\n"
    assert struct.unpack(">HHQ", header[8:20]) == (FORMAT_VERSION, 0, 1)
    assert struct.unpack(">I", header[20:24])[0] == crc32c(header[:20])

    assert handle == RecordHandle(1, FILE_HEADER_SIZE, 5)
    record = data[FILE_HEADER_SIZE:]
    assert len(record) == RECORD_HEADER_SIZE + 5
    assert record[:4] == b"WREC"
    assert struct.unpack(">BBHI", record[4:12]) == (FORMAT_VERSION, 0, 0x0102, 5)
    assert struct.unpack(">I", record[12:16])[0] == crc32c(record[:12] + b"hello")
    assert record[16:] == b"hello"


def test_segment_files_are_named_by_zero_padded_sequence(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, name="blocks", segment_max_bytes=100) as wal:
        wal.append_many([b"x" * 60])
        wal.append_many([b"y" * 60])
        assert wal.segments == [str(segment_path(tmp_path, 1, "blocks")), str(segment_path(tmp_path, 2, "blocks"))]


def test_two_logs_with_different_names_share_a_directory(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, name="a") as a, WriteAheadLog(tmp_path, name="b") as b:
        a.append(b"from a")
        b.append(b"from b")
    assert read_all(tmp_path, name="a") == [b"from a"]
    assert read_all(tmp_path, name="b") == [b"from b"]


# ------------------------------------------------------------------- segments


def test_segments_roll_by_size(tmp_path: Path) -> None:
    limit = 500
    with WriteAheadLog(tmp_path, segment_max_bytes=limit) as wal:
        handles = [wal.append(payload(i, size=50)) for i in range(40)]
        segments = wal.segments
    assert len(segments) > 4
    assert [h.segment for h in handles] == sorted(h.segment for h in handles)
    assert all(os.path.getsize(s) <= limit for s in segments)
    assert read_all(tmp_path) == [payload(i, size=50) for i in range(40)]


def test_an_append_larger_than_a_segment_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        small = wal.append(b"a" * 10)
        big = wal.append_many([b"b" * 150, b"c" * 150])
        after = wal.append(b"d" * 10)
        assert (small.segment, big[0].segment, big[1].segment, after.segment) == (1, 2, 2, 3)
        assert [wal.read(h) for h in [small, *big, after]] == [b"a" * 10, b"b" * 150, b"c" * 150, b"d" * 10]


def test_segments_roll_by_age_of_their_first_record(tmp_path: Path) -> None:
    clock = FakeClock()
    with WriteAheadLog(tmp_path, segment_max_age_s=10.0, clock=clock) as wal:
        clock.advance(100)  # an idle empty segment does not age
        first = wal.append(b"1")
        clock.advance(9.9)
        second = wal.append(b"2")
        clock.advance(0.1)
        third = wal.append(b"3")
        clock.advance(5)
        fourth = wal.append(b"4")
        assert [h.segment for h in (first, second, third, fourth)] == [1, 1, 2, 2]


def test_segments_roll_by_a_tiny_max_age_in_real_time(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_age_s=1e-9) as wal:
        handles = [wal.append(payload(i)) for i in range(5)]
    assert [h.segment for h in handles] == [1, 2, 3, 4, 5]
    assert read_all(tmp_path) == [payload(i) for i in range(5)]


def test_reopen_continues_in_a_new_segment_without_losing_records(tmp_path: Path) -> None:
    first = write_log(tmp_path, [b"a", b"b"])
    with WriteAheadLog(tmp_path) as wal:
        more = wal.append(b"c")
        assert more.segment == first[-1].segment + 1
    with WriteAheadLog(tmp_path) as wal:
        assert [p for _, _, p in wal.records()] == [b"a", b"b", b"c"]
        assert [wal.read(h) for h in first + [more]] == [b"a", b"b", b"c"]


def test_reopen_of_an_empty_last_segment_reuses_it(tmp_path: Path) -> None:
    write_log(tmp_path, [b"a"])
    for _ in range(3):
        with WriteAheadLog(tmp_path) as wal:
            pass
    with WriteAheadLog(tmp_path) as wal:
        assert len(wal.segments) == 2
        assert wal.append(b"b").segment == 2
    assert read_all(tmp_path) == [b"a", b"b"]


def test_leftover_temporary_segment_is_removed_on_open(tmp_path: Path) -> None:
    write_log(tmp_path, [b"a"])
    temp = Path(str(segment_path(tmp_path, 2)) + ".tmp")
    temp.write_bytes(b"\x89WAL")
    assert read_all(tmp_path) == [b"a"]
    assert not temp.exists()


# -------------------------------------------------------------------- fsyncs


def test_fsync_always_syncs_every_append(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, fsync="always") as wal:
        for i in range(5):
            wal.append(b"x")
            assert wal.fsyncs == i + 1


def test_fsync_interval_syncs_when_the_interval_has_passed(tmp_path: Path) -> None:
    clock = FakeClock()
    with WriteAheadLog(tmp_path, fsync="interval", fsync_interval_s=1.0, clock=clock) as wal:
        wal.append(b"a")
        clock.advance(0.5)
        wal.append(b"b")
        assert wal.fsyncs == 0
        clock.advance(0.5)
        wal.append(b"c")
        assert wal.fsyncs == 1
        wal.append(b"d")
        assert wal.fsyncs == 1
        wal.close()
        assert wal.fsyncs == 2


def test_fsync_never_syncs_only_on_sync_roll_and_close(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never", segment_max_bytes=100)
    wal.append(b"a" * 10)
    wal.append(b"b" * 10)
    assert wal.fsyncs == 0
    wal.sync()
    assert wal.fsyncs == 1
    wal.sync()  # nothing new to sync
    assert wal.fsyncs == 1
    wal.append(b"c" * 10)
    wal.append(b"d" * 80)  # rolls: the closed segment is synced first
    assert wal.fsyncs == 2
    wal.close()
    assert wal.fsyncs == 3
    assert read_all(tmp_path) == [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 80]


# ----------------------------------------------------------------- torn tails


def _log_with_final_record(directory: Path) -> tuple[list[bytes], RecordHandle, Path]:
    payloads = [payload(i) for i in range(5)]
    handles = write_log(directory, payloads, fsync="never")
    return payloads, handles[-1], segment_path(directory, handles[-1].segment)


def test_torn_final_record_is_truncated_at_every_cut_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    template = tmp_path / "template"
    payloads, last, path = _log_with_final_record(template)
    end = last.offset + RECORD_HEADER_SIZE + last.length
    assert path.stat().st_size == end
    for cut in range(last.offset, end):
        case = tmp_path / f"cut-{cut}"
        shutil.copytree(template, case)
        case_path = segment_path(case, last.segment)
        truncate(case_path, cut)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="receivers.wal"):
            assert read_all(case) == payloads[:-1]
        assert case_path.stat().st_size == last.offset
        if cut == last.offset:
            assert caplog.records == []
        else:
            (warning,) = caplog.records
            assert warning.levelno == logging.WARNING
            message = warning.getMessage()
            assert str(case_path) in message
            assert f"offset {last.offset}" in message
            assert f"truncated {cut - last.offset} bytes" in message


def test_log_keeps_working_after_a_torn_tail(tmp_path: Path) -> None:
    payloads, last, path = _log_with_final_record(tmp_path)
    truncate(path, last.offset + 7)
    with WriteAheadLog(tmp_path) as wal:
        new = wal.append(b"after the crash")
        assert new.segment == last.segment + 1
    assert read_all(tmp_path) == payloads[:-1] + [b"after the crash"]


def test_a_bit_flip_anywhere_in_the_complete_final_record_is_corruption_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    # The final record is whole: it was written in full and may have been
    # acknowledged, so dropping it as a torn write would lose data silently.
    template = tmp_path / "template"
    payloads, last, path = _log_with_final_record(template)
    size = path.stat().st_size
    for position in range(last.offset, last.offset + RECORD_HEADER_SIZE + last.length):
        case = tmp_path / f"flip-{position}"
        shutil.copytree(template, case)
        case_path = segment_path(case, last.segment)
        flip_bit(case_path, position, bit=position % 8)
        with pytest.raises(CorruptRecordError) as caught:
            WriteAheadLog(case)
        assert (caught.value.path, caught.value.offset) == (str(case_path), last.offset), position
        assert f"offset {last.offset}" in str(caught.value)
        assert case_path.stat().st_size == size, "nothing was truncated"


def test_a_flipped_bit_that_makes_the_final_length_run_past_the_end_is_corruption(tmp_path: Path) -> None:
    payloads, last, path = _log_with_final_record(tmp_path)
    _set_length_field(path, last.offset, last.length | (1 << 20))
    with pytest.raises(CorruptRecordError, match=f"complete record of {last.length} bytes") as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.offset == last.offset


def test_zero_filled_tail_is_a_torn_tail(tmp_path: Path) -> None:
    payloads, last, path = _log_with_final_record(tmp_path)
    end = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)
    assert read_all(tmp_path) == payloads
    assert path.stat().st_size == end


def test_torn_header_of_a_last_segment_the_bounds_do_not_name_yet_is_rewritten(tmp_path: Path) -> None:
    write_log(tmp_path, [b"a", b"b"])
    bounds = (tmp_path / "wal.bounds").read_bytes()  # names segment 1, the last one
    with WriteAheadLog(tmp_path) as wal:  # leaves an empty segment 2 behind
        pass
    truncate(segment_path(tmp_path, 2), 10)  # (a copy can make this; a crash cannot)
    (tmp_path / "wal.bounds").write_bytes(bounds)  # as before segment 2 was named
    with WriteAheadLog(tmp_path) as wal:
        assert [p for _, _, p in wal.records()] == [b"a", b"b"]
        assert wal.append(b"c").segment == 3  # the repaired segment is not reused
    assert segment_path(tmp_path, 2).stat().st_size == FILE_HEADER_SIZE
    assert read_all(tmp_path) == [b"a", b"b", b"c"]


@pytest.mark.parametrize("size", [0, 1, FILE_HEADER_SIZE - 1])
def test_a_last_segment_the_bounds_name_without_a_whole_header_is_corruption_naming_it(
        tmp_path: Path, size: int) -> None:
    write_log(tmp_path, [b"a", b"b"])
    truncate(segment_path(tmp_path, 1), size)  # its records are gone, not "never written"
    with pytest.raises(CorruptRecordError) as err:
        WriteAheadLog(tmp_path)
    assert err.value.path == str(segment_path(tmp_path, 1))
    assert f"is {size} bytes, shorter than its {FILE_HEADER_SIZE}-byte header" in str(err.value)
    assert segment_path(tmp_path, 1).stat().st_size == size, "nothing was repaired"
    with pytest.raises(CorruptRecordError):
        list(read_records(tmp_path, "wal"))
    assert any(str(segment_path(tmp_path, 1)) in p for p in verify(tmp_path))


def test_a_last_segment_overwritten_by_the_empty_lock_file_is_corruption_naming_it(tmp_path: Path) -> None:
    write_log(tmp_path, [b"a", b"b"])
    shutil.copyfile(tmp_path / "wal.lock", segment_path(tmp_path, 1))
    with pytest.raises(CorruptRecordError, match="wal-00000000000000000001.wal"):
        WriteAheadLog(tmp_path)


def test_a_bounds_file_of_an_older_release_still_lets_a_headerless_last_segment_be_repaired(
        tmp_path: Path) -> None:
    write_log(tmp_path, [b"a", b"b"])
    with WriteAheadLog(tmp_path):  # leaves an empty segment 2 behind
        pass
    truncate(segment_path(tmp_path, 2), 0)
    (tmp_path / "wal.bounds").write_text('{"first": 1, "last": 2}')  # format 1: no checksum
    assert read_all(tmp_path) == [b"a", b"b"]


def test_a_new_segment_is_named_by_the_bounds_only_once_its_header_is_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bytes]] = []
    real = WriteAheadLog._write_bounds

    def spy(self: WriteAheadLog, first: int, last: int) -> None:
        seen.append((last, Path(self._path(last)).read_bytes()))
        real(self, first, last)

    monkeypatch.setattr(WriteAheadLog, "_write_bounds", spy)
    write_log(tmp_path, [b"a"])
    with WriteAheadLog(tmp_path):
        pass
    assert [last for last, _ in seen] == [1, 2]
    assert all(head == wal_module._file_header(last) for last, head in seen)


# ----------------------------------------------------------------- corruption


def test_bit_flip_in_a_middle_record_raises_naming_file_and_offset(tmp_path: Path) -> None:
    template = tmp_path / "template"
    handles = write_log(template, [payload(i) for i in range(5)], fsync="never")
    middle = handles[2]
    for position in range(middle.offset, middle.offset + RECORD_HEADER_SIZE + middle.length):
        case = tmp_path / f"flip-{position}"
        shutil.copytree(template, case)
        path = segment_path(case, middle.segment)
        flip_bit(path, position, bit=(position * 3) % 8)
        with pytest.raises(CorruptRecordError) as caught:
            WriteAheadLog(case)
        assert caught.value.path == str(path), position
        assert caught.value.offset == middle.offset, position
        assert str(path) in str(caught.value) and f"offset {middle.offset}" in str(caught.value)
        assert path.stat().st_size == segment_path(template, 1).stat().st_size  # nothing truncated


def test_bit_flip_in_a_closed_segment_raises_even_in_its_final_record(tmp_path: Path) -> None:
    handles = write_log(tmp_path, [payload(i, size=60) for i in range(6)], segment_max_bytes=200)
    last_of_first = [h for h in handles if h.segment == 1][-1]
    path = segment_path(tmp_path, 1)
    size = path.stat().st_size
    flip_bit(path, size - 1)
    with pytest.raises(CorruptRecordError) as caught:
        WriteAheadLog(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(path), last_of_first.offset)
    assert path.stat().st_size == size  # nothing was truncated


def test_bad_magic_followed_by_valid_records_raises(tmp_path: Path) -> None:
    handles = write_log(tmp_path, [payload(i) for i in range(3)])
    path = segment_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[handles[1].offset : handles[1].offset + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match="bad record magic") as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.offset == handles[1].offset
    assert f"intact record follows at offset {handles[2].offset}" in str(caught.value)


def _set_length_field(path: Path, record_offset: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(">I", data, record_offset + 8, length)
    path.write_bytes(bytes(data))


def test_oversized_length_field_in_the_middle_raises(tmp_path: Path) -> None:
    handles = write_log(tmp_path, [payload(i) for i in range(4)], max_record_bytes=1000)
    path = segment_path(tmp_path, 1)
    _set_length_field(path, handles[1].offset, 0xFFFFFFFF)
    with pytest.raises(CorruptRecordError) as caught:
        WriteAheadLog(tmp_path, max_record_bytes=1000)
    assert (caught.value.path, caught.value.offset) == (str(path), handles[1].offset)


def test_length_field_above_the_bound_but_inside_the_file_raises_naming_the_bound(tmp_path: Path) -> None:
    handles = write_log(tmp_path, [payload(i) for i in range(6)], max_record_bytes=100)
    _set_length_field(segment_path(tmp_path, 1), handles[1].offset, 101)
    with pytest.raises(CorruptRecordError, match="exceeds max_record_bytes=100") as caught:
        WriteAheadLog(tmp_path, max_record_bytes=100)
    assert caught.value.offset == handles[1].offset


@pytest.mark.parametrize("length", [1001, 0xFFFFFFFF])
def test_oversized_length_field_in_the_final_record_is_a_torn_tail(tmp_path: Path, length: int) -> None:
    payloads = [payload(i) for i in range(4)]
    handles = write_log(tmp_path, payloads, max_record_bytes=1000)
    _set_length_field(segment_path(tmp_path, 1), handles[-1].offset, length)
    assert read_all(tmp_path, max_record_bytes=1000) == payloads[:-1]


def test_valid_final_record_above_max_record_bytes_is_not_truncated(tmp_path: Path) -> None:
    handles = write_log(tmp_path, [b"small", b"x" * 3000], max_record_bytes=4000)
    path = segment_path(tmp_path, 1)
    size = path.stat().st_size
    with pytest.raises(CorruptRecordError, match="max_record_bytes >= 3000") as caught:
        WriteAheadLog(tmp_path, max_record_bytes=1000)
    assert caught.value.offset == handles[1].offset
    assert path.stat().st_size == size
    assert read_all(tmp_path, max_record_bytes=4000) == [b"small", b"x" * 3000]


def test_missing_middle_segment_raises_naming_it(tmp_path: Path) -> None:
    write_log(tmp_path, [payload(i, size=60) for i in range(8)], segment_max_bytes=200)
    assert segment_path(tmp_path, 4).exists()
    segment_path(tmp_path, 2).unlink()
    with pytest.raises(CorruptRecordError, match="missing") as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.path == str(segment_path(tmp_path, 2))
    assert str(segment_path(tmp_path, 2)) in str(caught.value)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b"NOTAWAL!" + b[8:], "not a WAL segment"),
        (lambda b: b[:8] + b"\x00\x07" + b[10:], "format version 7"),
        (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "CRC32C mismatch"),
    ],
)
def test_bad_segment_header_raises(tmp_path: Path, damage, reason: str) -> None:
    write_log(tmp_path, [b"a"])
    path = segment_path(tmp_path, 1)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptRecordError, match=reason) as caught:
        WriteAheadLog(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(path), 0)


def test_segment_renamed_to_another_number_raises(tmp_path: Path) -> None:
    write_log(tmp_path, [b"a"])
    segment_path(tmp_path, 1).rename(segment_path(tmp_path, 5))
    with pytest.raises(CorruptRecordError, match="wal-00000000000000000001.wal is missing"):
        WriteAheadLog(tmp_path)
    (tmp_path / "wal.bounds").unlink()  # without the bounds, the header still gives it away
    with pytest.raises(CorruptRecordError, match="header says segment 1 but the file name says 5"):
        WriteAheadLog(tmp_path)


def test_corruption_after_open_is_caught_by_read_and_records(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        handles = [wal.append(payload(i)) for i in range(3)]
        path = segment_path(tmp_path, 1)
        flip_bit(path, handles[1].offset + RECORD_HEADER_SIZE + 3)
        assert wal.read(handles[0]) == payload(0)
        with pytest.raises(CorruptRecordError, match="CRC32C mismatch") as caught:
            wal.read(handles[1])
        assert (caught.value.path, caught.value.offset) == (str(path), handles[1].offset)
        seen = []
        with pytest.raises(CorruptRecordError) as caught:
            for _, _, p in wal.records():
                seen.append(p)
        assert seen == [payload(0)]
        assert caught.value.offset == handles[1].offset


def test_segment_removed_behind_the_logs_back_raises_naming_it(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(6)]
        gone = segment_path(tmp_path, 2)
        gone.unlink()
        in_gone = next(h for h in handles if h.segment == 2)
        with pytest.raises(CorruptRecordError, match="something outside the log removed it") as caught:
            wal.read(in_gone)
        assert (caught.value.path, caught.value.offset) == (str(gone), in_gone.offset)
        with pytest.raises(CorruptRecordError) as caught:
            list(wal.records())
        assert caught.value.path == str(gone)


def test_read_of_a_handle_that_is_not_a_record_raises(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path) as wal:
        handle = wal.append(b"hello world")
        with pytest.raises(CorruptRecordError, match="handle says 5"):
            wal.read(RecordHandle(handle.segment, handle.offset, 5))
        with pytest.raises(CorruptRecordError, match="bad record magic"):
            wal.read(RecordHandle(handle.segment, handle.offset + 1, 0))
        with pytest.raises(CorruptRecordError, match="outside"):
            wal.read(RecordHandle(handle.segment, handle.offset, 10_000))


# ------------------------------------------------------------------- clean-up


def test_delete_segments_before_removes_only_older_closed_segments(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(10)]
        segments = wal.segments
        keep_from = next(h for h in handles if h.segment == 3)
        deleted = wal.delete_segments_before(keep_from)
        assert deleted == segments[:2]
        assert not any(os.path.exists(p) for p in deleted)
        assert wal.segments == segments[2:]
        assert [h for h, _, _ in wal.records()] == [h for h in handles if h.segment >= 3]
        assert wal.delete_segments_before(keep_from) == []
    with WriteAheadLog(tmp_path) as wal:  # no gap: what is left reopens
        assert [p for _, _, p in wal.records()] == [payload(i, size=60) for i, h in enumerate(handles) if h.segment >= 3]


def test_delete_segments_before_never_deletes_the_active_segment(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(6)]
        active = wal.segments[-1]
        future = RecordHandle(handles[-1].segment, handles[-1].offset + 1000, 0)
        deleted = wal.delete_segments_before(future)
        assert wal.segments == [active]
        assert active not in deleted
        assert [p for _, _, p in wal.records()] == [payload(i, size=60) for i, h in enumerate(handles) if h.segment == handles[-1].segment]
        wal.append(b"still appendable")


def test_delete_segments_before_refuses_a_handle_from_beyond_the_log(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        [wal.append(payload(i, size=60)) for i in range(6)]
        segments = wal.segments
        with pytest.raises(ConfigError, match="nothing was deleted"):
            wal.delete_segments_before(RecordHandle(99, 24, 0))
        assert wal.segments == segments


def test_reading_a_cleaned_up_record_raises_naming_the_segment(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(6)]
        wal.delete_segments_before(handles[-1])
        gone = segment_path(tmp_path, handles[0].segment)
        with pytest.raises(StorageError, match="deleted by delete_segments_before") as caught:
            wal.read(handles[0])
        assert str(gone) in str(caught.value)
        with pytest.raises(StorageError, match="deleted by delete_segments_before"):
            wal.records(start=handles[0])
        with pytest.raises(StorageError, match="does not come from this log"):
            wal.read(RecordHandle(99, 24, 1))


def test_records_from_a_start_handle(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(8)]
        assert [h for h, _, _ in wal.records(start=handles[3])] == handles[3:]
        with pytest.raises(CorruptRecordError, match="start handle says 1"):
            list(wal.records(start=RecordHandle(handles[3].segment, handles[3].offset, 1)))


def test_records_skips_segments_cleaned_up_while_iterating(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        handles = [wal.append(payload(i, size=60)) for i in range(9)]
        seen = []
        for handle, _, _ in wal.records():
            seen.append(handle)
            if len(seen) == 1:
                wal.delete_segments_before(handles[-1])
        assert seen[0] == handles[0]
        assert seen[-1] == handles[-1]
        assert seen == [handles[0]] + [h for h in handles if h.segment == handles[0].segment and h != handles[0]] + [
            h for h in handles if h.segment == handles[-1].segment
        ]


# ------------------------------------------------------------ write failures


def test_disk_full_on_append_raises_and_keeps_the_log_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = wal_module._write_all

    def disk_full(fd: int, buffers: list[bytes], offset: int) -> None:
        data = b"".join(buffers)
        real_write_all(fd, [data[: len(data) // 2]], offset)  # a partial write, then ENOSPC
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with WriteAheadLog(tmp_path) as wal:
        before = [wal.append(payload(i)) for i in range(3)]
        path = segment_path(tmp_path, 1)
        size = path.stat().st_size
        monkeypatch.setattr(wal_module, "_write_all", disk_full)
        with pytest.raises(StorageError) as caught:
            wal.append_many([payload(10), payload(11)])
        assert caught.value.errno == errno.ENOSPC
        assert str(path) in str(caught.value)
        assert "No space left on device" in str(caught.value)
        assert path.stat().st_size == size  # the partial write was truncated away
        assert [wal.read(h) for h in before] == [payload(i) for i in range(3)]
        assert wal.records_written == 3

        monkeypatch.setattr(wal_module, "_write_all", real_write_all)
        after = wal.append(b"space again")
        assert after.offset == size
    assert read_all(tmp_path) == [payload(i) for i in range(3)] + [b"space again"]


def test_write_error_that_cannot_be_undone_stops_writes_but_not_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = wal_module._write_all

    def half_then_eio(fd: int, buffers: list[bytes], offset: int) -> None:
        data = b"".join(buffers)
        real_write_all(fd, [data[: len(data) // 2]], offset)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def cannot_truncate(fd: int, length: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    wal = WriteAheadLog(tmp_path)
    kept = wal.append(b"kept")
    monkeypatch.setattr(wal_module, "_write_all", half_then_eio)
    monkeypatch.setattr(os, "ftruncate", cannot_truncate)
    with pytest.raises(StorageError, match="refuses further writes"):
        wal.append(b"lost")
    monkeypatch.undo()
    with pytest.raises(StorageError, match="refuses writes"):
        wal.append(b"refused")
    assert wal.read(kept) == b"kept"
    assert [p for _, _, p in wal.records()] == [b"kept"]
    wal.close()
    assert read_all(tmp_path) == [b"kept"]  # reopening truncates the torn half record


def test_disk_full_while_creating_a_segment_keeps_the_current_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_all = wal_module._write_all

    def no_room_for_headers(fd: int, buffers: list[bytes], offset: int) -> None:
        if offset == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write_all(fd, buffers, offset)

    with WriteAheadLog(tmp_path, segment_max_bytes=100) as wal:
        wal.append(b"a" * 50)
        monkeypatch.setattr(wal_module, "_write_all", no_room_for_headers)
        with pytest.raises(StorageError, match="cannot create WAL segment") as caught:
            wal.append(b"b" * 50)
        assert caught.value.errno == errno.ENOSPC
        assert sorted(os.listdir(tmp_path)) == ["wal-00000000000000000001.wal", "wal.bounds", "wal.lock"]
        monkeypatch.undo()
        assert wal.append(b"b" * 50).segment == 2
    assert read_all(tmp_path) == [b"a" * 50, b"b" * 50]


def test_failed_fsync_makes_the_log_refuse_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    wal = WriteAheadLog(tmp_path)
    first = wal.append(b"first")
    monkeypatch.setattr(wal_module, "_fdatasync", eio)
    with pytest.raises(StorageError, match="may not be on disk") as caught:
        wal.append(b"second")
    assert caught.value.errno == errno.EIO
    monkeypatch.undo()
    with pytest.raises(StorageError, match="refuses writes"):
        wal.append(b"third")
    assert wal.read(first) == b"first"
    wal.close()
    assert read_all(tmp_path) == [b"first", b"second"]


# ------------------------------------------------------------ threads, states


def test_concurrent_appends_keep_every_record_and_each_threads_order(tmp_path: Path) -> None:
    threads, per_thread = 8, 50
    results: dict[int, list[RecordHandle]] = {}

    with WriteAheadLog(tmp_path, fsync="never", segment_max_bytes=4096) as wal:

        def writer(t: int) -> None:
            results[t] = [wal.append(f"{t}:{i}".encode(), record_type=t) for i in range(per_thread)]

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert wal.records_written == threads * per_thread
        for t, handles in results.items():
            assert [wal.read(h) for h in handles] == [f"{t}:{i}".encode() for i in range(per_thread)]
            assert handles == sorted(handles)
        everything = list(wal.records())
    assert len({h for h, _, _ in everything}) == threads * per_thread
    for t in range(threads):
        assert [p for _, rt, p in everything if rt == t] == [f"{t}:{i}".encode() for i in range(per_thread)]


def test_close_is_idempotent_and_later_calls_raise(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    handle = wal.append(b"x")
    wal.close()
    wal.close()
    for call in (lambda: wal.append(b"y"), wal.sync, lambda: wal.read(handle), wal.records,
                 lambda: wal.delete_segments_before(handle)):
        with pytest.raises(StateError, match="closed"):
            call()


def test_a_log_can_be_open_only_once(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path):
        with pytest.raises(StorageError, match="already open"):
            WriteAheadLog(tmp_path)
    with WriteAheadLog(tmp_path) as wal:  # the lock is released on close
        assert wal.segments


# ------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "options, mentions",
    [
        ({"segment_max_bytes": 10}, "segment_max_bytes"),
        ({"segment_max_bytes": 1.5e6}, "segment_max_bytes"),
        ({"max_record_bytes": 0}, "max_record_bytes"),
        ({"max_record_bytes": 1 << 32}, "max_record_bytes"),
        ({"segment_max_age_s": 0}, "segment_max_age_s"),
        ({"fsync_interval_s": -1}, "fsync_interval_s"),
        ({"fsync": "sometimes"}, "fsync"),
        ({"name": "../x"}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_options_raise_config_error_naming_them(tmp_path: Path, options: dict, mentions: str) -> None:
    with pytest.raises(ConfigError, match=mentions):
        WriteAheadLog(tmp_path, **options)


def test_directory_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    with pytest.raises(ConfigError, match=f"{target} exists but is not a directory"):
        WriteAheadLog(target)
    with pytest.raises(ConfigError, match="cannot create WAL directory"):
        WriteAheadLog(target / "wal")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_read_only_directory_is_a_config_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            WriteAheadLog(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_missing_directory_is_created(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path / "a" / "b") as wal:
        wal.append(b"x")
    assert read_all(tmp_path / "a" / "b") == [b"x"]


def test_bad_appends_raise_config_error_and_write_nothing(tmp_path: Path) -> None:
    with WriteAheadLog(tmp_path, max_record_bytes=100) as wal:
        with pytest.raises(ConfigError, match="exceeds max_record_bytes=100"):
            wal.append_many([b"ok", b"x" * 101])
        with pytest.raises(ConfigError, match="record type"):
            wal.append(b"x", record_type=1 << 16)
        with pytest.raises(ConfigError, match="bytes"):
            wal.append("text")  # type: ignore[arg-type]
        assert wal.records_written == 0
        assert list(wal.records()) == []


# ------------------------------------------------------- crash at any point


def _cut_stream(directory: Path, cut: int) -> None:
    """Keep the first `cut` bytes of the segments laid end to end, as a crash
    at that point would: later segments do not exist yet, the one the cut falls
    in is truncated."""
    start = 0
    last = 1
    kept = 0
    closed: dict[int, int] = {}
    for path in sorted(directory.glob("wal-*.wal")):
        size = path.stat().st_size
        if start > cut:
            path.unlink()
            continue
        kept = min(size, cut - start)
        if kept < size:
            truncate(path, kept)
        last = int(path.stem.split("-")[1])
        closed[last] = size
        start += size
    # The bounds file then named the last segment whose header was durable
    # (it names a new segment only after that) and the final size of every
    # segment before it; none yet if the first segment's header was not.
    closed.pop(last)
    if kept < FILE_HEADER_SIZE:
        if last == 1:
            (directory / "wal.bounds").unlink()
            return
        last -= 1
        closed.pop(last)
    (directory / "wal.bounds").write_bytes(wal_module._bounds_bytes(1, last, closed))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches=st.lists(
        st.lists(st.binary(max_size=120), min_size=1, max_size=6), min_size=1, max_size=20
    ),
    segment_max_bytes=st.integers(min_value=FILE_HEADER_SIZE + RECORD_HEADER_SIZE + 1, max_value=1500),
    data=st.data(),
)
def test_a_crash_after_any_prefix_of_writes_keeps_exactly_the_whole_records(
    batches: list[list[bytes]], segment_max_bytes: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        written: list[tuple[RecordHandle, int, bytes]] = []
        with WriteAheadLog(directory, fsync="never", segment_max_bytes=segment_max_bytes) as wal:
            for i, batch in enumerate(batches):
                handles = wal.append_many(batch, record_type=i % 3)
                written += [(h, i % 3, p) for h, p in zip(handles, batch)]

        starts, position = {}, 0
        for path in sorted(directory.glob("wal-*.wal")):
            starts[int(path.stem.split("-")[1])] = position
            position += path.stat().st_size
        cut = data.draw(st.integers(min_value=0, max_value=position), label="cut")
        _cut_stream(directory, cut)

        survivors = [
            (h, t, p) for h, t, p in written
            if starts[h.segment] + h.offset + RECORD_HEADER_SIZE + h.length <= cut
        ]
        with WriteAheadLog(directory, fsync="never", segment_max_bytes=segment_max_bytes) as wal:
            assert list(wal.records()) == survivors
            assert [wal.read(h) for h, _, _ in survivors] == [p for _, _, p in survivors]
            new = wal.append(b"after restart", record_type=7)
        with WriteAheadLog(directory, fsync="never") as wal:
            assert list(wal.records()) == survivors + [(new, 7, b"after restart")]
