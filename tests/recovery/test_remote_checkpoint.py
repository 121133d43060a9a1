"""Checkpoints on HDFS and S3, end to end: a job stopped and restarted from its
remote checkpoint gives the output of a run that never stopped; the
single-writer lease refuses a second driver and is taken over once a killed
holder's lease expired; with the lease bypassed, two drivers re-running one
batch cannot both commit it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest import CheckpointError, ManualClock, StreamingContext
from ingest.checkpoint_lock import CheckpointLock
from ingest.storage import storage_for

JOB = Path(__file__).parent / "jobs" / "remote_checkpoint_job.py"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(params=["hdfs", "s3"])
def remote(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param == "hdfs":
        return request.getfixturevalue("hdfs_dir") + "/checkpoint", {"user": "tester"}
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/checkpoints/app", dict(request.getfixturevalue("s3_storage_options"))


def run_job(url: str, options: dict[str, Any], out: Path, steps: int, *, hold: bool = False,
            lease: float = 30.0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOB_STORAGE_OPTIONS": json.dumps(options)}
    cmd = [sys.executable, str(JOB), url, str(out), "--steps", str(steps), "--lease", str(lease)]
    return subprocess.Popen(cmd + (["--hold"] if hold else []), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outputs(out: Path) -> dict[str, list[Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


def finish(proc: subprocess.Popen[str]) -> None:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert "done" in stdout


def test_a_job_restarted_from_its_remote_checkpoint_gives_the_output_of_an_uninterrupted_run(
        remote: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, options = remote
    finish(run_job(str(tmp_path / "reference-checkpoint"), {}, tmp_path / "reference", 8))
    finish(run_job(url, options, tmp_path / "out", 3))
    finish(run_job(url, options, tmp_path / "out", 5))
    assert outputs(tmp_path / "out") == outputs(tmp_path / "reference")
    assert len(outputs(tmp_path / "out")) == 8
    commits = storage_for(url, options).list("commits")
    assert commits and all(name.isdigit() for name in commits)


def context(url: str, options: dict[str, Any], seen: list[Any], lease: float = 30.0,
            fail_at: int | None = None, meet: threading.Barrier | None = None) -> StreamingContext:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(url, storage_options=options, lease_seconds=lease)

    def sink(batch: Any) -> None:
        if batch.time == fail_at:
            raise RuntimeError("the sink is down")
        if meet is not None:
            meet.wait(30)  # both drivers are inside the batch before either commits it
        seen.append((batch.time, batch.collect()))

    ssc.queue_stream([["a"], ["b"], ["c"], ["d"]], name="words").foreach_batch(sink)
    return ssc


def test_a_second_driver_refuses_to_start_while_the_first_holds_the_lease(
        remote: tuple[str, dict[str, Any]]) -> None:
    url, options = remote
    seen: list[Any] = []
    first = context(url, options, seen)
    first.start()
    try:
        with pytest.raises(CheckpointError, match=rf"checkpoint {url} is in use by process {os.getpid()}.*lease"):
            context(url, options, []).start()
        first.step(2)
    finally:
        first.stop(graceful=False)
    assert [t for t, _ in seen] == [1000, 2000]
    assert not storage_for(url, options).exists("lock")


def test_a_driver_killed_with_sigkill_is_taken_over_once_its_lease_expired(
        remote: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    url, options = remote
    lease = 3.0
    proc = run_job(url, options, tmp_path / "out", 2, hold=True, lease=lease)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = time.monotonic()
    holder = CheckpointLock(storage_for(url, options)).read()
    assert holder is not None and holder.pid == proc.pid and holder.expires_at is not None

    refused = 0
    while True:  # a new driver of the same job, started again until it may take over
        second = run_job(url, options, tmp_path / "out", 6, lease=lease)
        stdout, stderr = second.communicate(timeout=120)
        if second.returncode == 0:
            break
        assert f"is in use by process {proc.pid}" in stderr, stderr[-3000:]
        refused += 1
        assert time.monotonic() - killed_at < lease + 15, "the expired lease was never taken over"
    took_over_after = time.monotonic() - killed_at
    assert "taking over the lock of process" in stderr and "lease expired" in stderr
    assert refused >= 1 or took_over_after >= lease  # the lease outlived its holder
    finish(run_job(str(tmp_path / "reference-checkpoint"), {}, tmp_path / "reference", 8))
    assert outputs(tmp_path / "out") == outputs(tmp_path / "reference")  # nothing lost, nothing repeated
    assert CheckpointLock(storage_for(url, options)).read() is None  # the second driver released it


def test_with_the_lease_bypassed_two_drivers_rerunning_one_batch_cannot_both_commit_it(
        remote: tuple[str, dict[str, Any]]) -> None:
    url, options = remote
    seen: list[Any] = []
    failing = context(url, options, seen, fail_at=2000)
    failing.start()
    with pytest.raises(Exception, match="the sink is down"):
        failing.step(2)  # batch 2000 has an intent and no commit
    failing.stop(graceful=False)
    assert [t for t, _ in seen] == [1000]

    # Two drivers recover the same pending batch; the second never takes the lease.
    outputs_a: list[Any] = []
    outputs_b: list[Any] = []
    meet = threading.Barrier(2)
    a = context(url, options, outputs_a, meet=meet)
    b = context(url, options, outputs_b, meet=meet)
    b._log.acquire = lambda: None  # type: ignore[attr-defined]  # the lease bypassed
    a.start()
    b.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and a.error is None and b.error is None:
            time.sleep(0.05)
        time.sleep(1.0)  # the winner's commit is written; a second failure would show by now
        errors = {"a": a.error, "b": b.error}
    finally:
        a.stop(graceful=False)
        b.stop(graceful=False)
    assert storage_for(url, options).exists("commits/00000000000000002000")
    failed = [name for name, e in errors.items() if e is not None]
    assert len(failed) == 1, f"expected exactly one driver to stop, got {errors}"
    message = str(errors[failed[0]])
    assert "commits/00000000000000002000 already exists" in message and "committed by another writer" in message
    # Both ran the batch (the sink must be idempotent); exactly one commit was written, never overwritten.
    assert [t for t, _ in outputs_a] == [2000] and [t for t, _ in outputs_b] == [2000]


@pytest.mark.s3
def test_a_secret_in_the_storage_options_is_in_no_checkpoint_object_status_or_log(
        s3_bucket: str, s3_storage_options: dict, s3_service: Any, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import uuid

    secret = f"SECRET-{uuid.uuid4().hex}"
    options = {**s3_storage_options, "aws_secret_access_key": secret}
    url = f"s3://{s3_bucket}/checkpoints/app"
    caplog.set_level(logging.DEBUG)
    seen: list[Any] = []
    ssc = context(url, options, seen)
    ssc.start()
    try:
        ssc.step(2)
        status = json.dumps(ssc.status(), default=str)
    finally:
        ssc.stop(graceful=False)
    client = s3_service.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert any(k.endswith("metadata") for k in keys) and any("/commits/" in k for k in keys)
    stored = b"".join(client.get_object(Bucket=s3_bucket, Key=k)["Body"].read() for k in keys)
    assert secret.encode() not in stored
    assert secret not in status
    assert secret not in caplog.text
