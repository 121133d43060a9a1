"""The write-ahead log of one object per record (used on HDFS and S3), on
any Storage: records come back in order with their types, a damaged object is
an error naming it, clean-up deletes the records before a handle, and the
sequence continues after a reopen without overwriting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.errors import ConfigError, CorruptRecordError, StorageError
from ingest.storage import LocalStorage, Storage
from receivers.block_log import BlockLog
from receivers.object_log import ObjectLog


class NamedStorage(Storage):
    """Local disk behind the bare interface, as a remote storage is (BlockLog
    picks the object log for any storage that is not LocalStorage)."""

    def __init__(self, root: str) -> None:
        self._inner = LocalStorage(root)
        self.url = "remote://test"
        for name in ("read", "write_atomic", "write_new", "exists", "list", "delete", "size", "describe"):
            setattr(self, name, getattr(self._inner, name))


def test_records_come_back_in_order_with_their_types(tmp_path: Path) -> None:
    log = ObjectLog(LocalStorage(str(tmp_path)), "receivers/s")
    handles = [log.append(b"one", 1), log.append(b"two", 2), log.append(b"", 3)]
    assert [log.read(h) for h in handles] == [b"one", b"two", b""]
    assert [(h, t, p) for h, t, p in log.records()] == list(zip(handles, [1, 2, 3], [b"one", b"two", b""]))
    assert sorted(p.name for p in (tmp_path / "receivers" / "s").iterdir()) == [
        f"blocks-{i:020d}.rec" for i in (1, 2, 3)]


def test_a_reopened_log_continues_the_sequence_and_never_overwrites(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path))
    ObjectLog(storage, "receivers/s").append(b"first")
    again = ObjectLog(storage, "receivers/s")
    handle = again.append(b"second")
    assert handle.segment == 2
    assert [p for _, _, p in again.records()] == [b"first", b"second"]


def test_a_damaged_object_is_an_error_naming_it(tmp_path: Path) -> None:
    log = ObjectLog(LocalStorage(str(tmp_path)), "receivers/s")
    handle = log.append(b"payload")
    path = tmp_path / "receivers" / "s" / f"blocks-{handle.segment:020d}.rec"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordError, match=rf"{path}.*CRC32C mismatch"):
        log.read(handle)
    with pytest.raises(CorruptRecordError, match=str(path)):
        list(log.records())


def test_clean_up_deletes_the_records_before_a_handle(tmp_path: Path) -> None:
    log = ObjectLog(LocalStorage(str(tmp_path)), "receivers/s")
    handles = [log.append(bytes([i])) for i in range(4)]
    deleted = log.delete_segments_before(handles[2])
    assert len(deleted) == 2 and [p for _, _, p in log.records()] == [b"\x02", b"\x03"]
    with pytest.raises(StorageError, match="missing"):
        log.read(handles[0])


def test_block_log_uses_the_object_log_on_non_local_storage_and_refuses_local_tuning(tmp_path: Path) -> None:
    block_log = BlockLog(NamedStorage(str(tmp_path)), "lines")
    try:
        assert isinstance(block_log.wal, ObjectLog)
    finally:
        block_log.close()
    with pytest.raises(ConfigError, match="apply to a log on local disk"):
        BlockLog(NamedStorage(str(tmp_path)), "lines", segment_bytes=1 << 20)
