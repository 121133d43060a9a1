"""The read side of `LocalStorage` that file streams use: `list_entries` and
`open_read` (the HDFS and S3 backends implement the same contract)."""

from __future__ import annotations

import os

import pytest

from ingest.errors import ConfigError, StorageError
from ingest.storage import FileEntry, LocalStorage, storage_for


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"bbbb")
    (tmp_path / "a.txt").write_bytes(b"0123456789")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "c.txt").write_bytes(b"c")
    (tmp_path / "sub" / "deeper" / "d.txt").write_bytes(b"")
    os.utime(tmp_path / "a.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    return tmp_path


def test_list_entries_gives_files_with_size_and_mtime_sorted_by_path(tree):
    got = LocalStorage(str(tree), create=False).list_entries("")
    assert [e.path for e in got] == ["a.txt", "b.txt"]
    assert got[0] == FileEntry("a.txt", 10, 1_700_000_000_123)


def test_recursive_listing_gives_slash_separated_paths_relative_to_the_root(tree):
    storage = LocalStorage(str(tree), create=False)
    assert [e.path for e in storage.list_entries("", recursive=True)] == [
        "a.txt", "b.txt", "sub/c.txt", "sub/deeper/d.txt"]
    assert [e.path for e in storage.list_entries("sub")] == ["sub/c.txt"]


def test_listing_a_missing_directory_is_an_error_naming_it(tmp_path):
    storage = LocalStorage(str(tmp_path / "nope"), create=False)
    assert not (tmp_path / "nope").exists(), "a storage for reading creates nothing"
    with pytest.raises(StorageError, match="nope does not exist"):
        storage.list_entries("")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="is not a directory"):
        LocalStorage(str(tmp_path), create=False).list_entries("file")


def test_open_read_reads_a_byte_range(tree):
    storage = storage_for(str(tree), create=False)
    with storage.open_read("a.txt") as f:
        assert f.read() == b"0123456789"
    with storage.open_read("a.txt", 3) as f:
        assert f.read() == b"3456789"
    with storage.open_read("a.txt", 3, 6) as f:
        assert f.read(2) == b"34"
        assert f.read() == b"5"
    with storage.open_read("a.txt", 8, 100) as f:
        assert f.read() == b"89"


def test_open_read_of_a_missing_file_raises_file_not_found(tree):
    with pytest.raises(FileNotFoundError):
        LocalStorage(str(tree), create=False).open_read("gone.txt")


def test_an_unknown_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="no storage backend for nosuch://"):
        storage_for("nosuch://x/y", create=False)
