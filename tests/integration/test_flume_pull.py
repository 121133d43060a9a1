"""The pull stream against a real Flume 1.11 agent running our pull sink (built from
docker/flume-sink with Maven): seq source -> memory channel -> PullSink, polled
by `flume_polling_stream`. Flume's shutdown counters say whether the channel
ended empty."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.checkpoint import CheckpointLog
from ingest.testing.flume import agent_config, memory_channel, pull_sink, seq_source
from ingest.testing.jvm import free_port
from offsets import SequenceNumbers, position_to_data
from receivers import FlumeEvent, flume_polling_stream

pytestmark = pytest.mark.flume

DELIVERY_WAIT = 60.0
JOB = Path(__file__).parent / "jobs" / "flume_pull_job.py"

TAKE_ONE_BATCH_AND_WAIT = """
import sys, time
from receivers.flume.client import AvroIpcClient
from receivers.flume.protocols import PULL_PROTOCOL
client = AvroIpcClient(PULL_PROTOCOL, "127.0.0.1", int(sys.argv[1]))
while True:
    events = client.call("getEventBatch", {"n": 25})["events"]
    if events:
        print("took", len(events), flush=True)
        time.sleep(600)
    time.sleep(0.1)
"""


def pull_agent(flume_agent, flume_sink_jar, port: int, total: int, *, timeout_s: int = 60):
    return flume_agent(agent_config(sources={"r1": seq_source(total, batch_size=50)},
                                    channels={"c1": memory_channel()},
                                    sinks={"k1": pull_sink(port, timeout_s=timeout_s)}),
                       plugin_jars=[flume_sink_jar])


def drain(ssc, out, stream, count: int, wait_until) -> list:
    receiver_input = stream.parents[0]
    wait_until(lambda: receiver_input.records_received >= count, timeout=DELIVERY_WAIT,
               what=f"{count} events received")
    ssc.step(1)
    return [record for batch in out for record in batch]


def channel_size_at_stop(agent) -> int:
    agent.stop()
    return agent.shutdown_metrics()[("CHANNEL", "c1")]["channel.current.size"]


def test_polled_events_arrive_once_with_headers_and_the_channel_ends_empty(make_context, collect, flume_agent,
                                                                           flume_sink_jar, wait_until):
    port = free_port()
    agent = pull_agent(flume_agent, flume_sink_jar, port, 600)
    ssc = make_context(block_interval=0.05)
    events = flume_polling_stream(ssc, [("127.0.0.1", port)], max_batch_size=100, parallelism=2)
    out = collect(events)
    ssc.start()
    received = drain(ssc, out, events, 600, wait_until)
    assert all(isinstance(e, FlumeEvent) and isinstance(e.headers, dict) for e in received)
    assert sorted(int(e.body) for e in received) == list(range(600))
    receiver = events.parents[0].receiver
    wait_until(lambda: receiver.events_received == 600, what="the last ack")
    ssc.stop(graceful=True)
    assert channel_size_at_stop(agent) == 0


def test_a_nacked_batch_is_delivered_again(make_context, collect, flume_agent, flume_sink_jar, wait_until):
    port = free_port()
    agent = pull_agent(flume_agent, flume_sink_jar, port, 300)
    ssc = make_context(block_interval=0.05)
    events = flume_polling_stream(ssc, [("127.0.0.1", port)], max_batch_size=40, body_only=True,
                                  value_deserializer="utf-8", restart_delay=0.1, max_restart_delay=0.2)
    out = collect(events)
    receiver = events.parents[0].receiver
    real_store = receiver.store_batch
    refused = []

    def store_failing_once(items, metadata=None):
        if not refused:
            refused.append(metadata)
            raise OSError("injected: disk full")
        return real_store(items, metadata)

    receiver.store_batch = store_failing_once
    ssc.start()
    received = drain(ssc, out, events, 300, wait_until)
    assert sorted(map(int, received)) == list(range(300))
    assert receiver.batches_nacked == 1 and refused[0]["events"] == 40
    wait_until(lambda: receiver.events_received == 300, what="the last ack")
    ssc.stop(graceful=True)
    assert channel_size_at_stop(agent) == 0


def test_a_batch_taken_by_a_job_that_died_before_acking_comes_again(make_context, collect, flume_agent,
                                                                    flume_sink_jar, wait_until):
    port = free_port()
    agent = pull_agent(flume_agent, flume_sink_jar, port, 200, timeout_s=2)
    # A job that took a batch and is SIGKILLed before it acks: the sink rolls the
    # batch back after its 2 s timeout.
    dying_job = subprocess.Popen([sys.executable, "-c", TAKE_ONE_BATCH_AND_WAIT, str(port)],
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert dying_job.stdout.readline().strip() == "took 25"
    finally:
        dying_job.send_signal(signal.SIGKILL)
        dying_job.communicate(timeout=30)
    ssc = make_context(block_interval=0.05)
    events = flume_polling_stream(ssc, [("127.0.0.1", port)], max_batch_size=100, body_only=True)
    out = collect(events)
    ssc.start()
    received = drain(ssc, out, events, 200, wait_until)
    assert sorted(int(b) for b in received) == list(range(200))
    agent.wait_for_log(r"not acked within 2 s; rolling back")
    receiver = events.parents[0].receiver
    wait_until(lambda: receiver.events_received == 200, what="the last ack")
    ssc.stop(graceful=True)
    assert channel_size_at_stop(agent) == 0


def batch_files(out: Path, pid: int) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"batch-*-{pid}.json"))]


def test_a_batch_killed_before_its_commit_is_re_run_with_the_sequence_numbers_and_events_it_planned(
        tmp_path, flume_agent, flume_sink_jar):
    port = free_port()
    # A batch the killed job took and did not ack comes again after the sink's 2 s timeout.
    pull_agent(flume_agent, flume_sink_jar, port, 300, timeout_s=2)
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    out.mkdir()
    job = [sys.executable, str(JOB), str(ckpt), str(out), str(port)]
    # The first run kills itself after its first batch's output, before the commit.
    first = subprocess.Popen(job + ["--die-after-first-output"], stderr=subprocess.PIPE, text=True)
    _, stderr = first.communicate(timeout=DELIVERY_WAIT)
    assert first.returncode == -signal.SIGKILL, stderr
    (original,) = batch_files(out, first.pid)
    wire = dict(json.loads(line) for line in (out / "wire.log").read_text().splitlines())

    # Its intent names, for the agent's address, the sink's sequence numbers of the
    # batches it holds (as the sink sent them) and the blocks holding their events.
    planned = CheckpointLog(str(ckpt)).read_intent(original["time_ms"]).positions["pull"]
    assert isinstance(planned, SequenceNumbers) and position_to_data(planned) == original["position"]
    assert list(planned.by_source()) == [f"127.0.0.1:{port}"]
    assert planned.batches and {r.sequence: r.events for r in planned.batches}.items() <= wire.items()
    assert all(r.block is not None and r.block.wal_handle for r in planned.batches)
    assert 0 < planned.records == len(original["bodies"]) < 300  # the job is rate-limited: more comes later

    second = subprocess.Popen(job, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + DELIVERY_WAIT
        while {b for f in batch_files(out, second.pid) for b in f["bodies"]} != {str(i) for i in range(300)}:
            assert second.poll() is None, second.communicate()[1]
            assert time.monotonic() < deadline, "timed out waiting for the 300 events after the restart"
            time.sleep(0.1)
    finally:
        second.send_signal(signal.SIGKILL)
        second.communicate(timeout=30)
    rerun = batch_files(out, second.pid)[0]
    # The re-run batch is the original: same time, same plan, same events in the same order.
    assert rerun["recovered"] and rerun["time_ms"] == original["time_ms"]
    assert rerun["position"] == original["position"] and rerun["bodies"] == original["bodies"]
    # Every batch of both runs is named by its own sequence numbers, each as the sink sent it.
    wire = dict(json.loads(line) for line in (out / "wire.log").read_text().splitlines())
    named = [(r.sequence, r.events) for f in [original, *batch_files(out, second.pid)[1:]]
             for r in SequenceNumbers.from_body(f["position"], f["position"]["v"]).batches]
    assert len(named) == len(dict(named)) and set(named) <= set(wire.items())
