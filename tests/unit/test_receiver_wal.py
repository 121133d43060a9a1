"""Receivers with the write-ahead log on (`StreamingContext(write_ahead_log=True)`).

What a receiver stores with `store_batch` is in the log, fsynced, when the call
returns; the output of a run does not depend on whether the log is on; blocks
stored before a stop or a failed batch are processed after `get_or_create`; and
every storage fault (a directory that cannot be made, a segment gone or
damaged, a full disk) ends in an error that names the file instead of data
dropped without a word.
"""

from __future__ import annotations

import functools

import errno
import queue
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from wal_faults import DiskFull

import receivers.wal as wal_module
from ingest import checkpoint_cli
from ingest import StreamingContext
from ingest.errors import (BatchFailedError, CheckpointError, ConfigError, CorruptRecordError, ReceiverError,
                           StorageError)
from receivers import Receiver, SocketTextReceiver
from receivers.block_log import BLOCK
from receivers.codec import decode_block

STREAM = "scripted"


class ScriptedReceiver(Receiver[Any]):
    """Stores exactly what the test hands it, from a thread of its own:
    `store_batch(records)` returns the block id (or raises what the receiver's
    `store_batch` raised), `store(records)` buffers records one by one."""

    def __init__(self) -> None:
        super().__init__("scripted receiver")
        self._commands: queue.Queue[tuple[str, list[Any]] | None] = queue.Queue()
        self._results: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scripted-receiver")
        self._thread.start()

    def on_stop(self) -> None:
        self._commands.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            command = self._commands.get()
            if command is None:
                return
            how, records = command
            try:
                if how == "batch":
                    self._results.put(super().store_batch(records, {"count": len(records)}))
                else:
                    for record in records:
                        super().store(record)
                    self._results.put(None)
            except Exception as exc:  # noqa: BLE001 - handed to the test
                self._results.put(exc)

    def _call(self, how: str, records: list[Any]) -> Any:
        self._commands.put((how, list(records)))
        result = self._results.get(timeout=20)
        if isinstance(result, Exception):
            raise result
        return result

    def store_batch(self, records: list[Any], metadata: Any = None) -> str:  # type: ignore[override]
        return self._call("batch", records)

    def store_each(self, records: list[Any]) -> None:
        self._call("single", records)


@pytest.fixture
def contexts(make_context: Any) -> Any:
    """`contexts(**options)`: a StreamingContext on a ManualClock with quiet batch
    logs; all are stopped at the end whatever the test did."""
    return functools.partial(make_context, log_batches=False)


class Job:
    """One run of a job over a ScriptedReceiver that keeps each batch's records."""

    def __init__(self, ssc: StreamingContext, stream: Any, receiver: ScriptedReceiver,
                 batches: list[list[Any]]) -> None:
        self.ssc, self.stream, self.receiver, self.batches = ssc, stream, receiver, batches


def build_job(contexts, checkpoint: Path | None, *, wal: bool = True, sink: Callable[[Any], None] | None = None,
              **options: Any) -> Job:
    receiver = ScriptedReceiver()
    batches: list[list[Any]] = []

    def output(batch: Any) -> None:
        if sink is not None:
            sink(batch)
        batches.append(batch.collect())

    def factory() -> StreamingContext:
        ssc = contexts(write_ahead_log=wal, **options)
        stream = ssc.receiver_stream(receiver, name=STREAM)
        stream.map(lambda r: r).foreach_batch(output)
        factory.stream = stream  # type: ignore[attr-defined]
        return ssc

    ssc = StreamingContext.get_or_create(str(checkpoint), factory) if checkpoint is not None else factory()
    return Job(ssc, factory.stream, receiver, batches)  # type: ignore[attr-defined]


def wal_dir(checkpoint: Path) -> Path:
    return checkpoint / "receivers" / STREAM


def segments(checkpoint: Path) -> list[Path]:
    return sorted(wal_dir(checkpoint).glob("blocks-*.wal"))


def flatten(batches: list[list[Any]]) -> list[Any]:
    return [r for b in batches for r in b]


def wait_stopped(ssc: StreamingContext) -> None:
    """Wait until a context that failed has released everything (its log's lock too)."""
    try:
        assert ssc.await_termination(10), "the context did not stop"
    except AssertionError:
        raise
    except Exception:  # noqa: BLE001 - the error it stopped with, asserted by the caller
        pass


