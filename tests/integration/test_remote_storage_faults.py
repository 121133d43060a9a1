"""HDFS and S3 servers that hang for a while (SIGSTOP, then SIGCONT): the
storage retries and the call succeeds after the resume, a create-only write
whose first answer was lost is still reported as this writer's success, and a
server that never comes back is an error naming the path."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest

from ingest.errors import StorageError
from ingest.storage import storage_for

pytestmark = pytest.mark.slow


def call_while_paused(pause: Callable[[], None], resume: Callable[[], None], fn: Callable[[], Any],
                      paused_for: float) -> tuple[Any, BaseException | None, float]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    pause()
    started = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    try:
        time.sleep(paused_for)
        assert thread.is_alive(), f"the call returned while the server was paused: {result}"
    finally:
        resume()
    thread.join(120)
    assert not thread.is_alive()
    return result.get("value"), result.get("error"), time.monotonic() - started


@pytest.mark.s3
def test_s3_writes_retry_through_a_paused_server_and_succeed_after_it_resumes(
        s3_service: Any, s3_bucket: str, s3_storage_options: dict) -> None:
    st = storage_for(f"s3://{s3_bucket}/ck", {**s3_storage_options, "read_timeout": 1, "connect_timeout": 1,
                                              "max_attempts": 10})
    _, error, took = call_while_paused(s3_service.pause, s3_service.resume,
                                       lambda: st.write_atomic("commits/1", b"atomic"), 2.5)
    assert error is None and took >= 2.5
    # The paused server gets the first conditional PUT and stores it after the resume,
    # while the client has timed out and retries: the retry's 412 is still our success.
    _, error, _ = call_while_paused(s3_service.pause, s3_service.resume,
                                    lambda: st.write_new("offsets/1", b"intent"), 2.5)
    assert error is None
    assert st.read("commits/1") == b"atomic" and st.read("offsets/1") == b"intent"
    with pytest.raises(FileExistsError):
        st.write_new("offsets/1", b"another writer")


@pytest.mark.s3
def test_s3_a_server_that_stays_paused_is_an_error_naming_the_object(
        s3_service: Any, s3_bucket: str, s3_storage_options: dict) -> None:
    st = storage_for(f"s3://{s3_bucket}/ck", {**s3_storage_options, "read_timeout": 0.5, "connect_timeout": 0.5,
                                              "max_attempts": 2})
    s3_service.pause()
    try:
        with pytest.raises(StorageError, match=rf"reading s3://{s3_bucket}/ck/commits/7 failed.*Timeout"):
            st.read("commits/7")
    finally:
        s3_service.resume()


@pytest.mark.hdfs
def test_hdfs_writes_retry_through_a_paused_namenode_and_succeed_after_it_resumes(
        hdfs_service: Any, hdfs_dir: str) -> None:
    st = storage_for(hdfs_dir, {"user": "tester", "timeout": 1, "retry_seconds": 60})
    st.write_atomic("warm", b"up")
    _, error, took = call_while_paused(hdfs_service.pause, hdfs_service.resume,
                                       lambda: st.write_atomic("commits/1", b"atomic"), 3.0)
    assert error is None and took >= 3.0
    _, error, _ = call_while_paused(hdfs_service.pause, hdfs_service.resume,
                                    lambda: st.write_new("offsets/1", b"intent"), 3.0)
    assert error is None
    assert st.read("commits/1") == b"atomic" and st.read("offsets/1") == b"intent"
    assert st.list("offsets") == ["1"]  # no temporary file left visible
    with pytest.raises(FileExistsError):
        st.write_new("offsets/1", b"another writer")


@pytest.mark.hdfs
def test_hdfs_a_namenode_that_stays_paused_is_an_error_naming_the_path(hdfs_service: Any, hdfs_dir: str) -> None:
    st = storage_for(hdfs_dir, {"user": "tester", "timeout": 0.5, "retry_seconds": 2})
    hdfs_service.pause()
    try:
        with pytest.raises(StorageError, match=rf"reading {hdfs_dir}/commits/7 failed: the NameNode did not answer"):
            st.read("commits/7")
    finally:
        hdfs_service.resume()
