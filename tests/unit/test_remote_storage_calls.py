"""The bookkeeping of remote storages (no server): calls waiting for an answer
are reported by `stalled()` with their location, the outermost call per
thread, failed attempts counted; a storage pickled to a worker leaves them
behind; a response body that fails mid-read is a StorageError naming the file."""

from __future__ import annotations

import io
import pickle
import threading
import time

import pytest

from ingest.errors import StorageError
from ingest.storage import RemoteBody, RemoteStorage


class Server(RemoteStorage):
    url = "demo://server/root"

    def _make_client(self) -> object:
        return object()


def test_a_call_waiting_longer_than_the_threshold_is_reported_with_its_location_and_failed_attempts() -> None:
    storage = Server()
    entered, release = threading.Event(), threading.Event()

    def listing() -> None:
        with storage._waiting("listing", "in"):
            with storage._waiting("checking", "in/a.txt"):  # made inside the listing: the listing tells
                storage._attempt_failed("ReadTimeout")
                entered.set()
                release.wait(10)

    thread = threading.Thread(target=listing)
    thread.start()
    try:
        assert entered.wait(10)
        assert storage.stalled(after_s=60) is None
        time.sleep(0.05)
        stalled = storage.stalled(after_s=0.01)
        assert stalled is not None
        assert stalled["call"] == "listing demo://server/root/in"
        assert stalled["failed_attempts"] == 1 and stalled["last_error"] == "ReadTimeout"
        assert stalled["waiting_s"] >= 0
        clone = pickle.loads(pickle.dumps(storage))  # the copy in a worker process waits for nothing
        assert clone.stalled(after_s=0) is None
    finally:
        release.set()
        thread.join()
    assert storage.stalled(after_s=0) is None


def test_a_body_that_fails_mid_read_is_a_storage_error_naming_the_file() -> None:
    chunks = [b"first part ", TimeoutError("read timed out")]
    closed: list[bool] = []

    def read(n: int) -> bytes:
        chunk = chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        if len(chunk) > n:  # at most n bytes a call, like a socket
            chunks.insert(0, chunk[n:])
        return chunk[:n]

    body = io.BufferedReader(RemoteBody(read, lambda: closed.append(True), "demo://server/root/in/a.txt",
                                        (TimeoutError,)), buffer_size=4)
    assert body.read(6) == b"first "
    with pytest.raises(StorageError, match=r"reading demo://server/root/in/a.txt failed while receiving its data: "
                                           r"TimeoutError"):
        body.read()
    body.close()
    assert closed == [True]
