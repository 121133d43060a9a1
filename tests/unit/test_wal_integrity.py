"""Specification of what the write-ahead log (`receivers.wal`) does with damage
it did not cause: a damaged bounds file, a shortened closed segment, a torn
record full of record-like bytes, foreign files in its place; of the
permissions of what it creates; and of `verify`, the read-only check that
`ingest checkpoint fsck` runs on a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import time
from pathlib import Path

import pytest
from crc32c import crc32c

import receivers.wal as wal_module
from ingest.errors import CorruptRecordError, StorageError
from receivers.wal import FILE_HEADER_SIZE, RECORD_HEADER_SIZE, RecordHandle, WriteAheadLog, verify


def payload(i: int, size: int = 60) -> bytes:
    return (f"record-{i}-".encode() * size)[:size]


def three_segments(directory: Path) -> list[RecordHandle]:
    """A closed log of three segments, two records in each but the last."""
    with WriteAheadLog(directory, segment_max_bytes=200) as wal:
        return [wal.append(payload(i)) for i in range(6)]


def segment_path(directory: Path, seq: int, name: str = "wal") -> Path:
    return directory / f"{name}-{seq:020d}.wal"


def snapshot(directory: Path) -> dict[str, str]:
    """Name -> digest of every file: what 'nothing changed' means."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def read_all(directory: Path) -> list[bytes]:
    with WriteAheadLog(directory) as wal:
        return [p for _, _, p in wal.records()]


# ----------------------------------------------------------------- the bounds file


def flip_first_bound(directory: Path) -> None:
    """Flip one bit of the "first" segment number in the bounds file: 1 -> 3."""
    path = directory / "wal.bounds"
    data = bytearray(path.read_bytes())
    at = data.index(b'"first":') + len(b'"first":')
    while data[at : at + 1] == b" ":
        at += 1
    assert data[at : at + 1] == b"1"
    data[at] ^= 0b10
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_the_bounds_file_is_an_error_naming_it_and_deletes_no_segment(tmp_path: Path) -> None:
    three_segments(tmp_path)
    segments = sorted(tmp_path.glob("wal-*.wal"))
    flip_first_bound(tmp_path)
    with pytest.raises(CorruptRecordError) as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.path == str(tmp_path / "wal.bounds")
    assert str(tmp_path / "wal.bounds") in str(caught.value)
    assert sorted(tmp_path.glob("wal-*.wal")) == segments, "no segment was deleted"


def test_the_bounds_file_carries_a_checksum_of_its_fields(tmp_path: Path) -> None:
    three_segments(tmp_path)
    bounds = json.loads((tmp_path / "wal.bounds").read_bytes())
    crc = bounds.pop("crc32c")
    assert crc == crc32c(json.dumps(bounds, sort_keys=True, separators=(",", ":")).encode())
    assert (bounds["format"], bounds["first"], bounds["last"]) == (2, 1, 3)
    assert bounds["closed"] == {"1": segment_path(tmp_path, 1).stat().st_size,
                                "2": segment_path(tmp_path, 2).stat().st_size}


def test_segments_left_by_a_clean_up_cut_short_are_still_removed_on_open(tmp_path: Path) -> None:
    handles = three_segments(tmp_path)
    kept = {p.name: p.read_bytes() for p in tmp_path.glob("wal-*.wal")}
    with WriteAheadLog(tmp_path, segment_max_bytes=200) as wal:
        wal.delete_segments_before(handles[-1])  # segment 3 and on
    for name, data in kept.items():  # the unlinks "never happened"
        (tmp_path / name).write_bytes(data)
    assert read_all(tmp_path) == [payload(4), payload(5)]
    assert not segment_path(tmp_path, 1).exists()


def test_a_bounds_file_without_checksum_is_read_but_never_deletes(tmp_path: Path) -> None:
    three_segments(tmp_path)
    (tmp_path / "wal.bounds").write_text('{"first": 1, "last": 3}')  # as the previous release wrote it
    assert read_all(tmp_path) == [payload(i) for i in range(6)]
    # A damaged one that claims the log starts later is refused, not obeyed.
    (tmp_path / "wal.bounds").write_text('{"first": 3, "last": 4}')
    segments = sorted(tmp_path.glob("wal-*.wal"))
    with pytest.raises(CorruptRecordError, match="no checksum") as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.path == str(tmp_path / "wal.bounds")
    assert sorted(tmp_path.glob("wal-*.wal")) == segments


