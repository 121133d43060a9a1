"""The pull stream against a real Flume 1.11 agent running our pull sink (built from
docker/flume-sink with Maven): seq source -> memory channel -> PullSink, polled
by `flume_polling_stream`. Flume's shutdown counters say whether the channel
ended empty."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from ingest.testing.flume import agent_config, memory_channel, pull_sink, seq_source
from ingest.testing.jvm import free_port
from receivers import FlumeEvent, flume_polling_stream

pytestmark = pytest.mark.flume

DELIVERY_WAIT = 60.0

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
