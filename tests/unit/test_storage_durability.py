"""Local checkpoint storage: private modes, and every new directory made
durable in its parent; foreign errors of a damaged layout become project errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import ingest.storage as storage_module
from ingest import ManualClock, StreamingContext
from ingest.errors import StorageError
from ingest.storage import LocalStorage


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_are_created_0600_and_directories_0700(tmp_path):
    storage = LocalStorage(str(tmp_path / "ckpt"))
    storage.write_atomic("state/op/1.full", b"x")
    storage.write_new("offsets/1", b"y")
    assert mode(tmp_path / "ckpt") == 0o700
    assert mode(tmp_path / "ckpt" / "state") == mode(tmp_path / "ckpt" / "state" / "op") == 0o700
    assert mode(tmp_path / "ckpt" / "state" / "op" / "1.full") == mode(tmp_path / "ckpt" / "offsets" / "1") == 0o600


def test_a_whole_checkpoint_is_private(tmp_path):
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(tmp_path / "ckpt"))
    ssc.queue_stream([[("a", 1)]], name="words").reduce_by_key(lambda a, b: a + b) \
        .update_state_by_key(lambda vs, old: vs).foreach_batch(lambda b: None)
    ssc.start()
    ssc.step(2)
    ssc.stop(graceful=False)
    for root, dirs, files in os.walk(tmp_path / "ckpt"):
        assert mode(Path(root)) == 0o700, root
        for f in files:
            assert mode(Path(root) / f) == 0o600, f


def test_every_directory_created_is_fsynced_in_its_parent(tmp_path, monkeypatch):
    synced: list[str] = []
    real = storage_module.fsync_dir
    monkeypatch.setattr(storage_module, "fsync_dir", lambda p: (synced.append(p), real(p)))
    storage = LocalStorage(str(tmp_path / "a"))
    storage.write_atomic("b/c/file", b"x")
    # each new directory's parent is synced after the directory is made, before the file goes in
    assert synced[:3] == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]
    assert synced[3] == str(tmp_path / "a" / "b" / "c")  # then the directory holding the new file


def test_a_file_where_a_directory_should_be_is_a_storage_error_not_an_existing_name(tmp_path):
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "offsets").write_bytes(b"not a directory")
    with pytest.raises(StorageError, match="offsets"):
        storage.write_new("offsets/1", b"x")
    with pytest.raises(StorageError, match="cannot list .*offsets"):
        storage.list("offsets")


def test_deleting_a_directory_in_place_of_a_file_is_a_storage_error(tmp_path):
    storage = LocalStorage(str(tmp_path))
    (tmp_path / "commits" / "1").mkdir(parents=True)
    with pytest.raises(StorageError, match="cannot delete .*commits/1"):
        storage.delete("commits/1")
