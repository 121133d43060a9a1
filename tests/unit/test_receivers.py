"""Specification of the Receiver API: storing, graceful stop, restarts and
errors, block tracking, backpressure and rate limiting."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import pytest

import receivers.rate_limiter as rate_limiter_module
from ingest import ConfigError, StateError, StreamingListener
from ingest.errors import ReceiverError, StorageError
from ingest.listener import ReceiverError as ReceiverErrorEvent
from ingest.listener import ReceiverStarted
from offsets import ReceivedBlocks
from receivers import BlockGenerator, BlockInfo, RateLimiter, ReceivedBlockTracker, Receiver


class Recorder(StreamingListener):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


for _method in [m for m in vars(StreamingListener) if m.startswith("on_")]:
    setattr(Recorder, _method, lambda self, event: self.events.append(event))


class ThreadReceiver(Receiver[Any]):
    """Runs `body(self, start_number)` on a thread of its own for every start;
    `on_stop` joins it."""

    def __init__(self, body: Callable[["ThreadReceiver", int], None], name: str = "test-receiver") -> None:
        super().__init__(name)
        self.body = body
        self.starts = 0
        self.done = threading.Event()
        self._thread: threading.Thread | None = None

    def on_start(self) -> None:
        self.starts += 1
        self._thread = threading.Thread(target=self.body, args=(self, self.starts))
        self._thread.start()

    def on_stop(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)


def flatten(batches: list[list[Any]]) -> list[Any]:
    return [r for b in batches for r in b]


# -- storing and graceful stop -------------------------------------------------------------------


def test_graceful_stop_processes_every_record_already_stored(make_context, collect):
    records = [f"r{i}" for i in range(5000)]

    def store_all(r: ThreadReceiver, _n: int) -> None:
        for item in records:
            r.store(item)
        r.done.set()

    ssc = make_context()
    receiver = ThreadReceiver(store_all)
    out = collect(ssc.receiver_stream(receiver))
    ssc.start()
    assert receiver.done.wait(10)
    ssc.stop(graceful=True)
    assert flatten(out) == records


def test_stored_records_reach_the_next_batch_once_their_block_is_cut(make_context, collect, wait_until):
    def store_all(r: ThreadReceiver, _n: int) -> None:
        for i in range(100):
            r.store(i)
        r.done.set()

    ssc = make_context(block_interval=0.01)
    stream = ssc.receiver_stream(ThreadReceiver(store_all))
    out = collect(stream)
    ssc.start()
    wait_until(lambda: stream.records_received == 100, what="100 records stored in blocks")
    ssc.step(2)
    assert out == [list(range(100)), []]


def test_store_batch_returns_the_block_id_only_once_the_block_is_tracked(make_context, monkeypatch):
    ids: queue.Queue[str] = queue.Queue()

    def store_one_block(r: ThreadReceiver, _n: int) -> None:
        ids.put(r.store_batch(["a", "b"], metadata={"partition": 3, "offset": 41}))

    ssc = make_context()
    stream = ssc.receiver_stream(ThreadReceiver(store_one_block), name="orders")
    add_block = stream.tracker.add_block

    def slow_add_block(info: BlockInfo) -> None:
        time.sleep(0.2)  # a slow block store: store_batch must wait for it
        add_block(info)

    monkeypatch.setattr(stream.tracker, "add_block", slow_add_block)
    seen: list[tuple[list[Any], Any]] = []
    stream.foreach_batch(lambda b: seen.append((b.collect(), b.positions["orders"])))
    ssc.start()
    block_id = ids.get(timeout=10)
    ssc.step(1)  # planned right after store_batch returned
    assert seen == [(["a", "b"], ReceivedBlocks((
        BlockInfo(block_id, "orders", 2, {"partition": 3, "offset": 41}),)))]


def test_blocks_leave_the_block_store_when_their_batch_commits(make_context):
    ids: queue.Queue[str] = queue.Queue()
    ssc = make_context()
    stream = ssc.receiver_stream(ThreadReceiver(lambda r, _n: ids.put(r.store_batch([1, 2, 3]))), name="nums")
    plans: list[Any] = []
    stream.foreach_batch(lambda b: plans.append(b.positions["nums"]))
    ssc.start()
    ids.get(timeout=10)
    ssc.step(1)
    info = plans[0].blocks[0]
    assert info.num_records == 3
    assert stream.store.get(info) is None


def test_a_receiver_attached_to_two_streams_is_refused(make_context):
    ssc = make_context()
    receiver = ThreadReceiver(lambda r, n: None)
    ssc.receiver_stream(receiver).foreach_batch(print)
    ssc.start()
    other = make_context()
    with pytest.raises(ConfigError, match="already used by another stream"):
        other.receiver_stream(receiver)


@pytest.mark.parametrize("options,message", [
    ({"max_buffered_records": 0}, "max_buffered_records must be a positive integer, got 0"),
    ({"max_queued_blocks": -1}, "max_queued_blocks must be a positive integer, got -1"),
    ({"max_rate": 0}, "max_rate must be a positive number"),
    ({"max_rate": -5.0}, "max_rate must be a positive number"),
])
def test_bad_receiver_options_are_refused(make_context, options, message):
    ssc = make_context()
    with pytest.raises(ConfigError, match=message):
        ssc.receiver_stream(ThreadReceiver(lambda r, n: None), **options)


def test_receiver_stream_needs_a_receiver(make_context):
    ssc = make_context()
    with pytest.raises(ConfigError, match="needs a receivers.Receiver, got list"):
        ssc.receiver_stream([1, 2, 3])


def test_store_before_the_receiver_is_attached_raises_state_error():
    receiver = ThreadReceiver(lambda r, n: None)
    with pytest.raises(StateError, match="not attached to a stream"):
        receiver.store(1)


# -- restarts and errors ---------------------------------------------------------------------------


class FlakyStart(Receiver[str]):
    """on_start fails `failures` times, then stores one record per start."""

    def __init__(self, failures: int) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.starts = 0
        self.stored = threading.Event()

    def on_start(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            raise OSError(f"source unavailable ({self.starts})")
        self.store(f"start-{self.starts}")
        self.stored.set()

    def on_stop(self) -> None:
        pass


def test_a_receiver_whose_on_start_raises_is_restarted_and_listeners_hear_of_it(make_context, collect, wait_until):
    ssc = make_context(block_interval=0.01)
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = FlakyStart(failures=3)
    stream = ssc.receiver_stream(receiver, name="flaky-stream", restart_delay=0.01, max_restart_delay=0.02)
    out = collect(stream)
    ssc.start()
    assert receiver.stored.wait(10)
    wait_until(lambda: stream.records_received == 1, what="the record of the fourth start")
    ssc.step(1)
    assert out == [["start-4"]]

    errors = [e.info for e in recorder.of(ReceiverErrorEvent)]
    assert [i.restarts for i in errors] == [1, 2, 3]
    for n, info in enumerate(errors, start=1):
        assert info.stream == "flaky-stream" and info.receiver == "flaky"
        assert info.last_error_message.startswith(f"could not start: OSError: source unavailable ({n}); restarting in")
        assert info.last_error == f"OSError: source unavailable ({n})"
    started = recorder.of(ReceiverStarted)
    assert len(started) == 1 and started[0].info.restarts == 3
    receivers = ssc.status()["receivers"]
    assert receivers["flaky-stream"]["restarts"] == 3
    assert receivers["flaky-stream"]["active"] is True


def test_a_receiver_that_calls_restart_is_started_again_and_keeps_its_records(make_context, collect, wait_until):
    def body(r: ThreadReceiver, start: int) -> None:
        r.store(f"conn{start}-first")
        if start == 1:
            r.restart("lost the source", ConnectionResetError("reset by peer"), delay=0.01)
            return
        r.store(f"conn{start}-second")
        r.done.set()

    ssc = make_context(block_interval=0.01)
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = ThreadReceiver(body)
    stream = ssc.receiver_stream(receiver, name="source")
    out = collect(stream)
    ssc.start()
    assert receiver.done.wait(10)
    wait_until(lambda: stream.records_received == 3, what="three records stored")
    ssc.step(1)
    assert out == [["conn1-first", "conn2-first", "conn2-second"]]
    assert receiver.starts == 2
    (error,) = [e.info for e in recorder.of(ReceiverErrorEvent)]
    assert error.last_error_message.startswith("lost the source; restarting in")
    assert error.last_error == "ConnectionResetError: reset by peer"
    assert error.restarts == 1
    assert ssc.status()["receivers"]["source"]["restarts"] == 1


def test_repeated_restarts_back_off_up_to_the_maximum_delay(make_context):
    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = FlakyStart(failures=4)
    ssc.receiver_stream(receiver, restart_delay=0.1, max_restart_delay=0.4).foreach_batch(print)
    ssc.start()
    assert receiver.stored.wait(10)
    delays = [e.info.last_error_message.split("restarting in ")[1].split(" s")[0]
              for e in recorder.of(ReceiverErrorEvent)]
    assert delays == ["0.1", "0.2", "0.4", "0.4"]


def test_stopping_the_job_while_a_restart_is_requested_leaves_no_thread_running(make_context):
    class StopOnFirstError(StreamingListener):
        """Stops the job from inside the restart request, the moment it is reported."""

        def on_receiver_error(self, event):
            stopper = threading.Thread(target=ssc.stop, kwargs={"graceful": False})
            stopper.start()
            stopper.join(10)

    go = threading.Event()

    def lose_connection(r: ThreadReceiver, _n: int) -> None:
        go.wait(10)
        r.restart("connection lost", delay=0.01)

    receiver = ThreadReceiver(lose_connection)
    receiver.on_stop = lambda: None  # type: ignore[method-assign] # its thread is the one reporting
    ssc = make_context()
    ssc.add_listener(StopOnFirstError())
    ssc.receiver_stream(receiver, name="racy").foreach_batch(print)
    ssc.start()
    go.set()
    assert ssc.await_termination(timeout=10) is True
    assert ssc.error is None
    leftover = [t.name for t in threading.enumerate() if t.name.endswith("-racy")]
    assert leftover == []


def test_report_error_reaches_listeners_and_the_receiver_keeps_running(make_context, collect, wait_until):
    def body(r: ThreadReceiver, _n: int) -> None:
        r.store("before")
        r.report_error("skipped a malformed record", ValueError("bad json"))
        r.store("after")
        r.done.set()

    ssc = make_context(block_interval=0.01)
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = ThreadReceiver(body)
    stream = ssc.receiver_stream(receiver)
    out = collect(stream)
    ssc.start()
    assert receiver.done.wait(10)
    wait_until(lambda: stream.records_received == 2, what="two records stored")
    ssc.step(1)
    assert out == [["before", "after"]]
    (error,) = [e.info for e in recorder.of(ReceiverErrorEvent)]
    assert (error.last_error_message, error.last_error, error.restarts) == \
        ("skipped a malformed record", "ValueError: bad json", 0)
    assert receiver.starts == 1 and receiver.is_started()


def test_a_receiver_that_stops_with_an_error_stops_the_job_with_receiver_error(make_context):
    def body(r: ThreadReceiver, _n: int) -> None:
        r.stop("the source is gone for good", PermissionError("revoked"))

    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    ssc.receiver_stream(ThreadReceiver(body, name="doomed"), name="feed").foreach_batch(print)
    ssc.start()
    with pytest.raises(ReceiverError, match="receiver doomed of stream feed stopped: the source is gone for good: "
                                            "PermissionError: revoked"):
        ssc.await_termination(timeout=10)
    assert ssc.state == "stopped"
    assert recorder.of(ReceiverErrorEvent)[0].info.last_error == "PermissionError: revoked"


def test_a_receiver_that_stops_itself_without_error_leaves_the_job_running(make_context, collect, wait_until):
    def body(r: ThreadReceiver, _n: int) -> None:
        r.store("last words")
        r.stop("end of input")

    ssc = make_context(block_interval=0.01)
    receiver = ThreadReceiver(body)
    stream = ssc.receiver_stream(receiver)
    out = collect(stream)
    ssc.start()
    wait_until(receiver.is_stopped, what="the receiver to stop")
    wait_until(lambda: stream.records_received == 1, what="its record stored")
    ssc.step(1)
    assert out == [["last words"]]
    assert ssc.state == "active"


# -- supervised receiving threads (Receiver.start_thread) -------------------------------------------


class LoopReceiver(Receiver[Any]):
    """Runs `loop(self, start_number)` with `start_thread` on every start;
    `on_stop` runs `stopping(self)` (by default nothing: the supervisor joins
    the loop)."""

    def __init__(self, loop: Callable[["LoopReceiver", int], None],
                 stopping: Callable[["LoopReceiver"], None] = lambda r: None, name: str = "loop") -> None:
        super().__init__(name)
        self.loop, self.stopping = loop, stopping
        self.starts = 0
        self.threads: list[threading.Thread] = []

    def on_start(self) -> None:
        self.starts += 1
        n = self.starts
        self.threads.append(self.start_thread(lambda: self.loop(self, n), name=f"loop-{n}"))

    def on_stop(self) -> None:
        self.stopping(self)


def test_a_receiving_thread_that_raises_is_restarted_and_its_next_run_stores(make_context, collect, wait_until):
    def loop(r: LoopReceiver, n: int) -> None:
        if n == 1:
            raise ConnectionError("source dropped us")
        r.store_batch([f"run{n}"])

    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = LoopReceiver(loop)
    stream = ssc.receiver_stream(receiver, name="feed", restart_delay=0.01, max_restart_delay=0.02)
    out = collect(stream)
    ssc.start()
    wait_until(lambda: stream.records_received == 1, what="the second run's record")
    ssc.step(1)
    assert out == [["run2"]]
    (error,) = [e.info for e in recorder.of(ReceiverErrorEvent)]
    assert error.last_error_message.startswith("receiving thread loop-1 failed: ConnectionError: source dropped "
                                               "us; restarting in")
    assert error.restarts == 1
    assert ssc.state == "active" and ssc.error is None


def test_the_job_fails_after_max_consecutive_failures_failed_restarts(make_context):
    def loop(r: LoopReceiver, n: int) -> None:
        raise ConnectionError(f"refused ({n})")

    ssc = make_context()
    receiver = LoopReceiver(loop, name="hopeless")
    ssc.receiver_stream(receiver, name="feed", restart_delay=0.01, max_restart_delay=0.02,
                        max_consecutive_failures=2).foreach_batch(print)
    ssc.start()
    with pytest.raises(ReceiverError, match=r"receiver hopeless of stream feed failed 3 times in a row \(2 restarts "
                                            r"tried, max_consecutive_failures=2\); last: receiving thread loop-3 "
                                            r"failed: ConnectionError: refused \(3\)"):
        ssc.await_termination(timeout=10)
    assert receiver.starts == 3
    assert not any(t.is_alive() for t in receiver.threads)


def test_a_run_that_lasted_long_enough_starts_the_failure_count_again(make_context, wait_until):
    long_run = threading.Event()
    released = threading.Event()

    def loop(r: LoopReceiver, n: int) -> None:
        if n == 3:  # a run that lasts (on the context's clock) before it fails
            long_run.set()
            released.wait(10)
        if n < 5:
            raise ConnectionError(f"lost ({n})")
        r.store_batch(["run5"])

    ssc = make_context()
    stream = ssc.receiver_stream(LoopReceiver(loop), restart_delay=0.01, max_restart_delay=0.02,
                                 max_consecutive_failures=2)
    stream.foreach_batch(print)
    ssc.start()
    assert long_run.wait(10)
    ssc.clock.advance(31.0)  # longer than backoff_reset_after (30 s)
    released.set()
    wait_until(lambda: stream.records_received == 1, what="the fifth run to store")
    assert ssc.state == "active" and ssc.error is None
    assert stream.supervisor.consecutive_failures == 2  # runs 3 and 4; runs 1 and 2 were forgiven


def test_a_failing_on_start_counts_towards_max_consecutive_failures(make_context):
    ssc = make_context()
    ssc.receiver_stream(FlakyStart(failures=10), restart_delay=0.01, max_restart_delay=0.02,
                        max_consecutive_failures=1).foreach_batch(print)
    ssc.start()
    with pytest.raises(ReceiverError, match=r"failed 2 times in a row .*could not start: OSError: source "
                                            r"unavailable \(2\)"):
        ssc.await_termination(timeout=10)


def test_a_receiving_thread_that_raises_after_a_restart_began_is_reported_and_not_counted(make_context, wait_until):
    def loop(r: LoopReceiver, n: int) -> None:
        r.stop_event.wait(10)
        if n == 1:
            raise RuntimeError("connection closed under me")

    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    receiver = LoopReceiver(loop)
    ssc.receiver_stream(receiver, restart_delay=0.01, max_restart_delay=0.01,
                        max_consecutive_failures=0).foreach_batch(print)
    ssc.start()
    receiver.restart("switching servers", delay=0.01)
    wait_until(lambda: receiver.starts == 2, what="the second run")
    assert [e.info.last_error_message for e in recorder.of(ReceiverErrorEvent)] == [
        "switching servers; restarting in 0.0 s (restart #1)",
        "receiving thread loop-1 failed: RuntimeError: connection closed under me after the receiver was asked "
        "to stop",
    ]
    assert ssc.state == "active"  # not a failure of its own: max_consecutive_failures=0 would have stopped the job


def test_a_receiving_thread_that_cannot_store_stops_the_job_instead_of_restarting(make_context):
    def loop(r: LoopReceiver, n: int) -> None:
        raise StorageError("cannot append to the write-ahead log: No space left on device [ENOSPC]")

    ssc = make_context()
    receiver = LoopReceiver(loop, name="full")
    ssc.receiver_stream(receiver, name="feed").foreach_batch(print)
    ssc.start()
    with pytest.raises(ReceiverError, match=r"receiver full of stream feed stopped: receiving thread loop-1: received "
                                            r"records cannot be stored: StorageError: .*ENOSPC"):
        ssc.await_termination(timeout=10)
    assert receiver.starts == 1


@pytest.mark.parametrize("value", [-1, 1.5, True, "5"])
def test_max_consecutive_failures_must_be_an_integer_of_at_least_zero(make_context, value):
    with pytest.raises(ConfigError, match="max_consecutive_failures must be an integer >= 0"):
        make_context().receiver_stream(LoopReceiver(lambda r, n: None), max_consecutive_failures=value)


def test_store_batch_during_a_graceful_stop_is_stored_and_processed(make_context, collect):
    late_stored = threading.Event()

    def loop(r: LoopReceiver, _n: int) -> None:
        r.stop_event.wait(10)
        r.store_batch(["late"])  # the source had this in hand when the stop began
        late_stored.set()

    def stopping(_r: LoopReceiver) -> None:
        assert late_stored.wait(10)

    ssc = make_context()
    out = collect(ssc.receiver_stream(LoopReceiver(loop, stopping)))
    ssc.start()
    ssc.stop(graceful=True)
    assert out == [["late"]]
    assert ssc.error is None


def test_store_and_store_batch_after_the_receiver_stopped_raise_state_error(make_context):
    ssc = make_context()
    receiver = LoopReceiver(lambda r, n: None, name="done")
    ssc.receiver_stream(receiver, name="feed").foreach_batch(print)
    ssc.start()
    ssc.stop(graceful=True)
    with pytest.raises(StateError, match="stream feed: store_batch\\(\\) called after receiver done was stopped"):
        receiver.store_batch([1])
    with pytest.raises(StateError, match="stream feed: store\\(\\) called after the receiver was stopped"):
        receiver.store(1)


def test_a_receiving_thread_that_raises_during_a_graceful_stop_fails_the_stop_and_is_reported(make_context,
                                                                                                caplog):
    def loop(r: LoopReceiver, _n: int) -> None:
        r.stop_event.wait(10)
        raise RuntimeError("lost the records in hand")

    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    ssc.receiver_stream(LoopReceiver(loop, name="clumsy"), name="feed").foreach_batch(print)
    ssc.start()
    ssc.stop(graceful=True)
    assert isinstance(ssc.error, ReceiverError)
    assert "receiving thread loop-1 failed: RuntimeError: lost the records in hand during a graceful stop" \
        in str(ssc.error)
    (event,) = recorder.of(ReceiverErrorEvent)
    assert event.info.last_error == "RuntimeError: lost the records in hand"
    (record,) = [r for r in caplog.records if r.name == "receivers.supervisor" and r.exc_info]
    assert "while the receiver was stopping" in record.getMessage()
    assert str(record.exc_info[1]) == "lost the records in hand"


def test_a_receiving_thread_that_raises_during_an_immediate_stop_is_reported_but_not_the_jobs_error(make_context):
    def loop(r: LoopReceiver, _n: int) -> None:
        r.stop_event.wait(10)
        raise RuntimeError("interrupted")

    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    ssc.receiver_stream(LoopReceiver(loop)).foreach_batch(print)
    ssc.start()
    ssc.stop(graceful=False)
    assert ssc.error is None
    (event,) = recorder.of(ReceiverErrorEvent)
    assert event.info.last_error_message == ("receiving thread loop-1 failed: RuntimeError: interrupted while the "
                                             "receiver was stopping")


# -- block tracking ------------------------------------------------------------------------------


def test_block_allocation_is_idempotent_per_batch_and_never_goes_back():
    tracker = ReceivedBlockTracker()
    a, b, c = (BlockInfo(x, "s", 1) for x in "abc")
    tracker.add_block(a)
    tracker.add_block(b)
    assert tracker.allocate(2000) == [a, b]
    tracker.add_block(c)
    assert tracker.allocate(2000) == [a, b]  # asked again: the same blocks
    assert tracker.allocate(1000) == []  # an older batch gets nothing new
    assert tracker.has_unallocated()
    assert tracker.allocate(3000) == [c]
    assert tracker.cleanup(2000) == [a, b]
    assert tracker.blocks_of_batch(2000) == [] and tracker.blocks_of_batch(3000) == [c]


# -- backpressure -------------------------------------------------------------------------------------


def test_a_slow_block_store_blocks_store_instead_of_buffering_without_bound():
    max_buffered, max_queued, total = 30, 2, 600
    stored: list[int] = []
    accepted = [0]

    def slow_store(block) -> None:
        time.sleep(0.02)
        stored.extend(block.records)

    generator = BlockGenerator("bp", 5, slow_store, lambda msg, exc: None,
                               max_buffered_records=max_buffered, max_queued_blocks=max_queued)
    generator.start()
    worst = {"buffered": 0, "queued": 0, "in_flight": 0}
    finished = threading.Event()

    def produce() -> None:
        for i in range(total):
            generator.add(i)
            accepted[0] += 1
        finished.set()

    producer = threading.Thread(target=produce)
    producer.start()
    # In flight at most: the buffer, the queue, the block being queued by the cutter and the one being stored.
    bound = max_buffered * (max_queued + 3)
    while not finished.wait(0.002):
        worst["buffered"] = max(worst["buffered"], generator.buffered)
        worst["queued"] = max(worst["queued"], generator.queued)
        worst["in_flight"] = max(worst["in_flight"], accepted[0] - len(stored))
    producer.join()
    generator.stop(drain=True)
    assert worst["buffered"] <= max_buffered
    assert worst["queued"] <= max_queued
    assert worst["in_flight"] <= bound
    assert worst["buffered"] == max_buffered  # the buffer did fill: store() had to wait
    assert stored == list(range(total))


def test_a_generator_stopped_without_drain_counts_and_logs_the_records_it_did_not_store(caplog):
    stored: list[Any] = []
    generator = BlockGenerator("gen", 60_000, lambda block: stored.extend(block.records), lambda msg, exc: None)
    generator.start()
    for i in range(5):
        generator.add(i)
    generator.stop(drain=False, timeout=5)
    assert stored == [] and generator.records_dropped == 5
    assert [r.getMessage() for r in caplog.records if r.name == "receivers.block_generator"] == [
        "stream gen: 5 received records were not stored (the stop was not graceful)"]


def test_a_generator_whose_store_hangs_past_the_stop_timeout_counts_the_blocks_left_queued():
    entered, release, done = threading.Event(), threading.Event(), threading.Event()
    stored: list[Any] = []

    def hanging_store(block) -> None:
        entered.set()
        release.wait(10)
        stored.extend(block.records)
        done.set()

    generator = BlockGenerator("gen", 5, hanging_store, lambda msg, exc: None)
    generator.start()
    generator.add("first")
    assert entered.wait(10)  # the pusher holds the first block
    generator.add("second")
    generator.add("third")
    generator.stop(drain=True, timeout=0.2)
    assert generator.records_dropped == 2
    release.set()
    assert done.wait(10)
    assert stored == ["first"]  # the block in hand was stored; the two queued behind it were not


def test_with_a_slow_output_store_blocks_once_unprocessed_records_reach_the_bound(make_context, wait_until):
    accepted = [0]
    finished = threading.Event()

    def produce(r: ThreadReceiver, _n: int) -> None:
        for i in range(3000):
            if r.stop_event.is_set():
                return
            r.store(i)
            accepted[0] += 1
        finished.set()

    ssc = make_context(block_interval=0.01)  # no step(): the output never catches up
    stream = ssc.receiver_stream(ThreadReceiver(produce), max_buffered_records=100, max_queued_blocks=2,
                                 max_unprocessed_records=300)
    stream.foreach_batch(print)
    ssc.start()
    assert not finished.wait(1.0), "store() kept accepting although no batch ever committed"
    # stored and waiting for a batch (<= 300 + one block), queued (2 blocks), being cut (1), buffered (1)
    held_back = accepted[0]
    assert 300 <= held_back <= 300 + 100 * (1 + 2 + 1 + 1)
    ssc.step(1)  # a batch commits what was stored: store() may go on
    wait_until(lambda: accepted[0] >= held_back + 200, what="store() to accept records again")


# -- rate limiting ------------------------------------------------------------------------------------------


class FakeTime:
    """Stands in for the `time` module of the rate limiter: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


