"""File-directory streams on HDFS and on S3, with the checkpoint on the same
backend, killed with SIGKILL at chosen points of the batch lifecycle and at
seeded random moments while files keep arriving (atomically: a hidden name then
a rename on HDFS, one PUT on S3), and restarted each time (the next driver
takes over the killed one's lease once it expires): in the end every file's
lines were output exactly once, full contents compared. The S3 runs use a
secret key of their own, which appears in no log line, status or checkpoint
object. (The local-disk variant: test_file_stream_recovery.py.)"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ingest.storage import storage_for

from .file_stream_kills import JobRuns, Writer, expected_lines, output_lines

pytestmark = pytest.mark.slow

FILES = 120
CRASH_POINTS = ["after_intent:2", "after_outputs:1"]
RANDOM_KILLS = 5
LEASE_SECONDS = 2.0


@pytest.fixture(params=[pytest.param("hdfs", marks=pytest.mark.hdfs), pytest.param("s3", marks=pytest.mark.s3)])
def remote(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], str | None]:
    """(base URL, storage options, the secret key in them if any)."""
    if request.param == "hdfs":
        return request.getfixturevalue("hdfs_dir"), {"user": "tester"}, None
    bucket = request.getfixturevalue("s3_bucket")
    secret = f"SECRET-{uuid.uuid4().hex}"  # the server takes any key; this one is searched for below
    return f"s3://{bucket}/job", {**request.getfixturevalue("s3_storage_options"), "aws_secret_access_key": secret}, \
        secret


def stored_objects(url: str, options: dict[str, Any]) -> dict[str, bytes]:
    storage = storage_for(url, options, create=False)
    return {e.path: storage.read(e.path) for e in storage.list_entries("", recursive=True)}


def test_no_file_is_missed_or_repeated_across_sigkills_with_files_and_checkpoint_remote(
        remote: tuple[str, dict[str, Any], str | None], tmp_path: Path) -> None:
    base, options, secret = remote
    incoming, ckpt, out = f"{base}/in", f"{base}/ckpt", tmp_path / "out"
    files = storage_for(incoming, options)
    for i in range(3):  # also makes the S3 prefix exist before the first listing
        files.write_atomic(f"present-{i}.txt", f"present at the first start {i}\n".encode())

    def put(name: str, text: str) -> None:
        files.write_atomic(name, text.encode())  # HDFS: a hidden temporary name, then a rename; S3: one PUT

    started = time.monotonic()
    jobs = JobRuns(incoming, ckpt, out, tmp_path / "logs", options, LEASE_SECONDS)
    try:
        first, stdout = jobs.start()
        jobs.wait_started(first, stdout)
        writer = Writer(put, FILES, pause_s=0.25)  # files arrive all through the kills
        writer.start()
        checkpoint = storage_for(ckpt, options)
        deadline = time.monotonic() + 60
        while not checkpoint.list("commits"):
            assert time.monotonic() < deadline, "the first run committed no batch"
            time.sleep(0.1)
        jobs.kill(first)

        for crash_at in CRASH_POINTS:
            jobs.run_to_crash_point(crash_at)
        rng = random.Random(29)
        for _ in range(RANDOM_KILLS):
            jobs.run_and_kill_at_random(rng, 0.2, 1.5)
        writer.join()
        assert writer.error is None, writer.error

        expected = expected_lines(FILES)
        status = jobs.run_until(len(expected))
    finally:
        jobs.close()
    got = output_lines(out)
    print(f"{jobs.kills} kills in {time.monotonic() - started:.1f} s; "
          f"{len(list(out.glob('*.json')))} batches with data; {len(got)} lines")
    assert jobs.kills >= 1 + len(CRASH_POINTS) + RANDOM_KILLS
    assert sorted(got) == expected
    assert not any("present at the first start" in line for line in got)
    assert status["error"] is None and status["inputs"]["incoming"]["files_deleted"] == 0

    if secret is not None:
        logs = jobs.log_text()
        assert "takes over" in logs or "taking over" in logs  # the logs are there, and were searched
        assert secret not in logs
        assert secret not in json.dumps(status)
        checkpoint_objects = stored_objects(ckpt, options)
        assert any(path.startswith("commits/") for path in checkpoint_objects)
        assert not [path for path, data in checkpoint_objects.items() if secret.encode() in data]
        assert not [p for p in out.iterdir() if secret.encode() in p.read_bytes()]
