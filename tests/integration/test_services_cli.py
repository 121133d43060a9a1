"""`ingest services kafka` owns its broker: killed with SIGKILL (no chance to clean
up), the broker JVM dies with it instead of running on, orphaned, on its ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ingest.testing.kafka import missing_requirements

pytestmark = pytest.mark.kafka


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has died; only its parent has not collected it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sigkilled_services_kafka_leaves_no_broker_behind() -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip(f"the JVM broker needs {', '.join(missing)}")
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "services", "kafka"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    broker_pid = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"is running at \S+ \(pid (\d+),", line)
            if match:
                broker_pid = int(match.group(1))
                break
        assert broker_pid is not None, "the broker did not start"
        assert alive(broker_pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while alive(broker_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(broker_pid), f"broker pid {broker_pid} still runs after its parent was killed"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if broker_pid is not None and alive(broker_pid):
            os.kill(broker_pid, signal.SIGKILL)