@pytest.fixture
def fake_time(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(rate_limiter_module, "time", fake)
    return fake


def test_rate_limiter_never_lets_more_than_rate_per_second_pass_plus_its_burst(fake_time):
    rate, burst = 100.0, 0.05
    limiter = RateLimiter(rate, burst_seconds=burst)
    passed_at = []
    for _ in range(1000):
        assert limiter.acquire(1)
        passed_at.append(fake_time.now)
    for i in range(0, 1000, 7):
        for j in range(i + 1, 1000, 7):
            assert j - i + 1 <= rate * (passed_at[j] - passed_at[i]) + rate * burst + 1
    # and it does not hold back more than needed: 1000 records take 10 s, less the burst
    assert 10.0 - burst - 0.02 <= passed_at[-1] - 1000.0 <= 10.0


def test_rate_limiter_allows_a_short_burst_after_idle_time(fake_time):
    limiter = RateLimiter(100.0, burst_seconds=0.05)
    fake_time.now += 60
    passed_without_waiting = 0
    while True:
        before = fake_time.slept
        limiter.acquire(1)
        if fake_time.slept > before:
            break
        passed_without_waiting += 1
    assert passed_without_waiting == 6  # 0.05 s worth of records, and the one due now


def test_rate_limiter_charges_a_big_batch_to_the_following_records(fake_time):
    limiter = RateLimiter(100.0, burst_seconds=0.0)
    start = fake_time.now
    assert limiter.acquire(300)  # passes at once...
    assert fake_time.now == start
    assert limiter.acquire(1)  # ...and the next record waits for those 3 s
    assert fake_time.now == pytest.approx(start + 3.0)


def test_rate_limiter_without_a_rate_never_waits_and_can_be_updated(fake_time):
    limiter = RateLimiter(None)
    for _ in range(10_000):
        limiter.acquire(1)
    assert fake_time.slept == 0
    limiter.update(10.0)
    assert limiter.rate == 10.0
    for _ in range(21):
        limiter.acquire(1)
    assert fake_time.slept == pytest.approx(2.0, abs=0.06)
    limiter.update(None)
    assert limiter.rate is None


def test_rate_limiter_gives_up_when_cancelled(fake_time):
    limiter = RateLimiter(1.0, burst_seconds=0.0)
    assert limiter.acquire(1)
    assert limiter.acquire(1, cancelled=lambda: True) is False


@pytest.mark.parametrize("rate", [0, -1.0, True])
def test_rate_limiter_refuses_a_rate_that_is_not_positive(rate):
    with pytest.raises(ConfigError, match="max_rate must be a positive number"):
        RateLimiter(rate)


def test_a_receiver_stream_with_max_rate_stores_no_faster_than_the_rate(make_context):
    rate = 200.0
    stored = [0]

    def produce(r: ThreadReceiver, _n: int) -> None:
        while not r.stop_event.is_set():
            try:
                r.store(stored[0])
            except StateError:
                return
            stored[0] += 1

    ssc = make_context(block_interval=0.05)
    ssc.receiver_stream(ThreadReceiver(produce), max_rate=rate).foreach_batch(print)
    start = time.monotonic()
    ssc.start()
    time.sleep(1.0)  # the measuring window
    count, elapsed = stored[0], time.monotonic() - start
    ssc.stop(graceful=False)
    assert count <= rate * elapsed + rate * 0.05 + 5
    assert count >= rate * elapsed * 0.5
