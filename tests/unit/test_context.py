"""Specification of `StreamingContext`: configuration, lifecycle, failures,
listener events, status, and the built-in output operations."""

from __future__ import annotations

import math
import re
import time

import pytest

from ingest import (
    BatchFailedError,
    ConfigError,
    ManualClock,
    StateError,
    StreamingContext,
    StreamingListener,
    SystemClock,
)
from ingest.listener import (
    BatchCompleted,
    BatchStarted,
    BatchSubmitted,
    OutputOperationCompleted,
    OutputOperationStarted,
    StreamingStarted,
    StreamingStopped,
    format_batch_time,
)


class Recorder(StreamingListener):
    """Keeps every event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[object] = []

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]


for _method in [m for m in vars(StreamingListener) if m.startswith("on_")]:
    setattr(Recorder, _method, lambda self, event: self.events.append(event))


# -- configuration errors at construction -------------------------------------------------


@pytest.mark.parametrize("options,message", [
    ({"batch_interval": 0}, "batch_interval must be a positive number of seconds, got 0"),
    ({"batch_interval": -1.0}, "batch_interval must be a positive number of seconds"),
    ({"batch_interval": math.nan}, "batch_interval must be a positive number of seconds"),
    ({"batch_interval": math.inf}, "batch_interval must be a positive number of seconds"),
    ({"batch_interval": "1"}, "batch_interval must be a positive number of seconds, got '1'"),
    ({"batch_interval": True}, "batch_interval must be a positive number of seconds"),
    ({"batch_interval": 0.0005}, "whole number of milliseconds"),
    ({"batch_interval": 1.0, "block_interval": 2.0}, r"block_interval \(2.0 s\) must not exceed batch_interval \(1.0 s\)"),
    ({"batch_interval": 1.0, "block_interval": 0}, "block_interval must be a positive number of seconds"),
    ({"batch_interval": 1.0, "executor": "gpu"}, "unknown executor 'gpu'.*'inline', 'threads', 'processes'"),
    ({"batch_interval": 1.0, "executor": "threads", "parallelism": -2}, "parallelism must be a positive integer .* got -2"),
    ({"batch_interval": 1.0, "executor": "threads", "parallelism": 0}, "parallelism must be a positive integer .* got 0"),
    ({"batch_interval": 1.0, "max_batch_retries": -1}, "max_batch_retries must be an integer >= 0, got -1"),
    ({"batch_interval": 1.0, "max_batch_retries": 1.5}, "max_batch_retries must be an integer >= 0"),
    ({"batch_interval": 1.0, "clock": "wall"}, "clock must be a SystemClock or ManualClock, got str"),
])
def test_bad_options_are_refused_at_construction_with_a_config_error(options, message):
    with pytest.raises(ConfigError, match=message):
        StreamingContext(stop_on_signal=False, **options)


def test_config_error_is_also_a_value_error():
    with pytest.raises(ValueError):
        StreamingContext(batch_interval=-1)


@pytest.mark.parametrize("port,message", [
    (0, "port must be an integer in 1..65535, got 0"),
    (65536, "port must be an integer in 1..65535, got 65536"),
    ("7777", "port must be an integer in 1..65535, got '7777'"),
    (True, "port must be an integer in 1..65535, got True"),
])
def test_socket_stream_with_a_bad_port_is_refused(make_context, port, message):
    ssc = make_context()
    with pytest.raises(ConfigError, match=message):
        ssc.socket_text_stream("127.0.0.1", port)


@pytest.mark.parametrize("options,message", [
    ({"host": ""}, "host must be a non-empty string"),
    ({"errors": "ignore"}, "errors must be one of"),
    ({"encoding": "no-such-codec"}, "unknown encoding 'no-such-codec'"),
])
def test_socket_stream_with_bad_options_is_refused(make_context, options, message):
    ssc = make_context()
    kwargs = {"host": "127.0.0.1", "port": 9, **options}
    host = kwargs.pop("host")
    port = kwargs.pop("port")
    with pytest.raises(ConfigError, match=message):
        ssc.socket_text_stream(host, port, **kwargs)


def test_start_without_an_output_operation_is_refused_and_can_be_retried(make_context, collect):
    ssc = make_context()
    numbers = ssc.queue_stream([[1, 2]])
    with pytest.raises(ConfigError, match="no output operation is registered.*pprint\\(\\), foreach_batch\\(\\)"):
        ssc.start()
    assert ssc.state == "initialized"
    out = collect(numbers)
    ssc.start()
    ssc.step(1)
    assert out == [[1, 2]]


@pytest.mark.parametrize("name,message", [
    ("has space", "input name 'has space' is not usable"),
    ("-dash-first", "is not usable"),
])
def test_input_names_must_be_usable_as_file_names(make_context, name, message):
    ssc = make_context()
    with pytest.raises(ConfigError, match=message):
        ssc.queue_stream([], name=name)


def test_two_inputs_with_one_name_are_refused(make_context):
    ssc = make_context()
    ssc.queue_stream([], name="orders")
    with pytest.raises(ConfigError, match="two inputs are named 'orders'"):
        ssc.queue_stream([], name="orders")


def test_repartition_to_zero_partitions_is_refused(make_context):
    ssc = make_context()
    with pytest.raises(ConfigError, match=r"repartition\(0\)"):
        ssc.queue_stream([]).repartition(0)


def test_streams_of_different_contexts_cannot_be_combined(make_context):
    one, other = make_context(), make_context()
    with pytest.raises(ConfigError, match="another StreamingContext"):
        one.queue_stream([]).union(other.queue_stream([]))


# -- lifecycle and state errors ---------------------------------------------------------------


def test_adding_streams_or_outputs_after_start_raises_state_error(make_context, collect):
    ssc = make_context()
    numbers = ssc.queue_stream([[1]])
    collect(numbers)
    ssc.start()
    with pytest.raises(StateError, match="after the StreamingContext started"):
        ssc.queue_stream([[2]])
    with pytest.raises(StateError, match="after the StreamingContext started"):
        numbers.map(str)
    with pytest.raises(StateError, match="after the StreamingContext started"):
        numbers.foreach_batch(print)
    ssc.step(1)  # the running graph is unaffected


def test_start_twice_and_restart_after_stop_raise_state_error(make_context, collect):
    ssc = make_context()
    collect(ssc.queue_stream([]))
    ssc.start()
    with pytest.raises(StateError, match="already called"):
        ssc.start()
    ssc.stop()
    with pytest.raises(StateError, match="cannot be restarted"):
        ssc.start()


def test_step_needs_a_manual_clock_and_an_active_context(make_context, collect):
    real = make_context(clock=SystemClock())
    with pytest.raises(StateError, match="ManualClock"):
        real.step()
    manual = make_context()
    collect(manual.queue_stream([]))
    with pytest.raises(StateError, match="active context"):
        manual.step()
    with pytest.raises(StateError, match="before start"):
        manual.await_termination(0)


def test_step_runs_exactly_the_batches_asked_for_at_consecutive_times(make_context):
    ssc = make_context(clock=ManualClock(start=100.0), batch_interval=0.5)
    times: list[int] = []
    ssc.queue_stream([]).foreach_batch(lambda b: times.append(b.time))
    ssc.start()
    ssc.step(3)
    ssc.step()
    assert times == [100_500, 101_000, 101_500, 102_000]


def test_await_termination_returns_false_while_running_and_true_after_stop(make_context, collect):
    ssc = make_context()
    collect(ssc.queue_stream([]))
    ssc.start()
    assert ssc.await_termination(timeout=0.01) is False
    ssc.stop()
    assert ssc.await_termination(timeout=5) is True
    assert ssc.state == "stopped"
    ssc.stop()  # idempotent


def test_graceful_stop_runs_the_batches_still_queued(make_context, collect):
    ssc = make_context()
    out = collect(ssc.queue_stream([[1], [2, 3], [4], [5, 6]]))
    ssc.start()
    ssc.step(1)
    ssc.stop(graceful=True)
    assert out == [[1], [2, 3], [4], [5, 6]]


def test_stop_without_grace_does_not_run_further_batches(make_context, collect):
    ssc = make_context()
    out = collect(ssc.queue_stream([[1], [2, 3], [4]]))
    ssc.start()
    ssc.step(1)
    ssc.stop(graceful=False)
    assert out == [[1]]


def test_leaving_a_with_block_stops_the_context_gracefully(make_context, collect):
    ssc = make_context()
    out = collect(ssc.queue_stream([[1], [2]]))
    with ssc:
        ssc.start()
    assert ssc.state == "stopped"
    assert out == [[1], [2]]


# -- failures ----------------------------------------------------------------------------------


def test_an_output_that_raises_stops_the_context_with_an_error_naming_batch_and_operation(make_context):
    ssc = make_context()
    seen: list[int] = []

    def write_to_db(batch):
        seen.extend(batch.collect())
        if 2 in batch.collect():
            raise RuntimeError("database is down")

    ssc.queue_stream([[1], [2], [3]]).foreach_batch(write_to_db, name="write-to-db")
    ssc.start()
    ssc.step(1)
    with pytest.raises(BatchFailedError) as raised:
        ssc.step(1)
    error = raised.value
    message = str(error)
    assert f"batch {format_batch_time(2000)} (2000)" in message
    assert "output operation #1 write-to-db at test_context.py:" in message
    assert "RuntimeError: database is down" in message
    assert "not committed" in message
    assert error.batch_time_ms == 2000
    assert isinstance(error.__cause__, RuntimeError)
    with pytest.raises(BatchFailedError) as again:
        ssc.await_termination(timeout=10)
    assert again.value is error
    assert ssc.state == "stopped"
    assert ssc.error is error
    assert seen == [1, 2]  # the third batch never ran


def test_a_transformation_that_raises_fails_the_batch_through_its_output(make_context):
    ssc = make_context()
    ssc.queue_stream([[1, 0]]).map(lambda x: 1 // x).foreach_batch(lambda b: b.collect(), name="inverse")
    ssc.start()
    with pytest.raises(BatchFailedError, match="inverse.*ZeroDivisionError") as raised:
        ssc.step(1)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)


def test_the_second_of_two_outputs_failing_is_the_one_named(make_context):
    ssc = make_context()
    numbers = ssc.queue_stream([[1]])
    numbers.foreach_batch(lambda b: None, name="fine")
    numbers.foreach_batch(lambda b: [][0], name="broken")
    ssc.start()
    with pytest.raises(BatchFailedError, match=r"output operation #2 broken at .*IndexError"):
        ssc.step(1)


def test_a_retried_batch_sees_the_same_records_on_every_attempt(make_context):
    ssc = make_context(max_batch_retries=2)
    attempts: list[tuple[int, list[int]]] = []

    def flaky(batch):
        attempts.append((batch.attempt, batch.collect()))
        if len(attempts) < 3:
            raise ConnectionError("transient")

    ssc.queue_stream([[1, 2, 3]], num_partitions=2).map(lambda x: x * 10).foreach_batch(flaky)
    ssc.start()
    ssc.step(1)
    assert attempts == [(1, [10, 20, 30]), (2, [10, 20, 30]), (3, [10, 20, 30])]


def test_a_batch_that_succeeds_on_retry_commits_and_the_job_goes_on(make_context, collect):
    ssc = make_context(max_batch_retries=2)
    recorder = Recorder()
    ssc.add_listener(recorder)
    calls: list[int] = []

    def flaky(batch):
        calls.append(batch.attempt)
        if batch.time == 1000 and batch.attempt == 1:
            raise ConnectionError("transient")

    numbers = ssc.queue_stream([[1], [2]])
    numbers.foreach_batch(flaky)
    ssc.start()
    ssc.step(2)
    assert calls == [1, 2, 1]
    assert ssc.state == "active"
    assert [e.info.attempts for e in recorder.of(BatchCompleted)] == [2, 1]
    assert all(e.info.failure is None for e in recorder.of(BatchCompleted))


def test_a_batch_failing_every_attempt_stops_after_max_batch_retries_plus_one(make_context):
    ssc = make_context(max_batch_retries=2)
    recorder = Recorder()
    ssc.add_listener(recorder)
    calls: list[int] = []

    def always_failing(batch):
        calls.append(batch.attempt)
        raise ConnectionError("still down")

    ssc.queue_stream([[1]]).foreach_batch(always_failing, name="sink")
    ssc.start()
    with pytest.raises(BatchFailedError, match="after 3 attempts"):
        ssc.step(1)
    assert calls == [1, 2, 3]
    completed = recorder.of(BatchCompleted)
    assert len(completed) == 1
    assert completed[0].info.attempts == 3
    assert completed[0].info.failure == "ConnectionError: still down"


# -- listener events and status -------------------------------------------------------------------


def test_listeners_get_each_batchs_events_in_lifecycle_order_with_record_counts(make_context):
    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    numbers = ssc.queue_stream([[1, 2, 3], []], name="numbers")
    numbers.foreach_batch(lambda b: None, name="first")
    numbers.count().foreach_batch(lambda b: None, name="second")
    ssc.start()
    ssc.step(2)
    ssc.stop()

    per_batch = [BatchSubmitted, BatchStarted, OutputOperationStarted, OutputOperationCompleted,
                 OutputOperationStarted, OutputOperationCompleted, BatchCompleted]
    assert [type(e) for e in recorder.events] == [StreamingStarted] + per_batch * 2 + [StreamingStopped]

    submitted = [e.info for e in recorder.of(BatchSubmitted)]
    completed = [e.info for e in recorder.of(BatchCompleted)]
    assert [i.batch_time_ms for i in submitted] == [i.batch_time_ms for i in completed] == [1000, 2000]
    assert [i.num_records for i in submitted] == [i.num_records for i in completed] == [3, 0]
    assert completed[0].inputs["numbers"].num_records == 3
    assert completed[0].processing_delay_ms is not None and completed[0].processing_delay_ms >= 0
    assert completed[0].scheduling_delay_ms == 0  # the manual clock stands at the batch time
    assert all(i.failure is None and i.attempts == 1 for i in completed)
    assert [(op.id, op.name, op.failure) for op in completed[0].output_operations] == \
        [(1, "first", None), (2, "second", None)]

    started_ops = [e.info for e in recorder.of(OutputOperationStarted)]
    done_ops = [e.info for e in recorder.of(OutputOperationCompleted)]
    assert [(o.batch_time_ms, o.id, o.name) for o in started_ops] == \
        [(1000, 1, "first"), (1000, 2, "second"), (2000, 1, "first"), (2000, 2, "second")]
    assert all(o.duration_ms is not None and o.duration_ms >= 0 for o in done_ops)
    assert recorder.of(StreamingStopped)[0].error is None


def test_listeners_see_the_failure_of_an_output_and_of_the_job(make_context):
    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    ssc.queue_stream([[1]]).foreach_batch(lambda b: 1 / 0, name="divide")
    ssc.start()
    with pytest.raises(BatchFailedError):
        ssc.step(1)
    with pytest.raises(BatchFailedError):
        ssc.await_termination(10)
    op = recorder.of(OutputOperationCompleted)[0].info
    assert (op.name, op.failure) == ("divide", "ZeroDivisionError: division by zero")
    assert recorder.of(BatchCompleted)[0].info.failure == "ZeroDivisionError: division by zero"
    stopped = recorder.of(StreamingStopped)
    assert len(stopped) == 1 and stopped[0].error.startswith("BatchFailedError: batch ")


def test_a_listener_that_raises_does_not_disturb_the_job(make_context, collect):
    class Broken(StreamingListener):
        def on_batch_completed(self, event):
            raise RuntimeError("listener bug")

    ssc = make_context()
    ssc.add_listener(Broken())
    out = collect(ssc.queue_stream([[1], [2]]))
    ssc.start()
    ssc.step(2)
    assert out == [[1], [2]]
    assert ssc.state == "active"


def test_a_removed_listener_gets_no_more_events(make_context, collect):
    ssc = make_context()
    recorder = Recorder()
    ssc.add_listener(recorder)
    collect(ssc.queue_stream([[1], [2]]))
    ssc.start()
    ssc.step(1)
    ssc.remove_listener(recorder)
    ssc.step(1)
    assert [e.info.batch_time_ms for e in recorder.of(BatchCompleted)] == [1000]


def test_status_reports_state_batches_and_records(make_context, collect):
    ssc = make_context()
    collect(ssc.queue_stream([[1, 2], [3]], name="numbers"))
    before = ssc.status()
    assert before["state"] == "initialized"
    assert before["batches_completed"] == 0 and before["last_batch"] is None
    ssc.start()
    ssc.step(2)
    status = ssc.status()
    assert status["state"] == "active"
    assert status["batch_interval_s"] == 1.0
    assert (status["batches_completed"], status["batches_failed"], status["records_processed"]) == (2, 0, 3)
    last = status["last_batch"]
    assert (last["time_ms"], last["time"], last["records"], last["failure"]) == \
        (2000, format_batch_time(2000), 1, None)
    assert status["receivers"] == {}
    assert status["error"] is None
    ssc.stop()
    assert ssc.status()["state"] == "stopped"


def test_status_reports_the_error_the_job_stopped_with(make_context):
    ssc = make_context()
    ssc.queue_stream([[1]]).foreach_batch(lambda b: {}["missing"])
    ssc.start()
    with pytest.raises(BatchFailedError):
        ssc.step(1)
    with pytest.raises(BatchFailedError):
        ssc.await_termination(10)
    status = ssc.status()
    assert status["state"] == "stopped"
    assert status["batches_failed"] == 1
    assert status["error"].startswith("BatchFailedError: batch ") and "KeyError" in status["error"]


# -- pprint ---------------------------------------------------------------------------------------------

DASHES = "-" * 43


def header(time_ms: int) -> str:
    return f"{DASHES}\nTime: {format_batch_time(time_ms)}\n{DASHES}\n"


def test_pprint_prints_a_time_header_then_at_most_num_records_then_dots(make_context, capsys):
    ssc = make_context(log_batches=False)
    ssc.queue_stream([list(range(12)), ["a", "b", "c"], []]).pprint(num=3)
    ssc.start()
    ssc.step(3)
    ssc.stop()
    assert capsys.readouterr().out == (
        header(1000) + "0\n1\n2\n...\n\n"
        + header(2000) + "a\nb\nc\n\n"
        + header(3000) + "\n"
    )


def test_pprint_prints_ten_records_by_default(make_context, capsys):
    ssc = make_context(log_batches=False)
    ssc.queue_stream([[(i, str(i)) for i in range(11)]]).pprint()
    ssc.start()
    ssc.step(1)
    ssc.stop()
    out = capsys.readouterr().out
    assert out == header(1000) + "".join(f"({i}, '{i}')\n" for i in range(10)) + "...\n\n"


def test_pprint_time_header_is_a_readable_timestamp_with_milliseconds_when_needed(make_context, capsys):
    ssc = make_context(batch_interval=0.25, log_batches=False)
    ssc.queue_stream([]).pprint()
    ssc.start()
    ssc.step(4)
    ssc.stop()
    times = re.findall(r"^Time: (.*)$", capsys.readouterr().out, flags=re.M)
    assert len(times) == 4
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{3})?", t) for t in times)
    assert [t[-4:] for t in times[:3]] == [".250", ".500", ".750"]
    assert "." not in times[3]


# -- save_as_text_files ------------------------------------------------------------------------------------


def test_save_as_text_files_writes_a_directory_per_batch_with_a_file_per_partition(make_context, tmp_path):
    ssc = make_context()
    numbers = ssc.queue_stream([[1, 2, 3, 4, 5], [], ["x"]], num_partitions=2)
    partitions: list[list[list[object]]] = []
    numbers.foreach_batch(lambda b: partitions.append(b.partitions()))
    numbers.save_as_text_files(str(tmp_path / "out" / "nums"), "txt")
    ssc.start()
    ssc.step(3)
    ssc.stop()

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["nums-1000.txt", "nums-2000.txt", "nums-3000.txt"]
    for time_ms, parts in zip((1000, 2000, 3000), partitions, strict=True):
        directory = out / f"nums-{time_ms}.txt"
        assert sorted(p.name for p in directory.iterdir()) == ["_SUCCESS", "part-00000", "part-00001"]
        assert len(parts) == 2
        for i, records in enumerate(parts):
            assert (directory / f"part-{i:05d}").read_text() == "".join(f"{r}\n" for r in records)
    assert (out / "nums-1000.txt" / "part-00000").read_text() + (out / "nums-1000.txt" / "part-00001").read_text() \
        == "1\n2\n3\n4\n5\n"


def test_save_as_text_files_without_suffix_names_directories_by_prefix_and_time(make_context, tmp_path):
    ssc = make_context()
    ssc.queue_stream([["a"]]).save_as_text_files(str(tmp_path / "lines"))
    ssc.start()
    ssc.step(1)
    ssc.stop()
    assert (tmp_path / "lines-1000" / "part-00000").read_text() == "a\n"
    assert (tmp_path / "lines-1000" / "_SUCCESS").exists()


def test_a_rerun_batch_replaces_its_output_directory_as_a_whole(make_context, tmp_path):
    prefix = str(tmp_path / "out" / "batch")
    first = make_context()
    first.queue_stream([["old-1", "old-2", "old-3"]], num_partitions=3).save_as_text_files(prefix)
    first.start()
    first.step(1)
    first.stop()
    directory = tmp_path / "out" / "batch-1000"
    assert sorted(p.name for p in directory.iterdir()) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]

    second = make_context()  # the same batch time again, as after a restart
    second.queue_stream([["new"]]).save_as_text_files(prefix)
    second.start()
    second.step(1)
    second.stop()
    assert sorted(p.name for p in directory.iterdir()) == ["_SUCCESS", "part-00000"]
    assert (directory / "part-00000").read_text() == "new\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["batch-1000"]  # no temporary leftovers


def test_step_raises_the_error_of_a_batch_that_failed_before_it_was_called(tmp_path):
    """A batch re-run at start() (from the intent log) can fail before the
    first step(); step() then raises that failure, not a state error."""
    from ingest import BatchFailedError, ManualClock, StreamingContext

    def build(fail: bool) -> StreamingContext:
        ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        ssc.checkpoint(str(tmp_path))
        stream = ssc.queue_stream([[1], [2]], name="q")

        def out(batch):
            if fail:
                raise RuntimeError("the sink is down")

        stream.foreach_batch(out)
        return ssc

    first = build(fail=True)
    first.start()
    with pytest.raises(BatchFailedError):
        first.step()
    with pytest.raises(BatchFailedError):
        first.await_termination(10)
    second = build(fail=True)
    second.start()  # re-runs the uncommitted batch at once, which fails again
    deadline = time.monotonic() + 10
    while second.state == "active" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.state != "active"
    with pytest.raises(BatchFailedError, match="the sink is down"):
        second.step()


def test_a_failed_step_returns_once_the_context_let_go_of_its_checkpoint(tmp_path):
    """The failure step() raises has stopped the context: a new context on the
    same checkpoint starts at once (the single-writer lock is released)."""
    from ingest import BatchFailedError, ManualClock, StreamingContext

    def build(fail: bool) -> StreamingContext:
        ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        ssc.checkpoint(str(tmp_path))
        seen = []

        def out(batch):
            if fail:
                raise RuntimeError("the sink is down")
            seen.extend(batch.collect())

        ssc.queue_stream([[1], [2]], name="q").foreach_batch(out)
        ssc.seen = seen  # type: ignore[attr-defined]
        return ssc

    first = build(fail=True)
    first.start()
    with pytest.raises(BatchFailedError):
        first.step()
    assert first.state == "stopped"
    second = build(fail=False)
    second.start()  # no "checkpoint is in use"
    second.step()
    second.stop()
    assert second.seen == [1, 2]  # type: ignore[attr-defined]  # the failed batch re-run, then the next