def stored_before_stop(contexts, checkpoint: Path, blocks: list[list[Any]]) -> None:
    """One run that stores `blocks` and stops before any batch runs: the log
    gets a segment of its own holding just those blocks."""
    job = build_job(contexts, checkpoint)
    job.ssc.start()
    for block in blocks:
        job.receiver.store_batch(block)
    job.ssc.stop(graceful=False)


# -- configuration ----------------------------------------------------------------------------


def test_write_ahead_log_without_a_checkpoint_is_refused_at_start_naming_the_fix(contexts) -> None:
    job = build_job(contexts, None)
    with pytest.raises(ConfigError) as err:
        job.ssc.start()
    assert "write_ahead_log=True" in str(err.value)
    assert "ssc.checkpoint(" in str(err.value)
    assert not job.receiver.is_started()


def test_the_receiver_knows_its_storage_is_reliable_only_with_the_log_on(contexts, tmp_path: Path) -> None:
    with_log = build_job(contexts, tmp_path / "with")
    without = build_job(contexts, tmp_path / "without", wal=False)
    with_log.ssc.start()
    without.ssc.start()
    assert (with_log.receiver.reliable_storage, without.receiver.reliable_storage) == (True, False)


# -- what store_batch guarantees ------------------------------------------------------------------


def test_a_block_is_in_the_log_and_synced_when_store_batch_returns(contexts, tmp_path: Path) -> None:
    job = build_job(contexts, tmp_path)
    job.ssc.start()
    wal = job.stream.block_log.wal
    for n in range(1, 6):
        syncs = wal.fsyncs
        records = [f"r{n}-{i}" for i in range(n)] + [(n, b"\xff")]
        block_id = job.receiver.store_batch(records)
        assert wal.fsyncs == syncs + 1
        handle, kind, payload = list(wal.records())[-1]  # read back from the segment file
        assert kind == BLOCK
        assert decode_block(payload) == [block_id, {"count": n + 1}, records]


def test_with_and_without_the_log_a_run_gives_the_same_output_record_for_record(
        contexts, tmp_path: Path) -> None:
    def run(wal: bool) -> tuple[list[list[Any]], list[list[int]]]:
        sizes: list[list[int]] = []
        job = build_job(contexts, tmp_path / ("on" if wal else "off"), wal=wal,
                        sink=lambda b: sizes.append([blk.num_records for blk in b.positions[STREAM].blocks]))
        job.ssc.start()
        n = 0
        for step in range(12):
            for _ in range(step % 4):  # 0 to 3 blocks per batch
                job.receiver.store_batch([{"seq": n + i, "payload": ("x" * (n % 7), bytes([n % 256]))}
                                          for i in range(n % 5 + 1)])
                n += n % 5 + 1
            job.ssc.step()
        job.ssc.stop(graceful=True)
        return job.batches, sizes

    with_log, without_log = run(True), run(False)
    assert with_log == without_log
    batches = with_log[0]
    assert len(batches) == 12 and [] in batches
    assert [r["seq"] for r in flatten(batches)] == list(range(len(flatten(batches))))


# -- restarts in one process -------------------------------------------------------------------


def test_blocks_stored_before_a_stop_without_draining_are_processed_after_get_or_create(
        contexts, tmp_path: Path) -> None:
    first = build_job(contexts, tmp_path)
    first.ssc.start()
    first.receiver.store_batch(["a", "b"])
    first.ssc.step()
    first.receiver.store_batch(["c"])
    first.receiver.store_batch(["d", "e"])
    first.ssc.stop(graceful=False)
    assert first.batches == [["a", "b"]]

    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.ssc.step()
    assert second.batches == [["c", "d", "e"]]
    second.ssc.stop(graceful=True)

    third = build_job(contexts, tmp_path)
    third.ssc.start()
    third.ssc.step()
    assert third.batches == [[]], "a committed batch is never processed again"


def test_a_receiver_started_again_during_the_job_resumes_after_the_blocks_logged_since_start_too(
        contexts, tmp_path: Path) -> None:
    # A receiver restarted mid-job (its Dask worker died, or it failed) may
    # have stored a block whose acknowledgement never reached its source: the
    # source sends it again, and only the durable positions say to skip it.
    stored_before_stop(contexts, tmp_path, [["a", "b"]])
    job = build_job(contexts, tmp_path)
    job.ssc.start()
    assert job.receiver.recovered_metadata() == [{"count": 2}]
    job.receiver.store_batch(["c", "d", "e"])
    job.ssc.step()  # processed, not yet forgotten: still durable and tracked
    job.receiver.store_batch(["f"])
    assert sorted(m["count"] for m in job.receiver.recovered_metadata()) == [1, 2, 3]


