"""The socket receiver with the write-ahead log: lines stored before a SIGKILL
are processed after the restart, with the checkpoint (and so the log) on local
disk, on HDFS and on S3 (one object per record there).

A TCP server in the test sends lines; the job (a subprocess, see
jobs/socket_wal_job.py) stores each received chunk with one `store_batch`,
durable when it returns, and reports how many lines it has stored. Once the
log holds every line sent, the job is killed with SIGKILL and restarted
against a server that sends nothing more: every line comes out, exactly once
in the job's idempotent per-batch output. What the server would send after the
kill is lost (a socket cannot be replayed), so it is not sent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "jobs" / "socket_wal_job.py"
pytestmark = pytest.mark.slow
# The lease of the job's checkpoint lock. On HDFS and S3 a killed job's lock is
# taken over only once its lease expired (no pid to check there), so the
# restart waits that long.
LEASE = 2.0


@pytest.fixture(params=["local", "hdfs", "s3"])
def checkpoint(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict]:
    """Where the job's checkpoint and write-ahead log live, and the storage options."""
    if request.param == "hdfs":
        return request.getfixturevalue("hdfs_dir") + "/ckpt", {"user": "tester"}
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/ckpt", dict(request.getfixturevalue("s3_storage_options"))
    return str(tmp_path / "ckpt"), {}


@pytest.fixture
def server():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(20)
    yield srv
    srv.close()


def start_job(ckpt: tuple[str, dict], out: Path, port: int, mode: str, clock: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_CRASH_AT"}
    env["JOB_STORAGE_OPTIONS"] = json.dumps(ckpt[1])
    env["JOB_LEASE_SECONDS"] = str(LEASE)
    ckpt = ckpt[0]  # type: ignore[assignment]
    return subprocess.Popen([sys.executable, str(JOB), str(ckpt), str(out), str(port), "--mode", mode,
                             "--clock", clock], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored_lines(out: Path) -> int:
    try:
        return int((out / "received").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def wait_stored(proc: subprocess.Popen[str], out: Path, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while stored_lines(out) < count:
        if proc.poll() is not None:
            raise AssertionError(f"the job exited ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the job stored {stored_lines(out)} of {count} lines within {timeout} s")
        time.sleep(0.01)


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def await_lease(ckpt: tuple[str, dict]) -> None:
    if "://" in ckpt[0]:
        time.sleep(LEASE + 0.5)


def send_lines(conn: socket.socket, lines: list[str], rng: random.Random) -> None:
    """Send as a peer would: chunks of random size, cut anywhere, even inside a line."""
    data = "".join(f"{line}\n" for line in lines).encode()
    at = 0
    while at < len(data):
        size = rng.randint(1, 2000)
        conn.sendall(data[at:at + size])
        at += size
        if rng.random() < 0.3:
            time.sleep(0.005)


def output_batches(out: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (out / "lines").glob("*.json")), key=lambda b: b["time"])


def drain(ckpt: tuple[str, dict], out: Path, server: socket.socket, clock: str) -> None:
    proc = start_job(ckpt, out, server.getsockname()[1], "drain", clock)
    try:
        conn, _ = server.accept()  # the restarted receiver connects; nothing more is sent
    except socket.timeout:
        conn = None
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if conn is not None:
            conn.close()
    assert proc.returncode == 0, stderr
    assert stdout.strip() == "done"


def test_lines_in_the_log_before_a_sigkill_are_all_processed_after_restart(tmp_path: Path, server,
                                                                          checkpoint) -> None:
    ckpt, out = checkpoint, tmp_path / "out"
    rng = random.Random(11)
    sent = [f"line {i} " + "x" * rng.randint(0, 300) for i in range(500)]
    proc = start_job(ckpt, out, server.getsockname()[1], "receive", "manual")
    conn, _ = server.accept()
    try:
        send_lines(conn, sent, rng)
        wait_stored(proc, out, len(sent))
        kill(proc)
    finally:
        conn.close()
    await_lease(ckpt)
    assert not (out / "lines").exists(), "no batch ran before the kill: the lines can only come from the log"
    if "://" in ckpt[0]:  # on HDFS and S3 the log is one object per record
        from ingest.storage import storage_for

        names = storage_for(*ckpt).list("receivers/lines")
        assert names and all(n.startswith("blocks-") and n.endswith(".rec") for n in names), names
    drain(ckpt, out, server, "manual")
    got = [r for b in output_batches(out) for r in b["records"]]
    assert got == sent


def test_kills_at_random_moments_while_batches_run_lose_no_line_and_repeat_none(tmp_path: Path, server,
                                                                               checkpoint) -> None:
    """Several runs, each receiving more lines and killed at a random moment
    after they are in the log (before, during or after their batch); the
    idempotent sink holds every line once, in the order sent."""
    ckpt, out = checkpoint, tmp_path / "out"
    rng = random.Random(5)
    sent: list[str] = []
    for run in range(5):
        lines = [f"run {run} line {i}" for i in range(rng.randint(50, 200))]
        proc = start_job(ckpt, out, server.getsockname()[1], "receive", "system")
        conn, _ = server.accept()
        try:
            send_lines(conn, lines, rng)
            sent.extend(lines)
            wait_stored(proc, out, len(lines))
            time.sleep(rng.choice([0.0, rng.uniform(0, 0.15)]))
            kill(proc)
        finally:
            conn.close()
        await_lease(ckpt)
        (out / "received").unlink()
    drain(ckpt, out, server, "system")
    got = [r for b in output_batches(out) for r in b["records"]]
    assert got == sent
