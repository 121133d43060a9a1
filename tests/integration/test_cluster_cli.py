"""`ingest run --workers N` and `--cluster ADDRESS`: the application's partition
tasks run in Dask worker processes whatever executor it chose, with the same
output as in-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

INGEST = [sys.executable, "-m", "ingest.cli"]
BIN = Path(sys.executable).parent

APP = """
    import os
    from ingest import ManualClock, StreamingContext

    if __name__ == "__main__":
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), executor="threads", parallelism=2,
                               log_batches=False)
        batches = [[f"w{(b * 3 + i) % 5}" for i in range(30)] for b in range(3)]
        words = ssc.queue_stream(batches, num_partitions=3)
        words.map_partitions(lambda it: [(os.getpid(), len(list(it)))]).foreach_batch(
            lambda b: print("pids", *sorted({pid for pid, _ in b.collect()})))
        words.map(lambda w: (w, 1)).reduce_by_key(lambda a, b: a + b, num_partitions=2).foreach_batch(
            lambda b: print("counts", b.time, sorted(b.collect())))
        ssc.start()
        ssc.step(3)
        ssc.stop()
        print("driver", os.getpid())
"""


def run_app(tmp_path: Path, *options: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    return subprocess.run([*INGEST, "run", "--no-ui", *options, str(app)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=timeout)


def outputs(result: subprocess.CompletedProcess[str]) -> tuple[list[str], set[int], int]:
    lines = result.stdout.splitlines()
    counts = [line for line in lines if line.startswith("counts")]
    pids = {int(p) for line in lines if line.startswith("pids") for p in line.split()[1:]}
    driver = int(next(line for line in lines if line.startswith("driver")).split()[1])
    return counts, pids, driver


def test_workers_runs_the_apps_tasks_in_n_worker_processes_with_the_same_output(tmp_path) -> None:
    local = run_app(tmp_path)
    assert local.returncode == 0, local.stderr
    on_cluster = run_app(tmp_path, "--workers", "2", "--worker-memory", "300MiB")
    assert on_cluster.returncode == 0, on_cluster.stderr
    counts, pids, driver = outputs(on_cluster)
    assert counts == outputs(local)[0] and len(counts) == 3
    assert driver not in pids and 1 <= len(pids) <= 2
    assert "--workers 2 (a local cluster at tcp://127.0.0.1:" in on_cluster.stderr
    assert "not on the application's executor='threads'" in on_cluster.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes, as an operator runs them."""
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    logs = tmp_path / "dask.log"
    with open(logs, "w") as log:
        procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port,
                                   "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)]
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--memory-limit", "300MiB",
                 "--no-dashboard", "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path))
        try:
            from distributed import Client

            with Client(address, timeout=60) as client:
                client.wait_for_workers(2, timeout=60)
            yield address
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_cluster_runs_the_apps_tasks_on_an_existing_scheduler_s_workers(tmp_path, dask_cluster) -> None:
    local = run_app(tmp_path)
    on_cluster = run_app(tmp_path, "--cluster", dask_cluster)
    assert on_cluster.returncode == 0, on_cluster.stderr
    counts, pids, driver = outputs(on_cluster)
    assert counts == outputs(local)[0]
    assert driver not in pids and pids
    assert f"--cluster {dask_cluster}" in on_cluster.stderr


def test_cluster_and_workers_together_is_a_usage_error(tmp_path) -> None:
    result = run_app(tmp_path, "--cluster", "tcp://127.0.0.1:1", "--workers", "2")
    assert result.returncode == 2
    assert "not both" in result.stderr
