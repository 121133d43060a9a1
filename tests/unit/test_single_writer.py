"""One writer per checkpoint directory: a lock taken at start (with an epoch
recorded in the metadata), refused while its holder lives, taken over when its
holder died on this host, released on stop; intents are written create-only."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest import CheckpointError, ManualClock, StreamingContext
from ingest.checkpoint import CheckpointLog
from offsets import QueueItems
from offsets.records import RecordCodec, unframe


def new_context(directory: Path, seen: list[Any] | None = None) -> StreamingContext:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory))
    ssc.queue_stream([["a"], ["b"], ["c"]], name="words").foreach_batch(
        lambda b: (seen if seen is not None else []).append(b.collect()))
    return ssc


def metadata(directory: Path) -> dict[str, Any]:
    return json.loads(unframe((directory / "metadata").read_bytes(), "metadata")[1])


def write_lock(directory: Path, host: str, pid: int, epoch: int) -> None:
    (directory / "lock").write_bytes(RecordCodec().encode_meta(
        {"host": host, "pid": pid, "epoch": epoch, "token": "t0", "started_at": 0.0}, kind="lock"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_second_context_on_a_checkpoint_in_use_refuses_to_start_naming_the_holder(tmp_path):
    first = new_context(tmp_path)
    first.start()
    try:
        second = new_context(tmp_path)
        with pytest.raises(CheckpointError, match=rf"is in use by process {os.getpid()} on host "
                                                  rf"'{socket.gethostname()}' \(epoch 1"):
            second.start()
        first.step(1)  # the first goes on undisturbed
    finally:
        first.stop(graceful=False)
    assert not (tmp_path / "lock").exists()

    third = new_context(tmp_path)
    third.start()  # released on stop
    third.stop(graceful=False)
    assert metadata(tmp_path)["epoch"] == 2


def test_each_start_records_a_higher_epoch_in_the_metadata(tmp_path):
    epochs = []
    for _ in range(3):
        ssc = new_context(tmp_path)
        ssc.start()
        ssc.step(1)
        ssc.stop(graceful=False)
        epochs.append(metadata(tmp_path)["epoch"])
    assert epochs == [1, 2, 3]


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    write_lock(tmp_path, socket.gethostname(), dead_pid(), epoch=7)
    seen: list[Any] = []
    ssc = new_context(tmp_path, seen)
    with caplog.at_level(logging.WARNING):
        ssc.start()
    try:
        ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert seen == [["a"]]
    assert "taking over the lock of process" in caplog.text and "no longer exists" in caplog.text
    assert metadata(tmp_path)["epoch"] == 8


def test_a_lock_held_on_another_host_is_refused_naming_that_host(tmp_path):
    write_lock(tmp_path, "elsewhere.example", 12345, epoch=3)
    with pytest.raises(CheckpointError, match="process 12345 on host 'elsewhere.example'.*delete the lock file"):
        new_context(tmp_path).start()
    assert (tmp_path / "lock").exists()  # not ours to delete


def test_a_start_that_fails_after_taking_the_lock_releases_it(tmp_path):
    ssc = new_context(tmp_path)
    ssc.start()
    ssc.step(1)
    ssc.stop(graceful=False)
    changed = StreamingContext(batch_interval=2.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    changed.checkpoint(str(tmp_path))
    changed.queue_stream([], name="words").foreach_batch(lambda b: None)
    with pytest.raises(CheckpointError, match="batch interval changed"):
        changed.start()
    assert not (tmp_path / "lock").exists()


def test_an_existing_intent_is_an_error_and_not_overwritten(tmp_path):
    log = CheckpointLog(str(tmp_path))
    log.write_intent(1000, {"words": QueueItems(("a",), 1)})
    before = (tmp_path / "offsets" / f"{1000:020d}").read_bytes()
    with pytest.raises(CheckpointError, match=r"offsets/00000000000000001000 already exists"):
        log.write_intent(1000, {"words": QueueItems(("b",), 2)})
    assert (tmp_path / "offsets" / f"{1000:020d}").read_bytes() == before