def test_a_bounds_file_replaced_by_a_directory_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    three_segments(tmp_path)
    (tmp_path / "wal.bounds").unlink()
    (tmp_path / "wal.bounds").mkdir()
    with pytest.raises(StorageError) as caught:
        WriteAheadLog(tmp_path)
    assert str(tmp_path / "wal.bounds") in str(caught.value)


# ----------------------------------------------------------------- closed segments


def test_a_closed_segment_shortened_at_a_record_boundary_is_reported_naming_it(tmp_path: Path) -> None:
    handles = three_segments(tmp_path)
    first = segment_path(tmp_path, 1)
    last_of_first = [h for h in handles if h.segment == 1][-1]
    size = first.stat().st_size
    with open(first, "r+b") as f:
        f.truncate(last_of_first.offset)  # every record left in it is intact
    with pytest.raises(CorruptRecordError) as caught:
        WriteAheadLog(tmp_path)
    assert caught.value.path == str(first)
    assert caught.value.offset == last_of_first.offset
    assert f"was {size} when it was closed" in str(caught.value)


def test_a_segment_replaced_by_a_directory_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    three_segments(tmp_path)
    middle = segment_path(tmp_path, 2)
    middle.unlink()
    middle.mkdir()
    with pytest.raises(StorageError) as caught:
        WriteAheadLog(tmp_path)
    assert str(middle) in str(caught.value)


def test_an_unfinished_new_segment_replaced_by_a_directory_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    three_segments(tmp_path)
    temp = tmp_path / f"{segment_path(tmp_path, 4).name}.tmp"
    temp.mkdir()
    with pytest.raises(StorageError) as caught:
        WriteAheadLog(tmp_path)
    assert str(temp) in str(caught.value)


# ----------------------------------------------------------------- the recovery scan


def fake_headers(size: int, reach: int, step: int = 64) -> bytes:
    """`size` bytes holding a record header every `step` bytes up to `reach`,
    each claiming to run up to `reach` (with wrong checksums): what a payload
    that contains WAL data looks like to a search for the next record."""
    out = bytearray(size)
    for at in range(0, reach - RECORD_HEADER_SIZE, step):
        struct.pack_into(">4sBBHII", out, at, b"WREC", 1, 0, 1, reach - at - RECORD_HEADER_SIZE, 0)
    return bytes(out)


