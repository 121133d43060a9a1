"""File-directory streams on local disk: which files a batch takes, what it
reads from them, and what happens with bad input (a missing or unreadable
directory, files deleted or still growing, undecodable lines). Batches run on a
manual clock unless a test needs the real one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from direct.files import FileChangedError
from ingest import ManualClock, StreamingContext
from ingest.errors import BatchFailedError, ConfigError, IngestError, SourceError


def put(directory: Path, name: str, content: str | bytes, mtime: float | None = None) -> Path:
    """Write a file the way writers must: elsewhere (a hidden name), then rename into place."""
    target = directory / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.writing"
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, target)
    return target


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    d = tmp_path / "incoming"
    d.mkdir()
    return d


def test_each_new_file_is_read_once_and_files_there_at_the_first_start_are_skipped(make_context, collect, incoming):
    put(incoming, "before.txt", "old\n")
    ssc = make_context()
    got = collect(ssc.text_file_stream(str(incoming)))
    ssc.start()
    put(incoming, "a.txt", "a1\na2\n")
    ssc.step()
    put(incoming, "b.txt", "b1\r\nb2")  # CRLF, no final newline
    ssc.step(2)
    assert [sorted(b) for b in got] == [["a1", "a2"], ["b1", "b2"], []]


def test_new_files_only_false_reads_the_files_already_there(make_context, collect, incoming):
    put(incoming, "before.txt", "old\n")
    ssc = make_context()
    got = collect(ssc.text_file_stream(str(incoming), new_files_only=False))
    ssc.start()
    ssc.step(2)
    assert got == [["old"], []]


def test_glob_recursive_and_hidden_or_in_progress_names(make_context, collect, incoming):
    ssc = make_context()
    got = collect(ssc.text_file_stream(str(incoming), glob="*.csv", recursive=True))
    ssc.start()
    put(incoming, "a.csv", "top\n")
    put(incoming, "2024/01/b.csv", "nested\n")
    put(incoming, "c.json", "not matching\n")
    for name in (".hidden.csv", "_SUCCESS", "d.csv._COPYING_", "e.csv.tmp", "_temporary/0/f.csv"):
        (incoming / name).parent.mkdir(parents=True, exist_ok=True)
        (incoming / name).write_text("never read\n")
    ssc.step()
    assert sorted(got[0]) == ["nested", "top"]


def test_subdirectories_are_not_read_without_recursive(make_context, collect, incoming):
    ssc = make_context()
    got = collect(ssc.text_file_stream(str(incoming)))
    ssc.start()
    put(incoming, "sub/a.txt", "nested\n")
    put(incoming, "b.txt", "top\n")
    ssc.step()
    assert got == [["top"]]


def test_max_files_per_batch_takes_the_oldest_first_and_the_rest_later(make_context, collect, incoming):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), max_files_per_batch=2)
    got = collect(stream)
    ssc.start()
    now = time.time()
    for i, name in enumerate(["e", "d", "c", "b", "a"]):
        put(incoming, f"{name}.txt", f"{name}\n", mtime=now - 10 + i)
    ssc.step()
    assert stream.metrics()["files_waiting"] == 3
    ssc.step(3)
    assert got == [["e", "d"], ["c", "b"], ["a"], []]


def test_a_file_moved_in_with_a_modification_time_older_than_the_window_is_ignored_and_counted(
        make_context, collect, incoming):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), remember=30)
    got = collect(stream)
    ssc.start()
    now = time.time()
    put(incoming, "new.txt", "new\n", mtime=now)
    ssc.step()
    put(incoming, "late.txt", "late but within the window\n", mtime=now - 20)
    put(incoming, "ancient.txt", "ancient\n", mtime=now - 3600)
    ssc.step()
    assert got == [["new"], ["late but within the window"]]
    assert stream.metrics()["files_too_old"] == 1


def test_binary_records_and_a_reader_of_whole_files(make_context, collect, incoming):
    ssc = make_context()
    records = collect(ssc.binary_records_stream(str(incoming / "bin"), record_length=4, name="bin"))
    parsed = collect(ssc.file_stream(str(incoming / "json"), reader=lambda f: [json.loads(ln) for ln in f],
                                     name="json"))
    (incoming / "bin").mkdir()
    (incoming / "json").mkdir()
    ssc.start()
    put(incoming, "bin/r.dat", b"aaaabbbbcccc")
    put(incoming, "json/e.jsonl", '{"id": 1}\n{"id": 2}\n')
    ssc.step()
    assert records == [[b"aaaa", b"bbbb", b"cccc"]]
    assert parsed == [[{"id": 1}, {"id": 2}]]


def test_a_record_file_whose_size_is_not_a_multiple_of_the_record_length_fails_its_batch(
        make_context, collect, incoming):
    ssc = make_context()
    collect(ssc.binary_records_stream(str(incoming), record_length=4))
    ssc.start()
    put(incoming, "r.dat", b"aaaabb")
    with pytest.raises(BatchFailedError) as info:
        ssc.step()
    assert "r.dat has 6 bytes, not a multiple of the record length 4" in str(info.value)


def test_a_large_text_file_is_read_by_several_tasks_with_every_line_once(make_context, incoming):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), min_partition_bytes=10_000)
    partitions: list[int] = []
    lines: list[str] = []
    stream.foreach_batch(lambda b: (partitions.append(b.data.num_partitions), lines.extend(b.collect())))
    ssc.start()
    want = [f"line {i} " + "x" * (i % 97) for i in range(5000)]
    put(incoming, "big.txt", "\n".join(want) + "\n")
    ssc.step()
    assert partitions[0] >= 20
    assert lines == want


def test_ten_thousand_files_in_one_directory_with_max_files_per_batch(make_context, incoming):
    n = 10_000
    for i in range(n):
        (incoming / f".f{i:05d}.tmp").write_text(f"record {i}\n")
        os.replace(incoming / f".f{i:05d}.tmp", incoming / f"f{i:05d}.txt")
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), new_files_only=False, max_files_per_batch=3000)
    seen: list[str] = []
    per_batch: list[int] = []
    stream.foreach_batch(lambda b: (seen.extend(b.collect()), per_batch.append(len(b.positions[stream.name].files))))
    ssc.start()
    started = time.monotonic()
    ssc.step(5)
    elapsed = time.monotonic() - started
    print(f"10,000 files: 5 batches in {elapsed:.2f} s; last listing {stream.metrics()['listing_ms']} ms")
    assert per_batch == [3000, 3000, 3000, 1000, 0]
    assert elapsed < 60, "planning and reading 10,000 small files takes about a second on a 2-core machine"
    assert sorted(seen) == sorted(f"record {i}" for i in range(n))
    assert stream.metrics()["files_read"] == n


def test_a_directory_that_does_not_exist_fails_start_naming_it(make_context, tmp_path):
    ssc = make_context()
    ssc.text_file_stream(str(tmp_path / "missing")).foreach_batch(lambda b: None)
    with pytest.raises(SourceError, match=r"cannot start: directory .*missing does not exist"):
        ssc.start()
    assert not (tmp_path / "missing").exists()


def test_a_directory_removed_while_the_job_runs_fails_the_next_batch_naming_it(make_context, collect, incoming):
    ssc = make_context()
    collect(ssc.text_file_stream(str(incoming)))
    ssc.start()
    ssc.step()
    incoming.rmdir()
    with pytest.raises(SourceError, match=r"cannot plan a batch: directory .*incoming does not exist"):
        ssc.step()


def test_bad_options_are_config_errors_at_construction(make_context, incoming):
    ssc = make_context()
    for options, message in [({"errors": "ignore"}, "errors must be one of"),
                             ({"max_files_per_batch": 0}, "max_files_per_batch"),
                             ({"remember": 0}, "remember"),
                             ({"encoding": "utf-16"}, "0x0A"),
                             ({"min_partition_bytes": -1}, "min_partition_bytes")]:
        with pytest.raises(ConfigError, match=message):
            ssc.text_file_stream(str(incoming), **options)
    with pytest.raises(ConfigError, match="record_length"):
        ssc.binary_records_stream(str(incoming), 0)
    with pytest.raises(ConfigError, match="reader"):
        ssc.file_stream(str(incoming), reader=None)  # type: ignore[arg-type]


def test_a_file_deleted_between_listing_and_reading_is_skipped_counted_and_shown_in_status(
        make_context, incoming, caplog):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming))
    got: list[list[str]] = []

    def output(batch):
        (incoming / "doomed.txt").unlink()  # after planning, before the tasks read
        got.append(sorted(batch.collect()))

    stream.foreach_batch(output)
    ssc.start()
    put(incoming, "doomed.txt", "never seen\n")
    put(incoming, "kept.txt", "kept\n")
    ssc.step()
    assert got == [["kept"]]
    assert stream.metrics()["files_deleted"] == 1
    assert ssc.status()["inputs"][stream.name]["files_deleted"] == 1
    assert any("doomed.txt was deleted after it was listed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("change", ["append", "truncate"])
def test_a_file_that_changed_after_planning_fails_its_batch_and_no_partial_data_is_output(
        make_context, incoming, change):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming))
    outputs: list[list[str]] = []

    def output(batch):
        with open(incoming / "growing.txt", "a" if change == "append" else "w") as f:
            f.write("more\n" if change == "append" else "x")
        outputs.append(batch.collect())

    stream.foreach_batch(output)
    ssc.start()
    put(incoming, "growing.txt", "first\n")
    with pytest.raises(BatchFailedError) as info:
        ssc.step()
    assert isinstance(info.value.__cause__, FileChangedError)
    assert "growing.txt changed after it was planned: it had 6 bytes" in str(info.value)
    assert outputs == []


def test_a_file_rewritten_to_its_planned_size_is_caught_by_its_modification_time(make_context, incoming):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming))
    outputs: list[list[str]] = []

    def output(batch):
        (incoming / "rewritten.txt").write_text("other\n")
        os.utime(incoming / "rewritten.txt", (time.time() + 5, time.time() + 5))
        outputs.append(batch.collect())

    stream.foreach_batch(output)
    ssc.start()
    put(incoming, "rewritten.txt", "first\n")
    with pytest.raises(BatchFailedError, match=r"rewritten.txt changed after it was planned: .* now modified at"):
        ssc.step()
    assert outputs == []


def test_a_growing_file_is_detected_by_every_range_of_a_split_file(make_context, incoming):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), min_partition_bytes=100)
    stream.foreach_batch(lambda b: (open(incoming / "big.txt", "a").write("tail\n"), b.collect()))
    ssc.start()
    put(incoming, "big.txt", "".join(f"{i:09d}\n" for i in range(100)))
    with pytest.raises(BatchFailedError, match="big.txt changed after it was planned"):
        ssc.step()


BAD = b"good 1\nbad \xff\xfe line\ngood 2\n"


def test_an_undecodable_line_is_skipped_and_counted_by_default(make_context, collect, incoming, caplog):
    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming))
    got = collect(stream)
    ssc.start()
    put(incoming, "mixed.txt", BAD)
    ssc.step()
    assert got == [["good 1", "good 2"]]
    assert stream.metrics()["lines_undecodable"] == 1
    assert any("skipped the line at byte 7 of" in r.getMessage() for r in caplog.records)


def test_errors_replace_keeps_an_undecodable_line(make_context, collect, incoming):
    ssc = make_context()
    got = collect(ssc.text_file_stream(str(incoming), errors="replace"))
    ssc.start()
    put(incoming, "mixed.txt", BAD)
    ssc.step()
    assert got == [["good 1", "bad \ufffd\ufffd line", "good 2"]]


def test_errors_strict_fails_the_batch_naming_the_file_and_byte(make_context, collect, incoming):
    ssc = make_context()
    collect(ssc.text_file_stream(str(incoming), errors="strict"))
    ssc.start()
    put(incoming, "mixed.txt", BAD)
    with pytest.raises(BatchFailedError, match=r"line at byte 7 of .*mixed.txt is not valid utf-8"):
        ssc.step()


NOBODY = 65534


def as_nobody(directory: Path) -> str:
    """Run a job over `directory` in a forked child that dropped root's
    privileges (root reads anything); returns the error it met."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        message = "no error"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
            ssc.text_file_stream(str(directory), new_files_only=False).foreach_batch(lambda b: b.collect())
            try:
                ssc.start()
                ssc.step()
            except IngestError as exc:
                message = f"{type(exc).__name__}: {exc}"
            finally:
                ssc.stop(graceful=False, timeout=5)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"unexpected {type(exc).__name__}: {exc}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


