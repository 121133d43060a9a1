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


def test_ingest_services_flume_runs_an_agent_until_ctrl_c_and_leaves_nothing(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from ingest.testing.flume import memory_channel as channel

    port = free_port()
    config = tmp_path / "agent.properties"
    config.write_text(agent_config(sources={"r1": netcat_source(port)}, channels={"c1": channel()},
                                   sinks={"k1": null_sink()}))
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "services", "flume", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "INGEST_SERVICES_DIR": str(tmp_path / "services")})
    try:
        line = ""
        deadline = time.monotonic() + 120
        while "is running" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "Flume agent a1 is running" in line
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"hello\n")
            assert conn.makefile("rb").readline() == b"OK\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Flume stopped." in out
    assert list((tmp_path / "services").iterdir()) == []  # its work directory is gone


def test_ingest_services_flume_without_a_config_exits_2():
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "ingest.cli", "services", "flume"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert "needs --config FILE" in run.stderr