def test_a_torn_record_full_of_record_headers_is_recovered_in_linear_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 2 << 20
    big = fake_headers(size, reach=size // 2)
    with WriteAheadLog(tmp_path) as wal:
        wal.append(b"before")
        torn = wal.append(big)
    path = segment_path(tmp_path, torn.segment)
    cut = torn.offset + RECORD_HEADER_SIZE + size // 2  # the crash: half the payload on disk
    with open(path, "r+b") as f:
        f.truncate(cut)

    checksummed = 0
    real_crc = wal_module.crc32c

    def counting_crc(data: bytes, value: int = 0) -> int:
        nonlocal checksummed
        checksummed += len(data)
        if checksummed > 40 * cut:
            raise AssertionError(f"checksummed {checksummed} bytes of a {cut}-byte segment: not linear")
        return real_crc(data, value)

    monkeypatch.setattr(wal_module, "crc32c", counting_crc)
    started = time.monotonic()
    assert read_all(tmp_path) == [b"before"]
    assert time.monotonic() - started < 2.0
    # At most 32 one-bit variants of the torn length plus the search budget.
    assert checksummed <= 35 * cut
    assert path.stat().st_size == torn.offset


# ----------------------------------------------------------------- permissions


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_directories_are_created_0700_and_files_0600(tmp_path: Path, umask_022: None) -> None:
    directory = tmp_path / "ckpt" / "receivers" / "stream"
    with WriteAheadLog(directory, segment_max_bytes=200) as wal:
        for i in range(4):
            wal.append(payload(i))
    for d in (tmp_path / "ckpt", tmp_path / "ckpt" / "receivers", directory):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = sorted(directory.iterdir())
    assert {p.suffix for p in files} == {".wal", ".bounds", ".lock"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_every_new_directory_is_synced_in_its_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real = wal_module.fsync_dir

    def recording(path: str) -> None:
        synced.append(path)
        real(path)

    monkeypatch.setattr(wal_module, "fsync_dir", recording)
    monkeypatch.setattr("ingest.storage.fsync_dir", recording)  # new directories: ingest.storage.make_dirs
    WriteAheadLog(tmp_path / "a" / "b" / "c").close()
    for parent in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"):
        assert str(parent) in synced, parent


# ----------------------------------------------------------------- verify()


def test_verify_finds_nothing_in_a_healthy_log(tmp_path: Path) -> None:
    three_segments(tmp_path)
    with WriteAheadLog(tmp_path, name="other") as other:
        other.append(b"x")
    assert verify(tmp_path) == []


def test_verify_does_not_count_a_torn_tail_and_does_not_truncate_it(tmp_path: Path) -> None:
    handles = three_segments(tmp_path)
    last = segment_path(tmp_path, handles[-1].segment)
    with open(last, "r+b") as f:
        f.truncate(handles[-1].offset + 5)
    before = snapshot(tmp_path)
    assert verify(tmp_path) == []
    assert snapshot(tmp_path) == before


def test_verify_reports_a_damaged_record_naming_file_and_offset_and_changes_nothing(tmp_path: Path) -> None:
    handles = three_segments(tmp_path)
    path = segment_path(tmp_path, 2)
    data = bytearray(path.read_bytes())
    data[handles[2].offset + RECORD_HEADER_SIZE + 3] ^= 1
    path.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    (problem,) = verify(tmp_path)
    assert str(path) in problem and f"offset {handles[2].offset}" in problem
    assert snapshot(tmp_path) == before


def test_verify_reports_a_corrupt_complete_final_record(tmp_path: Path) -> None:
    handles = three_segments(tmp_path)
    path = segment_path(tmp_path, handles[-1].segment)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    (problem,) = verify(tmp_path)
    assert str(path) in problem and f"offset {handles[-1].offset}" in problem


def test_verify_reports_a_missing_segment_a_shortened_one_and_a_damaged_bounds_file(tmp_path: Path) -> None:
    for name in ("gap", "short", "bounds"):
        three_segments(tmp_path / name)
    segment_path(tmp_path / "gap", 2).unlink()
    with open(segment_path(tmp_path / "short", 1), "r+b") as f:
        f.truncate(FILE_HEADER_SIZE)
    flip_first_bound(tmp_path / "bounds")
    before = snapshot(tmp_path / "bounds")

    (gap,) = verify(tmp_path / "gap")
    assert str(segment_path(tmp_path / "gap", 2)) in gap and "missing" in gap
    (short,) = verify(tmp_path / "short")
    assert str(segment_path(tmp_path / "short", 1)) in short and f"offset {FILE_HEADER_SIZE}" in short
    problems = verify(tmp_path / "bounds")
    assert problems and str(tmp_path / "bounds" / "wal.bounds") in problems[0]
    assert snapshot(tmp_path / "bounds") == before


def test_verify_agrees_with_open_on_every_bit_flip_of_a_small_log(tmp_path: Path) -> None:
    template = tmp_path / "template"
    three_segments(template)
    files = sorted(p.name for p in template.iterdir() if p.suffix in (".wal", ".bounds"))
    cases = 0
    for name in files:
        size = (template / name).stat().st_size
        for position in range(0, size, 5):
            case = tmp_path / f"{name}-{position}"
            shutil.copytree(template, case)
            data = bytearray((case / name).read_bytes())
            data[position] ^= 1 << (position % 8)
            (case / name).write_bytes(bytes(data))
            problems = verify(case)
            try:
                WriteAheadLog(case).close()
                opened = True
            except StorageError:
                opened = False
            assert opened == (problems == []), (name, position, problems)
            if not opened:
                assert any(str(case) in p for p in problems)
            shutil.rmtree(case)
            cases += 1
    assert cases > 100


def test_verify_of_a_missing_directory_is_one_problem_naming_it(tmp_path: Path) -> None:
    (problem,) = verify(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in problem
