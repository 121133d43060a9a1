"""The Flume agent fixture itself: a real Flume 1.11 agent from Maven Central jars,
started from a generated configuration and stopped with its files deleted."""

from __future__ import annotations

import socket

import pytest

from ingest.testing.flume import agent_config, memory_channel, netcat_source, null_sink
from ingest.testing.jvm import free_port

pytestmark = pytest.mark.flume


def test_an_agent_runs_its_configuration_and_leaves_nothing_behind(flume_agent):
    port = free_port()
    agent = flume_agent(agent_config(sources={"r1": netcat_source(port)}, channels={"c1": memory_channel()},
                                     sinks={"k1": null_sink(batch_size=1)}))
    assert agent.started_components() >= {"r1", "c1", "k1"}
    workdir = agent.workdir
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        reader = conn.makefile("rb")
        for i in range(5):
            conn.sendall(f"line {i}\n".encode())
            assert reader.readline() == b"OK\n"  # the netcat source acknowledges each event
    agent.stop()
    metrics = agent.shutdown_metrics()
    assert metrics[("CHANNEL", "c1")]["channel.event.put.success"] == 5
    assert not workdir.exists()
    assert not agent.running
