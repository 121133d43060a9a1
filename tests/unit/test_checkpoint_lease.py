"""The checkpoint lock as a lease (on local disk, where these rules are the
same as on HDFS and S3 apart from the pid check): a lease of another host is
refused until it expires, then taken over with a higher epoch; the holder
renews it while it runs; a holder whose lock was taken over writes nothing more."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from ingest import CheckpointError
from ingest.checkpoint import CheckpointLog
from ingest.checkpoint_lock import CheckpointLock, LockOwner
from ingest.storage import LocalStorage
from offsets import QueueItems
from offsets.records import RecordCodec


def write_lease(directory: Path, expires_at: float | None, epoch: int = 4, token: str = "other") -> None:
    owner = LockOwner("elsewhere.example", 4242, epoch, token, time.time() - 60, expires_at)
    (directory / "lock").write_bytes(RecordCodec().encode_meta(owner.to_json(), kind="lock"))


def test_a_running_lease_of_another_host_is_refused_naming_its_end(tmp_path: Path) -> None:
    write_lease(tmp_path, time.time() + 30)
    with pytest.raises(CheckpointError, match=r"process 4242 on host 'elsewhere.example' \(epoch 4.*lease until"):
        CheckpointLock(LocalStorage(str(tmp_path))).acquire(0)


def test_an_expired_lease_is_taken_over_with_a_higher_epoch_and_a_warning(tmp_path: Path, caplog) -> None:
    write_lease(tmp_path, time.time() - 1)
    lock = CheckpointLock(LocalStorage(str(tmp_path)), lease_seconds=30)
    with caplog.at_level(logging.WARNING):
        owner = lock.acquire(0)
    try:
        assert owner.epoch == 5 and lock.read() == owner
        assert "whose lease expired" in caplog.text
    finally:
        lock.release()
    assert lock.read() is None


def test_a_lock_without_a_lease_from_an_older_release_never_expires(tmp_path: Path) -> None:
    write_lease(tmp_path, None)
    with pytest.raises(CheckpointError, match="delete the lock file"):
        CheckpointLock(LocalStorage(str(tmp_path))).acquire(0)


def test_the_holder_renews_its_lease_while_it_runs(tmp_path: Path) -> None:
    lock = CheckpointLock(LocalStorage(str(tmp_path)), lease_seconds=0.6)
    first = lock.acquire(0)
    try:
        time.sleep(1.0)
        renewed = lock.read()
        assert renewed is not None and renewed.token == first.token
        assert renewed.expires_at is not None and first.expires_at is not None
        assert renewed.expires_at > first.expires_at and renewed.expires_at > time.time()
        assert lock.lost is None
    finally:
        lock.release()


def test_a_holder_whose_lock_was_taken_over_writes_no_intent_or_commit(tmp_path: Path) -> None:
    log = CheckpointLog(str(tmp_path), lease_seconds=0.6)
    log.acquire()
    try:
        write_lease(tmp_path, time.time() + 30, epoch=9, token="the-new-holder")  # taken over meanwhile
        deadline = time.monotonic() + 5
        while log.lock.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(CheckpointError, match="no longer holds checkpoint.*epoch 9"):
            log.write_intent(1000, {"words": QueueItems(("a",), 1)})
        with pytest.raises(CheckpointError, match="no longer holds checkpoint"):
            log.write_commit(1000, {})
        assert not (tmp_path / "offsets").exists() or not list((tmp_path / "offsets").iterdir())
    finally:
        log.close()
    assert (tmp_path / "lock").exists()  # the new holder's lock is left alone
