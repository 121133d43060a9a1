"""One retention point, and clean-up as its own step after the commit.

The scheduler acknowledges every input (`on_batch_committed`), then deletes the
checkpoint's files behind the retention point, then lets every input delete
its data behind it (`clean_up`). With the write-ahead log on, blocks of the
retained commits stay, so a checkpoint's state fallback can replay them."""

from __future__ import annotations

import functools
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

import receivers.block_log as block_log_module
from ingest import ManualClock, StreamingContext
from ingest.checkpoint import CheckpointLog
from ingest.dataset import Dataset
from ingest.dstream import InputDStream
from offsets import OpaquePosition, Position
from offsets.retention import retain_from_ms
from receivers import Receiver
from receivers.wal import WriteAheadLog


def name(t: int) -> str:
    return f"{t:020d}"


# -- the rule ------------------------------------------------------------------------------------------


def test_without_a_durable_checkpoint_only_the_committed_batch_and_older_are_forgotten():
    assert retain_from_ms(5000, [3000, 4000, 5000], [], durable=False) == 5001


def test_with_a_checkpoint_the_oldest_retained_commit_keeps_its_data():
    assert retain_from_ms(5000, [3000, 4000, 5000], [], durable=True) == 3000


def test_a_pending_batch_keeps_its_data_even_behind_the_retained_commits():
    assert retain_from_ms(5000, [4000, 5000], [2000, 6000], durable=True) == 2000
    assert retain_from_ms(5000, [], [3000], durable=False) == 3000


# -- the order of the steps --------------------------------------------------------------------------------


class Spy(InputDStream[Any]):
    kind = "spy"

    def __init__(self, ssc: StreamingContext, calls: list[tuple[Any, ...]], name: str) -> None:
        super().__init__(ssc, name)
        self.calls = calls

    def plan(self, time_ms: int) -> Any:
        return {"t": time_ms}  # a plain value: wrapped in an OpaquePosition

    def materialize(self, time_ms: int, position: Position) -> Dataset[Any]:
        assert position == OpaquePosition({"t": time_ms})
        return Dataset.from_records([], 1, self.ssc.executor)

    def on_batch_committed(self, time_ms: int, position: Position) -> None:
        self.calls.append(("ack", self.name, time_ms))

    def clean_up(self, retain_from: int) -> None:
        self.calls.append(("clean_up", self.name, retain_from))


def run_spies(calls: list[tuple[Any, ...]], directory: Path | None, steps: int, monkeypatch: Any) -> None:
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    if directory is not None:
        ssc.checkpoint(str(directory), retain_batches=2)
        log_clean_up = CheckpointLog.clean_up

        def clean_up(self: CheckpointLog, retain_from: int) -> None:
            calls.append(("checkpoint clean_up", retain_from))
            log_clean_up(self, retain_from)
        monkeypatch.setattr(CheckpointLog, "clean_up", clean_up)
    for n in ("a", "b"):
        Spy(ssc, calls, n).foreach_batch(lambda b: None)
    ssc.start()
    try:
        ssc.step(steps)
    finally:
        ssc.stop(graceful=False)


def test_every_input_is_acknowledged_then_the_checkpoint_then_every_input_cleans_up(tmp_path, monkeypatch):
    calls: list[tuple[Any, ...]] = []
    run_spies(calls, tmp_path, 3, monkeypatch)
    assert calls == [
        ("ack", "a", 1000), ("ack", "b", 1000), ("checkpoint clean_up", 1000),
        ("clean_up", "a", 1000), ("clean_up", "b", 1000),
        ("ack", "a", 2000), ("ack", "b", 2000), ("checkpoint clean_up", 1000),
        ("clean_up", "a", 1000), ("clean_up", "b", 1000),
        ("ack", "a", 3000), ("ack", "b", 3000), ("checkpoint clean_up", 2000),  # retain_batches=2
        ("clean_up", "a", 2000), ("clean_up", "b", 2000),
    ]
    assert sorted(p.name for p in (tmp_path / "commits").iterdir()) == [name(2000), name(3000)]


def test_without_a_checkpoint_inputs_clean_up_behind_the_batch_just_committed(monkeypatch):
    calls: list[tuple[Any, ...]] = []
    run_spies(calls, None, 2, monkeypatch)
    assert [c for c in calls if c[0] == "clean_up"] == [
        ("clean_up", "a", 1001), ("clean_up", "b", 1001), ("clean_up", "a", 2001), ("clean_up", "b", 2001)]


# -- write-ahead log receivers and checkpoint fallbacks -------------------------------------------------------


class HandFed(Receiver[Any]):
    """Stores each list the test hands it as one block, from its own thread."""

    def __init__(self) -> None:
        super().__init__("hand-fed receiver")
        self.inbox: queue.Queue[list[Any] | None] = queue.Queue()
        self.stored: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hand-fed-receiver")
        self._thread.start()

    def on_stop(self) -> None:
        self.inbox.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while (records := self.inbox.get()) is not None:
            self.stored.put(self.store_batch(records))

    def feed(self, records: list[Any]) -> None:
        self.inbox.put(records)
        self.stored.get(timeout=20)


@pytest.fixture
def tiny_segments(monkeypatch: Any) -> None:
    """Every write-ahead log record in a segment of its own, so that clean-up
    really deletes segments."""
    monkeypatch.setattr(block_log_module, "WriteAheadLog",
                        functools.partial(WriteAheadLog, segment_max_bytes=64))


def run_wal_job(directory: Path, feeds: list[list[str]], totals: dict[int, Any]) -> None:
    receiver = HandFed()

    def factory() -> StreamingContext:
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                               write_ahead_log=True)
        words = ssc.receiver_stream(receiver, name="words")
        words.map(lambda w: ("n", 1)).update_state_by_key(lambda vs, old: (old or 0) + len(vs), name="total") \
            .foreach_batch(lambda b: totals.__setitem__(b.time, b.collect()))
        return ssc

    ssc = StreamingContext.get_or_create(str(directory), factory)
    ssc.start()
    try:
        for records in feeds:
            receiver.feed(records)
            ssc.step(1)
    finally:
        ssc.stop(graceful=False)


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", [f"state/total/{name(4000)}.full", f"commits/{name(4000)}"])
def test_with_the_write_ahead_log_a_corrupt_newest_commit_or_state_file_still_restarts(
        tmp_path, tiny_segments, caplog, victim):
    totals: dict[int, Any] = {}
    run_wal_job(tmp_path, [["a"], ["b", "c"], ["d"], ["e", "f"]], totals)
    assert totals[4000] == [("n", 6)]
    flip_a_bit(tmp_path / victim)

    after: dict[int, Any] = {}
    with caplog.at_level(logging.WARNING):
        for _ in range(2):  # every restart works, not only the first
            run_wal_job(tmp_path, [["g"]], after)
    assert str(tmp_path / victim) in caplog.text
    # Batch 4000's blocks were replayed (state fallback) or re-run (commit fallback) from the log.
    assert after[max(after)] == [("n", 8)]
