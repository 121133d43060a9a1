"""The Flume streams with the write-ahead log, SIGKILLed while a real Flume agent
keeps sending.

The agent's seq source produces N events with unique bodies ("0" .. "N-1");
its Avro sink pushes them to the job (push), or the job polls its pull sink
(pull) (jobs/flume_job.py). The job is killed with SIGKILL at random moments
after it stored some events, five times, and restarted from its checkpoint each
time. The agent delivers again whatever was not acknowledged (push: after its
fixed 5 s backoff; pull: after the sink's 2 s timeout). At the end every event
is in the output. Duplicates by content can only be batches stored and then not
acknowledged because the kill came between the two (at most one batch per kill
and connection); batches re-run from the log after a restart are removed by the
DedupeSink.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ingest.testing.flume import agent_config, avro_sink, memory_channel, pull_sink, seq_source
from ingest.testing.jvm import free_port

JOB = Path(__file__).parent / "jobs" / "flume_job.py"
pytestmark = [pytest.mark.slow, pytest.mark.flume]

EVENTS = 12_000
AGENT_BATCH = 50
KILLS = 5


def start_job(ckpt: Path, out: Path, port: int, source: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_CRASH_AT"}
    return subprocess.Popen([sys.executable, str(JOB), str(ckpt), str(out), str(port), "--source", source], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def received_in_run(out: Path) -> int:
    try:
        return int((out / "received").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def output(out: Path) -> Counter:
    try:
        with contextlib.closing(sqlite3.connect(out / "out.db")) as conn:
            return Counter(int(b) for (b,) in conn.execute("SELECT body FROM events"))
    except sqlite3.OperationalError:  # not created yet
        return Counter()


def wait_for(proc, condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}) while waiting for {what}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("source", ["push", "pull"])
def test_sigkills_while_the_agent_sends_lose_no_event(tmp_path: Path, flume_agent, request, source) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    out.mkdir()
    port = free_port()
    rng = random.Random(7)
    if source == "push":
        sink, plugin_jars = avro_sink("127.0.0.1", port, batch_size=AGENT_BATCH), []
        proc = start_job(ckpt, out, port, source)
    else:
        sink, plugin_jars = pull_sink(port, timeout_s=2), [request.getfixturevalue("flume_sink_jar")]
    agent = flume_agent(agent_config(
        sources={"r1": seq_source(EVENTS, batch_size=AGENT_BATCH)}, channels={"c1": memory_channel()},
        sinks={"k1": sink}), plugin_jars=plugin_jars)
    if source == "pull":  # the pull sink listens once the agent runs
        proc = start_job(ckpt, out, port, source)
    try:
        for run in range(KILLS):
            if run:
                (out / "received").unlink(missing_ok=True)
                proc = start_job(ckpt, out, port, source)
            stored = rng.randint(100, 600)
            wait_for(proc, lambda: received_in_run(out) >= stored, f"{stored} events in run {run}", 60)
            time.sleep(rng.uniform(0, 0.6))
            kill(proc)
            assert len(output(out)) < EVENTS, "the agent must still be sending when the job is killed"
        (out / "received").unlink(missing_ok=True)
        proc = start_job(ckpt, out, port, source)
        wait_for(proc, lambda: len(output(out)) == EVENTS, "every event in the output", 120)
    finally:
        if proc.poll() is None:
            kill(proc)
    counts = output(out)
    assert set(counts) == set(range(EVENTS))
    duplicated = sum(n - 1 for n in counts.values())
    assert duplicated <= KILLS * AGENT_BATCH, f"{duplicated} duplicates: more than one agent batch per kill"
    agent.stop()
    assert agent.shutdown_metrics()[("CHANNEL", "c1")]["channel.current.size"] == 0
