"""Specification of stopping with a timeout: nothing is closed under a batch
that is still running, and received records that no batch processed are kept
in the write-ahead log, or counted as lost when it is off."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from ingest import StreamingListener
from ingest.errors import ReceiverError
from ingest.listener import StreamingStopped
from receivers import Receiver


class Idle(Receiver[Any]):
    """A receiver without threads: the test stores through it directly."""

    def on_start(self) -> None:
        pass

    def on_stop(self) -> None:
        pass


class StopRecorder(StreamingListener):
    def __init__(self) -> None:
        self.stopped: list[StreamingStopped] = []

    def on_streaming_stopped(self, event: StreamingStopped) -> None:
        self.stopped.append(event)


class BlockingOutput:
    """An output operation whose first batch blocks until `release` is set."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.events: list[str] = []
        self.batches: list[list[Any]] = []

    def __call__(self, batch: Any) -> None:
        records = batch.collect()
        if not self.batches:
            self.entered.set()
            assert self.release.wait(10)
        self.batches.append(records)
        self.events.append("batch ended")


def run_first_batch_in_background(ssc: Any) -> threading.Thread:
    stepper = threading.Thread(target=ssc.step, name="test-stepper")
    stepper.start()
    return stepper


def test_inputs_and_the_executor_are_not_closed_under_a_batch_that_outlives_the_stop_timeout(make_context,
                                                                                               monkeypatch):
    ssc = make_context()
    output = BlockingOutput()
    numbers = ssc.queue_stream([[1, 2]], name="numbers")
    numbers.foreach_batch(output)
    close, shutdown = numbers.close, ssc.executor.shutdown
    monkeypatch.setattr(numbers, "close", lambda: (output.events.append("input closed"), close()))
    monkeypatch.setattr(ssc.executor, "shutdown", lambda: (output.events.append("executor shut down"), shutdown()))
    ssc.start()
    stepper = run_first_batch_in_background(ssc)
    assert output.entered.wait(10)

    ssc.stop(graceful=True, timeout=0.1)
    assert output.events == []  # the batch still runs: nothing was closed under it
    assert ssc.state == "stopping"

    output.release.set()
    assert ssc.await_termination(timeout=10) is True
    stepper.join(10)
    assert output.events == ["batch ended", "input closed", "executor shut down"]
    assert output.batches == [[1, 2]]
    assert ssc.status()["batches_completed"] == 1


def test_an_output_operation_that_stops_the_context_finishes_its_batch_before_inputs_close(make_context,
                                                                                             monkeypatch):
    ssc = make_context()
    events: list[str] = []

    def stop_from_inside(batch: Any) -> None:
        ssc.stop(graceful=True, timeout=0.1)
        events.append(f"batch ended with {batch.collect()}")

    numbers = ssc.queue_stream([[7]], name="numbers")
    numbers.foreach_batch(stop_from_inside)
    close = numbers.close
    monkeypatch.setattr(numbers, "close", lambda: (events.append("input closed"), close()))
    ssc.start()
    ssc.step()
    assert ssc.await_termination(timeout=10) is True
    assert events == ["batch ended with [7]", "input closed"]


def test_a_graceful_stop_that_times_out_without_wal_fails_with_the_count_of_records_lost(make_context, caplog):
    ssc = make_context()
    recorder = StopRecorder()
    ssc.add_listener(recorder)
    receiver = Idle("idle")
    output = BlockingOutput()
    ssc.receiver_stream(receiver, name="feed").foreach_batch(output)
    ssc.start()
    receiver.store_batch(["a"])
    stepper = run_first_batch_in_background(ssc)
    assert output.entered.wait(10)
    receiver.store_batch(["b", "c"])  # after the running batch was planned: for a batch the stop leaves no time for

    ssc.stop(graceful=True, timeout=0.1)
    output.release.set()
    lost = "stopped with 2 received record(s) of input feed never processed and lost"
    with pytest.raises(ReceiverError, match=r"stopped with 2 received record\(s\) of input feed never processed"):
        ssc.await_termination(timeout=10)
    stepper.join(10)
    assert output.batches == [["a"]]
    (event,) = recorder.stopped
    assert event.error is not None and lost in event.error and "write_ahead_log=True" in event.error
    assert [r.levelno for r in caplog.records if lost in r.getMessage() and r.name == "ingest.context"] \
        == [logging.WARNING]


def test_an_immediate_stop_without_wal_counts_stored_and_buffered_records_as_lost(make_context, caplog):
    ssc = make_context(batch_interval=60.0, block_interval=60.0)  # store()d records stay buffered
    recorder = StopRecorder()
    ssc.add_listener(recorder)
    receiver = Idle("idle")
    ssc.receiver_stream(receiver, name="feed").foreach_batch(print)
    ssc.start()
    receiver.store_batch(["a", "b"])
    receiver.store("c")

    ssc.stop(graceful=False)
    assert ssc.await_termination(timeout=10) is True  # a stop "now" asked for the loss: not an error
    (event,) = recorder.stopped
    assert event.error is not None
    assert event.error.startswith("stopped with 3 received record(s) of input feed never processed and lost")
    assert any(r.levelno == logging.WARNING and "3 received record(s) of input feed" in r.getMessage()
               for r in caplog.records)


def wal_context(make_context: Any, checkpoint: Path, **options: Any) -> Any:
    options.setdefault("batch_interval", 60.0)
    options.setdefault("block_interval", 60.0)  # store()d records stay buffered until the stop
    ssc = make_context(write_ahead_log=True, **options)
    ssc.checkpoint(str(checkpoint))
    return ssc


def test_with_wal_records_buffered_at_an_immediate_stop_are_processed_after_restart(make_context, collect,
                                                                                   tmp_path):
    ssc = wal_context(make_context, tmp_path)
    recorder = StopRecorder()
    ssc.add_listener(recorder)
    receiver = Idle("idle")
    ssc.receiver_stream(receiver, name="feed").foreach_batch(print)
    ssc.start()
    for record in ["x", "y", "z"]:
        receiver.store(record)
    ssc.stop(graceful=False)
    assert recorder.stopped[0].error is None

    again = wal_context(make_context, tmp_path)
    out = collect(again.receiver_stream(Idle("idle"), name="feed"))
    again.start()
    again.step()
    assert out == [["x", "y", "z"]]


def test_with_wal_records_a_timed_out_graceful_stop_left_are_processed_after_restart(make_context, collect,
                                                                                    tmp_path):
    ssc = wal_context(make_context, tmp_path, batch_interval=1.0, block_interval=1.0)
    receiver = Idle("idle")
    output = BlockingOutput()
    ssc.receiver_stream(receiver, name="feed").foreach_batch(output)
    ssc.start()
    receiver.store_batch(["a"])
    stepper = run_first_batch_in_background(ssc)
    assert output.entered.wait(10)
    receiver.store_batch(["b", "c"])
    ssc.stop(graceful=True, timeout=0.1)
    output.release.set()
    assert ssc.await_termination(timeout=10) is True
    stepper.join(10)
    assert output.batches == [["a"]]

    again = wal_context(make_context, tmp_path, batch_interval=1.0, block_interval=1.0)
    out = collect(again.receiver_stream(Idle("idle"), name="feed"))
    again.start()
    again.step()
    assert out == [["b", "c"]]
