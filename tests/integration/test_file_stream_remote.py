"""File streams on a real HDFS (MiniDFSCluster over WebHDFS) and a real S3
server (moto): files written while the job runs are each read exactly once
(whole contents compared), also across a restart from a checkpoint kept on the
same backend, and a file deleted between listing and reading is skipped and
counted. Batches run on a manual clock."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from ingest import ManualClock, StreamingContext
from ingest.storage import Storage, storage_for


@dataclass
class Remote:
    """A fresh directory on one backend, and a writer that puts files there the
    way writers must: atomically (HDFS: a hidden name, then a rename, which is
    what `write_atomic` does there; S3: one PUT)."""

    url: str
    options: dict[str, Any]
    contexts: list[StreamingContext] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writer: Storage = storage_for(self.url, self.options)

    def put(self, name: str, content: str) -> None:
        self.writer.write_atomic(f"in/{name}", content.encode())

    def context(self, **options: Any) -> StreamingContext:
        ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False, **options)
        self.contexts.append(ssc)
        return ssc

    def stream(self, ssc: StreamingContext, **options: Any) -> Any:
        return ssc.text_file_stream(f"{self.url}/in", storage_options=self.options, **options)


@pytest.fixture(params=[pytest.param("hdfs", marks=pytest.mark.hdfs), pytest.param("s3", marks=pytest.mark.s3)])
def remote(request: pytest.FixtureRequest):
    if request.param == "hdfs":
        r = Remote(request.getfixturevalue("hdfs_dir"), {"user": "tester"})
    else:
        bucket = request.getfixturevalue("s3_bucket")
        r = Remote(f"s3://{bucket}/job", dict(request.getfixturevalue("s3_storage_options")))
    # The directory exists before the job starts (an S3 prefix exists only
    # through its objects); this file is there at the first start, so skipped.
    r.put("present.txt", "present at the first start\n")
    yield r
    for ssc in r.contexts:
        ssc.stop(graceful=False, timeout=10)


def contents(n: int, name: str) -> list[str]:
    return [f"{name} line {i} " + "x" * (i % 7) for i in range(n)]


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_files_written_while_the_job_runs_are_each_read_once_whole(remote: Remote, executor: str) -> None:
    """With executor="processes" the partition tasks carry the storage to worker processes."""
    ssc = remote.context(executor=executor, parallelism=2)
    batches: list[list[str]] = []
    remote.stream(ssc).foreach_batch(lambda batch: batches.append(sorted(batch.collect())))
    ssc.start()
    written: list[str] = []
    for step in range(3):
        for k in range(2):
            name = f"f{step}-{k}"
            lines = contents(20 + step * 5 + k, name)
            remote.put(f"{name}.txt", "\n".join(lines) + "\n")
            written += lines
        ssc.step()
    ssc.step()  # nothing new: an empty batch
    assert len(batches) == 4 and batches[3] == []
    got = [line for batch in batches for line in batch]
    assert sorted(got) == sorted(written), "every line of every file, none twice, nothing else"
    assert len(got) == len(set(got))


def test_a_restart_from_a_checkpoint_reads_each_file_once(remote: Remote) -> None:
    """The checkpoint is on the same backend; files arrive before, while and after the job is down."""
    out: dict[int, list[str]] = {}

    def build() -> StreamingContext:
        ssc = remote.context()
        # keyed by batch time: a re-run batch replaces its output (an idempotent sink)
        remote.stream(ssc, name="in").foreach_batch(lambda b: out.__setitem__(b.time, sorted(b.collect())))
        return ssc

    def start() -> StreamingContext:
        ssc = StreamingContext.get_or_create(f"{remote.url}/ckpt", build, storage_options=remote.options)
        ssc.start()
        return ssc

    ssc = start()
    remote.put("a.txt", "a1\na2\n")
    ssc.step()
    remote.put("b.txt", "b1\n")
    ssc.step()
    ssc.stop()
    remote.put("c.txt", "c1\nc2\nc3\n")  # while the job is down
    ssc = start()
    ssc.step()
    remote.put("d.txt", "d1\n")
    ssc.step(2)
    ssc.stop()
    lines = sorted(line for batch in out.values() for line in batch)
    assert lines == ["a1", "a2", "b1", "c1", "c2", "c3", "d1"]


def test_a_file_deleted_between_listing_and_reading_is_skipped_and_counted(remote: Remote) -> None:
    ssc = remote.context()
    stream = remote.stream(ssc)
    got: list[list[str]] = []

    def output(batch: Any) -> None:
        remote.writer.delete("in/doomed.txt")  # after planning, before the tasks read
        got.append(sorted(batch.collect()))

    stream.foreach_batch(output)
    ssc.start()
    remote.put("doomed.txt", "never seen\n")
    remote.put("kept.txt", "kept\n")
    ssc.step()
    assert got == [["kept"]]
    assert stream.metrics()["files_deleted"] == 1
    assert ssc.status()["inputs"][stream.name]["files_deleted"] == 1


@pytest.mark.s3
@pytest.mark.slow
def test_a_prefix_of_more_than_a_thousand_objects_is_listed_over_several_pages_and_each_read_once(
        s3_bucket: str, s3_storage_options: dict) -> None:
    """S3 lists 1,000 keys a page: every listing here takes two pages."""
    remote = Remote(f"s3://{s3_bucket}/job", dict(s3_storage_options))
    names = [f"part-{i:05d}.txt" for i in range(1_150)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: remote.put(name, f"{name}\n"), names))
    ssc = remote.context(executor="threads", parallelism=4)  # 1,151 GETs, some at a time
    try:
        stream = remote.stream(ssc, new_files_only=False, max_files_per_batch=400)
        batches: list[list[str]] = []
        stream.foreach_batch(lambda batch: batches.append(batch.collect()))
        ssc.start()
        ssc.step(2)
        remote.put("late.txt", "late.txt\n")  # written while the job runs
        ssc.step(3)
        assert stream.metrics()["listed"] == 1_151
        assert [len(b) for b in batches] == [400, 400, 351, 0, 0]
        got = [line for batch in batches for line in batch]
        assert sorted(got) == sorted([*names, "late.txt"])
    finally:
        ssc.stop(graceful=False, timeout=10)
