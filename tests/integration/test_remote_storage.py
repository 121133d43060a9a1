"""The storage contract on real HDFS (MiniDFSCluster, WebHDFS) and a real S3
server (moto): the same behaviour as local disk, create-only commits that
exactly one racing writer wins, and errors that name the location and never
a secret."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from ingest.errors import ConfigError, StorageError
from ingest.storage import FileEntry, Storage, storage_for


@dataclass(frozen=True)
class Remote:
    url: str
    options: dict[str, Any]

    def storage(self) -> Storage:
        return storage_for(self.url, self.options)


@pytest.fixture(params=["hdfs", "s3"])
def remote(request: pytest.FixtureRequest) -> Remote:
    if request.param == "hdfs":
        return Remote(request.getfixturevalue("hdfs_dir"), {"user": "tester"})
    bucket = request.getfixturevalue("s3_bucket")
    return Remote(f"s3://{bucket}/jobs/app", dict(request.getfixturevalue("s3_storage_options")))


def test_write_new_creates_once_and_never_overwrites(remote: Remote) -> None:
    st = remote.storage()
    st.write_new("offsets/1", b"first")
    with pytest.raises(FileExistsError, match="offsets/1"):
        st.write_new("offsets/1", b"second")
    assert st.read("offsets/1") == b"first"


def test_write_atomic_replaces_and_list_shows_names_without_temporaries(remote: Remote) -> None:
    st = remote.storage()
    st.write_atomic("commits/2", b"old")
    st.write_atomic("commits/2", b"new")
    st.write_atomic("commits/1", b"x")
    st.write_atomic("commits/sub/3", b"y")
    assert st.read("commits/2") == b"new"
    assert st.list("commits") == ["1", "2", "sub"]
    assert st.list("nothing-here") == []
    assert st.exists("commits/2") and not st.exists("commits/9")
    assert st.size("commits/2") == 3


def test_delete_removes_and_a_missing_file_is_not_an_error(remote: Remote) -> None:
    st = remote.storage()
    st.write_atomic("a", b"1")
    st.delete("a")
    st.delete("a")
    assert not st.exists("a")


def test_a_missing_file_reads_as_file_not_found_naming_it(remote: Remote) -> None:
    st = remote.storage()
    with pytest.raises(FileNotFoundError, match="missing/file"):
        st.read("missing/file")
    with pytest.raises(FileNotFoundError, match="missing/file"):
        st.size("missing/file")


def test_list_entries_gives_sorted_relative_paths_with_sizes_and_times(remote: Remote) -> None:
    st = remote.storage()
    st.write_atomic("in/b.txt", b"bb")
    st.write_atomic("in/a.txt", b"a")
    st.write_atomic("in/deeper/c.txt", b"ccc")
    flat = st.list_entries("in")
    assert [(e.path, e.size) for e in flat] == [("in/a.txt", 1), ("in/b.txt", 2)]
    assert all(isinstance(e, FileEntry) and e.mtime_ms > 1_600_000_000_000 for e in flat)
    deep = st.list_entries("in", recursive=True)
    assert [(e.path, e.size) for e in deep] == [("in/a.txt", 1), ("in/b.txt", 2), ("in/deeper/c.txt", 3)]


def test_list_entries_of_a_missing_directory_is_an_error_naming_it(remote: Remote) -> None:
    st = remote.storage()
    with pytest.raises(StorageError, match="no/such/dir"):
        st.list_entries("no/such/dir")


def test_open_read_streams_byte_ranges(remote: Remote) -> None:
    st = remote.storage()
    data = bytes(range(256)) * 40
    st.write_atomic("blob", data)
    with st.open_read("blob") as f:
        assert f.read() == data
    with st.open_read("blob", 100, 5000) as f:
        assert f.read() == data[100:5000]
    with st.open_read("blob", 10_000) as f:
        assert f.read() == data[10_000:]
    st.write_atomic("lines", b"one\ntwo\nthree\n")
    with st.open_read("lines", 4) as f:
        assert f.readline() == b"two\n" and f.read() == b"three\n"


def test_of_sixteen_writers_racing_to_create_one_name_exactly_one_wins(remote: Remote) -> None:
    st = remote.storage()
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            st.write_new("commits/00000000000000001000", f"writer {i}".encode())
            result = f"won {i}"
        except FileExistsError:
            result = "lost"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 15
    assert st.read("commits/00000000000000001000") == f"writer {winners[0].split()[1]}".encode()


def test_options_are_never_part_of_the_url_and_credentials_in_urls_are_refused() -> None:
    with pytest.raises(ConfigError) as err:
        storage_for("s3://AKIA:hunter2-secret@bucket/x")
    assert "hunter2-secret" not in str(err.value) and "credentials" in str(err.value)
    with pytest.raises(ConfigError, match="no query options"):
        storage_for("hdfs://127.0.0.1:1/x?user=a", {})


@pytest.mark.s3
def test_a_bucket_that_does_not_exist_is_a_config_error_naming_it(s3_storage_options: dict) -> None:
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' of s3://no-such-bucket-here/p does not "
                                          "exist"):
        storage_for("s3://no-such-bucket-here/p", s3_storage_options)


@pytest.mark.s3
def test_the_secret_key_appears_in_no_error_repr_or_log(s3_bucket: str, s3_storage_options: dict,
                                                         s3_service: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    options = {**s3_storage_options, "aws_secret_access_key": secret, "max_attempts": 1}
    caplog.set_level(logging.DEBUG)
    st = storage_for(f"s3://{s3_bucket}/ck", options)
    st.write_atomic("x", b"1")
    seen = [repr(st), st.url, st.describe("x"), str(vars(st))]
    s3_service.client().delete_object(Bucket=s3_bucket, Key="ck/x")
    s3_service.client().delete_bucket(Bucket=s3_bucket)
    with pytest.raises(StorageError) as err:
        st.write_atomic("y", b"2")  # the bucket is gone
    seen.append(str(err.value))
    assert "does not exist" in str(err.value) and f"s3://{s3_bucket}/ck/y" in str(err.value)
    seen.append(caplog.text)
    assert not [text for text in seen if secret in text]


@pytest.mark.hdfs
def test_a_namenode_that_does_not_answer_is_an_error_naming_the_location() -> None:
    from ingest.testing.jvm import free_port

    port = free_port()
    with pytest.raises(StorageError, match=rf"hdfs://127.0.0.1:{port}/ck.*did not answer within 1 s"):
        storage_for(f"hdfs://127.0.0.1:{port}/ck", {"retry_seconds": 1})


@pytest.mark.s3
def test_wrong_credentials_are_a_config_error_naming_the_bucket_and_not_the_secret() -> None:
    from ingest.testing import s3
    from ingest.testing.plugin import skip_or_fail

    if s3.missing_requirements():
        skip_or_fail("needs moto's server: install " + " and ".join(s3.missing_requirements()))
    secret = f"WRONG-{uuid.uuid4().hex}"
    with s3.S3Server(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as server:  # moto checks credentials
        with pytest.raises(ConfigError, match="access to S3 bucket 'jobs' of s3://jobs/app is denied.*check the "
                                              "credentials") as err:
            storage_for("s3://jobs/app", {"endpoint_url": server.endpoint, "region": "us-east-1",
                                          "aws_access_key_id": "AKIAUNKNOWN", "aws_secret_access_key": secret})
    assert secret not in str(err.value)


def test_a_storage_pickles_without_its_client_and_reads_after_unpickling(remote: Remote) -> None:
    """A file stream's partition tasks carry the storage to worker processes."""
    import cloudpickle

    st = remote.storage()
    st.write_atomic("in/a.txt", b"hello")
    st.read("in/a.txt")  # the live client exists and has connections open
    blob = cloudpickle.dumps(st)
    copy = cloudpickle.loads(blob)
    assert copy.__dict__["_live"] is None  # the client is rebuilt on first use, not carried
    assert copy.url == st.url
    with copy.open_read("in/a.txt", 1) as f:
        assert f.read() == b"ello"
    assert [e.path for e in copy.list_entries("in")] == ["in/a.txt"]
