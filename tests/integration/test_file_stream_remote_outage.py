"""The HDFS NameNode or the S3 server unreachable for a while in the middle of
a file stream (the session's server paused with SIGSTOP, then resumed with
SIGCONT), with the files and the checkpoint on that server:

- an outage shorter than the client's retries is waited out: the status shows
  the call that waits (what, where, for how long, its failed attempts), the log
  warns naming the path, and after the resume the job catches up with every
  file read exactly once;
- an outage longer than the retries stops the job with an error naming the
  path, in the status too; restarted from its checkpoint after the resume, the
  job reads every file exactly once.

The S3 runs use a secret key of their own: it is in no log line or status."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Callable

import pytest

from ingest import CheckpointError, StreamingContext
from ingest.storage import storage_for

pytestmark = pytest.mark.slow

PAUSE_S = 4.0


class Remote:
    """A fresh directory on the session's HDFS or S3 server, that server's
    pause/resume, and the storage options of one test."""

    def __init__(self, request: pytest.FixtureRequest, backend: str) -> None:
        self.backend = backend
        self.secret: str | None = None
        if backend == "hdfs":
            self.service = request.getfixturevalue("hdfs_service")
            self.base = request.getfixturevalue("hdfs_dir")
            self.options: dict[str, Any] = {"user": "tester"}
        else:
            self.service = request.getfixturevalue("s3_service")
            self.base = f"s3://{request.getfixturevalue('s3_bucket')}/job"
            self.secret = f"SECRET-{uuid.uuid4().hex}"  # the server takes any key; searched for in the logs
            self.options = {**request.getfixturevalue("s3_storage_options"), "aws_secret_access_key": self.secret}
        self.writer = storage_for(f"{self.base}/in", self.options)
        self.writer.write_atomic("present.txt", b"present at the first start\n")  # the directory exists

    def with_retries(self, budget: str) -> dict[str, Any]:
        """Options whose per-attempt timeouts are short and whose retries outlast
        the pause ("long") or give up within about two seconds ("short")."""
        if self.backend == "hdfs":
            return {**self.options, **({"timeout": 1, "retry_seconds": 60} if budget == "long"
                                       else {"timeout": 0.5, "retry_seconds": 2})}
        return {**self.options, **({"read_timeout": 1, "connect_timeout": 1, "max_attempts": 30} if budget == "long"
                                   else {"read_timeout": 0.5, "connect_timeout": 0.5, "max_attempts": 2})}

    def put(self, names: list[str]) -> list[str]:
        lines = []
        for name in names:
            content = [f"{name} line {i}" for i in range(3)]
            self.writer.write_atomic(f"{name}.txt", "".join(f"{line}\n" for line in content).encode())
            lines += content
        return lines


@pytest.fixture(params=[pytest.param("hdfs", marks=pytest.mark.hdfs), pytest.param("s3", marks=pytest.mark.s3)])
def remote(request: pytest.FixtureRequest) -> Remote:
    r = Remote(request, request.param)
    yield r
    r.service.resume()  # never leave the session's server paused, whatever failed


def job(remote: Remote, options: dict[str, Any], out: dict[int, list[str]], lease: float) -> StreamingContext:
    def build() -> StreamingContext:
        ssc = StreamingContext(0.2, stop_on_signal=False, log_batches=False)
        stream = ssc.text_file_stream(f"{remote.base}/in", storage_options=options, name="in")
        # keyed by batch time: a re-run batch replaces its output (an idempotent sink)
        stream.foreach_batch(lambda b: out.__setitem__(b.time, sorted(b.collect())))
        return ssc
    return StreamingContext.get_or_create(f"{remote.base}/ckpt", build, storage_options=options,
                                          lease_seconds=lease)


def lines_of(out: dict[int, list[str]]) -> list[str]:
    return sorted(line for batch in list(out.values()) for line in batch)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def check_no_secret(remote: Remote, *texts: str) -> None:
    if remote.secret is not None:
        assert all(remote.secret not in text for text in texts)


def test_an_outage_shorter_than_the_retries_is_waited_out_shown_in_the_status_and_no_file_is_lost_or_repeated(
        remote: Remote, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out: dict[int, list[str]] = {}
    ssc = job(remote, remote.with_retries("long"), out, lease=30.0)
    ssc.start()
    try:
        expected = remote.put([f"before-{i}" for i in range(5)])
        wait_for(lambda: lines_of(out) == sorted(expected), "the files written before the outage were read")

        remote.service.pause()
        paused_at = time.monotonic()
        waiting: list[dict[str, Any]] = []
        statuses: list[str] = []
        try:
            while time.monotonic() - paused_at < PAUSE_S:
                status = ssc.status()
                statuses.append(json.dumps(status, default=str))
                assert status["error"] is None and status["state"] == "active"
                waiting += [w for w in (status["inputs"]["in"]["storage_waiting"], status["checkpoint_waiting"]) if w]
                time.sleep(0.2)
        finally:
            remote.service.resume()
        assert waiting, "the status never showed the call waiting for the paused server"
        longest = max(waiting, key=lambda w: w["waiting_s"])
        assert longest["call"].split(" ")[-1].startswith(remote.base), longest  # "listing hdfs://…/in", ...
        assert longest["waiting_s"] >= PAUSE_S / 2 and longest["failed_attempts"] >= 1, longest
        assert "Timeout" in longest["last_error"], longest

        expected += remote.put([f"after-{i}" for i in range(5)])
        wait_for(lambda: lines_of(out) == sorted(expected), "the job caught up after the resume")
        time.sleep(0.5)  # a few more batches: nothing may come twice
        final = ssc.status()
    finally:
        ssc.stop(graceful=False, timeout=30)
    assert ssc.error is None
    assert lines_of(out) == sorted(expected)
    assert final["inputs"]["in"]["storage_waiting"] is None and final["checkpoint_waiting"] is None
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "ingest.storage"]
    assert any(remote.base in message for message in retries), retries[:5]
    check_no_secret(remote, caplog.text, *statuses, json.dumps(final, default=str))


def test_an_outage_longer_than_the_retries_stops_the_job_naming_the_path_and_a_restart_catches_up(
        remote: Remote, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    options = remote.with_retries("short")
    lease = 5.0  # a driver stopped while the server was down could not release its lease: it expires
    out: dict[int, list[str]] = {}
    ssc = job(remote, options, out, lease)
    ssc.start()
    try:
        expected = remote.put([f"before-{i}" for i in range(3)])
        wait_for(lambda: lines_of(out) == sorted(expected), "the files written before the outage were read")
        remote.service.pause()
        try:
            wait_for(lambda: ssc.error is not None, "the job stopped", timeout=30)
            status = ssc.status()
        finally:
            remote.service.resume()
    finally:
        ssc.stop(graceful=False, timeout=30)
    message = str(ssc.error)
    # Whichever call met the outage first (the listing, an intent or commit write), it is named with its path.
    assert f" {remote.base}/" in message and "failed" in message, message
    assert ("the NameNode did not answer" if remote.backend == "hdfs" else "is the S3 endpoint reachable") \
        in message, message
    assert status["error"] is not None and message in status["error"]

    expected += remote.put([f"while-down-{i}" for i in range(3)])
    deadline = time.monotonic() + 4 * lease + 30
    while True:  # the new driver takes over once the stopped one's lease expired
        ssc = job(remote, options, out, lease)
        try:
            ssc.start()
            break
        except CheckpointError as exc:
            assert "is in use by process" in str(exc) and time.monotonic() < deadline, exc
            time.sleep(0.3)
    try:
        expected += remote.put([f"after-{i}" for i in range(3)])
        wait_for(lambda: lines_of(out) == sorted(expected), "the restarted job caught up")
        time.sleep(0.5)
        final = ssc.status()
    finally:
        ssc.stop(graceful=False, timeout=30)
    assert ssc.error is None, ssc.error
    assert lines_of(out) == sorted(expected)
    check_no_secret(remote, caplog.text, json.dumps(status, default=str), json.dumps(final, default=str), message)