def test_a_batch_whose_output_failed_is_re_run_after_restart_with_the_same_blocks(
        contexts, tmp_path: Path) -> None:
    def fail(_batch: Any) -> None:
        raise RuntimeError("sink down")

    first = build_job(contexts, tmp_path, sink=fail)
    first.ssc.start()
    ids = [first.receiver.store_batch(["a", "b"]), first.receiver.store_batch(["c"])]
    with pytest.raises(BatchFailedError, match="sink down"):
        first.ssc.step()
    wait_stopped(first.ssc)

    seen: list[Any] = []
    second = build_job(contexts, tmp_path, sink=lambda b: seen.append((b.recovered, b.positions[STREAM])))
    second.ssc.start()
    second.receiver.store_batch(["late"])
    second.ssc.step()
    assert second.batches[0] == ["a", "b", "c"]
    assert seen[0][0] is True
    assert list(seen[0][1].block_ids) == ids
    second.ssc.step()
    assert second.batches[1] == ["late"]


class Crash(Exception):
    """Stands for the process dying at a crash point."""


def crash_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    """The scheduler stops dead at `point` (`ingest.faults` names), as a
    SIGKILL there would stop it: nothing after the point runs."""
    import ingest.scheduler as scheduler

    def crash_point(name: str) -> None:
        if name == point:
            raise Crash(f"crash point {name}")

    monkeypatch.setattr(scheduler, "crash_point", crash_point)


