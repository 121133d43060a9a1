"""File streams with a checkpoint: stopped, failed or restarted jobs take
every file exactly once (the files taken are in the intent log; the resume
point, in every commit, remembers what was taken)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest import ManualClock, StreamingContext
from ingest.errors import BatchFailedError
from ingest.checkpoint import CheckpointLog
from offsets import FileWatermark


def put(directory: Path, name: str, content: str) -> None:
    tmp = directory / f".{name}.writing"
    tmp.write_text(content)
    os.replace(tmp, directory / name)


class Job:
    """A job whose output is a list the test keeps across restarts; `fail`
    makes the output raise for the batches listed."""

    def __init__(self, checkpoint: Path, incoming: Path) -> None:
        self.checkpoint, self.incoming = checkpoint, incoming
        self.out: list[tuple[int, list[str]]] = []
        self.fail: set[int] = set()
        self.contexts: list[StreamingContext] = []

    def start(self) -> StreamingContext:
        def build() -> StreamingContext:
            ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
            ssc.text_file_stream(str(self.incoming), name="in").foreach_batch(self.write)
            return ssc

        ssc = StreamingContext.get_or_create(str(self.checkpoint), build)
        self.contexts.append(ssc)
        ssc.start()
        return ssc

    def write(self, batch) -> None:
        if batch.time in self.fail:
            raise RuntimeError(f"output of batch {batch.time} fails")
        self.out = [o for o in self.out if o[0] != batch.time]  # an idempotent sink: keyed by batch time
        self.out.append((batch.time, sorted(batch.collect())))

    def lines(self) -> list[str]:
        return sorted(line for _, lines in self.out for line in lines)


@pytest.fixture
def job(tmp_path: Path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    j = Job(tmp_path / "ckpt", incoming)
    yield j
    for ssc in j.contexts:
        ssc.stop(graceful=False, timeout=5)


def test_a_restarted_job_reads_the_files_written_while_it_was_down_and_none_again(job):
    put(job.incoming, "present.txt", "present at the first start\n")
    ssc = job.start()
    put(job.incoming, "a.txt", "a\n")
    ssc.step(2)
    ssc.stop()
    put(job.incoming, "b.txt", "b\n")  # while the job is down
    ssc = job.start()
    ssc.step(2)
    assert job.lines() == ["a", "b"]


def test_the_resume_point_in_each_commit_remembers_the_files_taken(job):
    ssc = job.start()
    put(job.incoming, "a.txt", "a\n")
    ssc.step()
    ssc.stop()
    resume = CheckpointLog(str(job.checkpoint)).read_commit(1000).next_positions["in"]
    assert isinstance(resume, FileWatermark)
    assert [p for p, _ in resume.taken] == ["a.txt"]


def test_a_first_batch_that_failed_is_re_run_with_its_files_and_files_present_at_the_first_start_stay_skipped(job):
    """The first batch's intent records what the job skipped when it first
    started, so a restart before the first commit does not list again."""
    put(job.incoming, "present.txt", "present at the first start\n")
    job.fail = {1000}
    ssc = job.start()
    put(job.incoming, "a.txt", "a\n")
    with pytest.raises(BatchFailedError):
        ssc.step()
    put(job.incoming, "b.txt", "b\n")
    job.fail = set()
    ssc = job.start()
    ssc.step(2)
    assert job.out[0] == (1000, ["a"]), "the failed batch was re-run with exactly its files"
    assert job.lines() == ["a", "b"]


def test_a_batch_re_run_after_a_failure_reads_the_same_files_and_later_batches_only_new_ones(job):
    ssc = job.start()
    put(job.incoming, "a.txt", "a\n")
    ssc.step()
    job.fail = {2000}
    put(job.incoming, "b.txt", "b\n")
    with pytest.raises(BatchFailedError):
        ssc.step()
    put(job.incoming, "c.txt", "c\n")
    job.fail = set()
    ssc = job.start()
    ssc.step(2)
    assert job.out == [(1000, ["a"]), (2000, ["b"]), (3000, ["c"]), (4000, [])]