@pytest.fixture
def shared_dir() -> Path:
    if os.geteuid() != 0:
        pytest.skip("these tests drop privileges to uid 65534 to meet a permission error; they need root")
    d = Path(tempfile.mkdtemp(prefix="files-perm-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_directory_the_job_cannot_read_fails_start_naming_it(shared_dir):
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o700)
    out = as_nobody(locked)
    assert out.startswith("SourceError") and f"cannot list {locked}: Permission denied" in out, out


def test_a_file_the_job_cannot_read_fails_its_batch_naming_it(shared_dir):
    (shared_dir / "secret.txt").write_text("x\n")
    (shared_dir / "secret.txt").chmod(0o600)
    out = as_nobody(shared_dir)
    assert out.startswith("BatchFailedError") and f"cannot open {shared_dir}/secret.txt: Permission denied" in out, out


def test_files_written_while_the_job_runs_are_each_read_once(tmp_path, incoming):
    """A real clock, a writer thread moving files in as batches run, full contents compared."""
    ssc = StreamingContext(batch_interval=0.05, stop_on_signal=False, log_batches=False)
    stream = ssc.text_file_stream(str(incoming), recursive=True)
    seen: list[str] = []
    stream.foreach_batch(lambda b: seen.extend(b.collect()))
    ssc.start()
    expected: list[str] = []

    def write() -> None:
        for i in range(300):
            lines = [f"file {i} line {j}" for j in range(i % 7)]
            expected.extend(lines)
            put(incoming, f"d{i % 3}/f{i:04d}.txt", "".join(ln + "\n" for ln in lines))
            if i % 20 == 0:
                time.sleep(0.03)

    writer = threading.Thread(target=write, name="test-writer")
    writer.start()
    writer.join()
    deadline = time.monotonic() + 20
    while len(seen) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a few more batches: nothing may come twice
    ssc.stop(graceful=True)
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(set(seen))


def test_partition_tasks_run_in_a_process_pool(make_context, collect, incoming):
    ssc = make_context(executor="processes", parallelism=2)
    got = collect(ssc.text_file_stream(str(incoming), min_partition_bytes=1000))
    ssc.start()
    want = [f"line {i}" for i in range(1000)]
    put(incoming, "big.txt", "".join(ln + "\n" for ln in want))
    put(incoming, "small.txt", "small\n")
    ssc.step()
    assert sorted(got[0]) == sorted(want + ["small"])