@pytest.mark.parametrize("point", ["before_intent", "after_intent", "after_intent_written"])
def test_a_crash_around_the_intent_gives_every_block_to_exactly_one_batch(
        contexts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    first = build_job(contexts, tmp_path)
    first.ssc.start()
    first.receiver.store_batch(["a"])
    first.receiver.store_batch(["b"])
    crash_at(monkeypatch, point)
    with pytest.raises(Crash):
        first.ssc.step()
    wait_stopped(first.ssc)
    monkeypatch.undo()
    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.receiver.store_batch(["c"])
    second.ssc.step(2)
    if point == "before_intent":  # nothing durable planned a batch: a, b wait for the next one
        assert [b for b in second.batches if b] == [["a", "b", "c"]]
    else:  # the intent names a, b: the batch is re-run with exactly them
        assert [b for b in second.batches if b] == [["a", "b"], ["c"]]
    second.ssc.stop()
    third = build_job(contexts, tmp_path)  # and the log agrees: nothing is left to run
    third.ssc.start()
    third.ssc.step()
    assert flatten(third.batches) == []


def test_a_lost_intent_of_a_batch_that_ran_stops_the_restart_naming_the_intent_file(
        contexts, tmp_path: Path) -> None:
    def fail(_batch: Any) -> None:
        raise RuntimeError("sink down")

    first = build_job(contexts, tmp_path, sink=fail)
    first.ssc.start()
    first.receiver.store_batch(["a", "b"])
    with pytest.raises(BatchFailedError, match="sink down"):
        first.ssc.step()  # its output may have run in part: the batch must be re-run as it was
    wait_stopped(first.ssc)
    (intent,) = (tmp_path / "offsets").iterdir()
    intent.unlink()
    problems = checkpoint_cli.inspect(str(tmp_path))["problems"]  # what fsck reports
    assert [p for p in problems if f"intent file {intent} is missing" in p], problems
    with pytest.raises(CheckpointError) as err:
        second = build_job(contexts, tmp_path)
        second.ssc.start()
        second.receiver.store_batch(["c"])
        second.ssc.step()
    assert str(intent) in str(err.value)
    assert "is missing and the batch has no commit" in str(err.value)


# -- faults: the log's directory and files ----------------------------------------------------------


def test_a_log_directory_that_cannot_be_created_stops_the_start_naming_the_path(contexts, tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "receivers").write_text("a regular file where the receivers' logs should go")
    job = build_job(contexts, checkpoint)
    with pytest.raises(ConfigError) as err:
        job.ssc.start()
    assert str(wal_dir(checkpoint)) in str(err.value)
    assert job.ssc.state == "stopped"
    assert not job.receiver.is_started()


def test_a_middle_segment_deleted_by_hand_stops_the_restart_naming_the_file(contexts, tmp_path: Path) -> None:
    for blocks in (["a"], ["b"], ["c"]):
        stored_before_stop(contexts, tmp_path, [blocks])
    victim = segments(tmp_path)[1]
    victim.unlink()
    job = build_job(contexts, tmp_path)
    with pytest.raises(CorruptRecordError) as err:
        job.ssc.start()
    assert str(victim) in str(err.value)
    assert job.batches == []


def test_the_oldest_segment_deleted_by_hand_stops_the_restart_naming_the_file(contexts, tmp_path: Path) -> None:
    for blocks in (["a"], ["b"], ["c"]):
        stored_before_stop(contexts, tmp_path, [blocks])
    victim = segments(tmp_path)[0]
    victim.unlink()
    job = build_job(contexts, tmp_path)
    with pytest.raises(StorageError) as err:
        job.ssc.start()
        job.ssc.step()
    assert str(victim) in str(err.value)


def test_the_newest_segment_deleted_by_hand_stops_the_restart_naming_the_file(contexts, tmp_path: Path) -> None:
    for blocks in (["a"], ["b"], ["c"]):
        stored_before_stop(contexts, tmp_path, [blocks])
    victim = segments(tmp_path)[-1]
    victim.unlink()
    job = build_job(contexts, tmp_path)
    with pytest.raises(StorageError) as err:
        job.ssc.start()
        job.ssc.step()
    assert str(victim) in str(err.value)


def test_a_checksum_mismatch_in_the_middle_stops_the_restart_naming_file_and_offset(
        contexts, tmp_path: Path) -> None:
    stored_before_stop(contexts, tmp_path, [["first-block"], ["second-block"]])
    stored_before_stop(contexts, tmp_path, [["third-block"]])
    damaged = segments(tmp_path)[0]
    data = bytearray(damaged.read_bytes())
    at = data.index(b"first-block")
    data[at] ^= 0x20  # "first" -> "First": a plausible bit flip, the CRC must see it
    damaged.write_bytes(bytes(data))
    record_offset = data.rindex(b"WREC", 0, at)
    job = build_job(contexts, tmp_path)
    with pytest.raises(CorruptRecordError) as err:
        job.ssc.start()
    assert str(damaged) in str(err.value)
    assert err.value.offset == record_offset and f"offset {record_offset}" in str(err.value)
    assert job.batches == []


# -- faults: a full disk ------------------------------------------------------------------------------


def test_store_batch_on_a_full_disk_raises_enospc_and_a_retry_after_loses_nothing(
        contexts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFull(monkeypatch)
    job = build_job(contexts, tmp_path)
    job.ssc.start()
    job.receiver.store_batch(["before"])
    disk.full = True
    with pytest.raises(StorageError) as err:
        job.receiver.store_batch(["during-1", "during-2"])
    assert err.value.errno == errno.ENOSPC
    assert str(segments(tmp_path)[0]) in str(err.value)
    disk.full = False
    job.receiver.store_batch(["during-1", "during-2"])  # the receiver still holds them: it retries
    job.receiver.store_batch(["after"])
    job.ssc.step()
    assert job.batches == [["before", "during-1", "during-2", "after"]]
    assert disk.failures == 1
    job.ssc.stop(graceful=True)
    restarted = build_job(contexts, tmp_path)
    restarted.ssc.start()
    restarted.ssc.step()
    assert restarted.batches == [[]], "the failed append left nothing behind to be replayed"


def test_a_full_disk_under_store_stops_the_context_with_the_error(
        contexts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFull(monkeypatch)
    job = build_job(contexts, tmp_path, block_interval=0.01)
    job.ssc.start()
    disk.full = True
    job.receiver.store_each(["x", "y"])
    with pytest.raises(ReceiverError) as err:
        job.ssc.await_termination(10)
    assert "ENOSPC" in str(err.value) and "stops rather than drop" in str(err.value)
    assert job.ssc.state == "stopped"
    assert disk.failures >= 1


def test_a_full_disk_when_journalling_an_allocation_stops_the_context_and_the_restart_re_runs_the_batch(
        contexts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFull(monkeypatch)
    first = build_job(contexts, tmp_path)
    first.ssc.start()
    first.receiver.store_batch(["a"])
    first.receiver.store_batch(["b"])
    disk.full = True  # the intent is written; the allocation record after it cannot be
    with pytest.raises(StorageError) as err:
        first.ssc.step()
    assert err.value.errno == errno.ENOSPC
    wait_stopped(first.ssc)
    assert first.ssc.state == "stopped"
    assert first.batches == []
    disk.full = False
    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.ssc.step()
    # The batch is re-run from its intent with exactly its blocks, then the next one is empty.
    assert second.batches == [["a", "b"], []]


@pytest.fixture
def line_server():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    conns: list[socket.socket] = []
    yield srv, conns
    for conn in conns:
        conn.close()
    srv.close()


def test_a_full_disk_under_the_socket_receiver_stops_the_job_instead_of_dropping_lines(
        contexts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line_server) -> None:
    srv, conns = line_server
    disk = DiskFull(monkeypatch)
    ssc = contexts(write_ahead_log=True)
    ssc.checkpoint(str(tmp_path))
    lines = ssc.receiver_stream(SocketTextReceiver("127.0.0.1", srv.getsockname()[1]), kind="socket",
                                restart_delay=0.1, max_restart_delay=0.2)
    out: list[list[str]] = []
    lines.foreach_batch(lambda b: out.append(b.collect()))
    ssc.start()
    conn, _ = srv.accept()
    conns.append(conn)
    conn.sendall(b"stored\n")
    deadline = time.monotonic() + 10
    while lines.records_received < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    disk.full = True
    conn.sendall(b"lost-1\nlost-2\n")
    deadline = time.monotonic() + 3
    while ssc.state == "active" and time.monotonic() < deadline:
        time.sleep(0.02)
    disk.full = False
    assert disk.failures >= 1
    assert ssc.state != "active", "the job went on after received lines could not be stored"
    assert isinstance(ssc.error, (ReceiverError, StorageError)) and "ENOSPC" in str(ssc.error)


# -- storing and cleaning up race ---------------------------------------------------------------


def test_a_batch_that_commits_while_a_block_is_being_stored_never_deletes_that_block(
        contexts, tmp_path: Path) -> None:
    # The block is durable (a receiver may acknowledge its source) before it
    # is tracked; a batch planned and committed in between must not see it as
    # deletable. Here the batch runs inside that window, on another thread.
    first = build_job(contexts, tmp_path)
    first.ssc.start()
    block_log = first.stream.block_log
    block_log.wal.segment_max_bytes = wal_module.FILE_HEADER_SIZE + wal_module.RECORD_HEADER_SIZE + 1  # a segment per record
    first.receiver.store_batch(["a"])
    first.ssc.step()
    real_put = block_log.put
    batches: list[threading.Thread] = []

    def put_then_run_a_batch(stream: str, block: Any) -> Any:
        info = real_put(stream, block)
        batch = threading.Thread(target=first.ssc.step)
        batch.start()
        batch.join(0.5)  # with storing as one step, the batch waits for the block to be tracked
        batches.append(batch)
        return info

    block_log.put = put_then_run_a_batch
    first.receiver.store_batch(["b"])
    batches[0].join(10)
    first.ssc.stop(graceful=False)  # as a crash would: what is not processed must be in the log

    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.ssc.step()
    assert flatten(first.batches + second.batches) == ["a", "b"]


# -- stop with a timeout ------------------------------------------------------------------------------


def test_blocks_not_yet_processed_stay_in_the_log_after_a_stop_with_a_tiny_timeout(
        contexts, tmp_path: Path) -> None:
    first = build_job(contexts, tmp_path)
    first.ssc.start()
    first.receiver.store_batch(["a"])
    first.ssc.step()
    first.receiver.store_batch(["b", "c"])
    first.receiver.store_batch(["d"])
    first.ssc.stop(graceful=True, timeout=0.001)
    assert first.batches == [["a"]]

    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.ssc.step()
    assert second.batches == [["b", "c", "d"]]


def test_a_batch_still_running_when_a_stop_times_out_is_output_exactly_once_across_the_restart(
        contexts, tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def slow_sink(_batch: Any) -> None:
        entered.set()
        release.wait(10)

    first = build_job(contexts, tmp_path, sink=slow_sink)
    first.ssc.start()
    first.receiver.store_batch(["a", "b"])
    def run_the_batch() -> None:
        try:
            first.ssc.step()
        except Exception:  # noqa: BLE001 - the stop may fail the batch or not: the output must be the same
            pass

    stepping = threading.Thread(target=run_the_batch)
    stepping.start()
    assert entered.wait(10)
    stopper = threading.Thread(target=first.ssc.stop, kwargs={"graceful": False, "timeout": 0.001})
    stopper.start()
    stopper.join(5)
    release.set()
    stepping.join(10)
    stopper.join(10)
    wait_stopped(first.ssc)

    second = build_job(contexts, tmp_path)
    second.ssc.start()
    second.ssc.step()
    assert flatten(first.batches + second.batches) == ["a", "b"]
