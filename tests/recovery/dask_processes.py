"""A Dask cluster of separate processes, as an operator runs one, for the
recovery tests where the scheduler or the driver must die while workers live
(test_dask_cluster_recovery.py, test_dask_wal_recovery.py).

`DaskProcesses` starts `dask scheduler` and `dask worker` processes, each in a
session of its own (a worker's nanny and worker process die together, as when
a machine is lost), and owns them: `stop_all` kills whatever is left. Every
process it starts (and the driver, through `env`) imports this checkout and
the tests' folder, so a receiver class defined in a test module unpickles on
the workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tasks_on_workers(prefix: str, dask_scheduler=None) -> dict[str, str]:  # noqa: ANN001 - Dask's scheduler
    """Run on the scheduler: the worker processing each task whose key starts with `prefix`."""
    return {str(key): ts.processing_on.address for key, ts in dask_scheduler.tasks.items()
            if str(key).startswith(prefix) and ts.processing_on is not None}


class DaskProcesses:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log = open(directory / "dask.log", "ab")  # noqa: SIM115 - closed in stop_all
        path = [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        self.cwd = directory
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(BIN / "dask"), *args], stdout=self.log, stderr=subprocess.STDOUT,
                                env=self.env, cwd=self.cwd, start_new_session=True)

    def start_scheduler(self) -> None:
        self.scheduler = self._start("scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                     "--no-dashboard")

    def start_worker(self) -> None:
        self.workers.append(self._start("worker", self.address, "--nthreads", "1", "--memory-limit", "400MiB",
                                        "--no-dashboard", "--host", "127.0.0.1"))

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)
            deadline = time.monotonic() + timeout  # and no dead one still listed
            while len(client.nthreads()) != n and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(client.nthreads()) == n, client.nthreads()

    def running_tasks(self, prefix: str) -> dict[str, str]:
        """Task key -> the worker address running it, for the keys starting with `prefix`."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return client.run_on_scheduler(_tasks_on_workers, prefix)

    def worker_index(self, address: str) -> int:
        """Which of `workers` runs the worker at `address` (its process is in that worker's session)."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            pid = client.run(os.getpid, workers=[address])[address]
        sessions = [i for i, proc in enumerate(self.workers) if proc.poll() is None and os.getsid(pid) == proc.pid]
        assert len(sessions) == 1, f"no started worker runs {address} (pid {pid})"
        return sessions[0]

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def kill_worker(self, index: int) -> None:
        self.kill(self.workers[index])

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.kill(self.scheduler)

    def stop_all(self) -> None:
        for proc in [*self.workers, *([self.scheduler] if self.scheduler else [])]:
            if proc.poll() is None:
                self.kill(proc)
        self.log.close()


@pytest.fixture
def dask_processes(tmp_path: Path) -> Iterator[DaskProcesses]:
    procs = DaskProcesses(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


def stop_supervisor(supervisor: subprocess.Popen[bytes]) -> None:
    """End `ingest run --supervise` as an operator does (SIGTERM: the driver stops gracefully)."""
    supervisor.send_signal(signal.SIGTERM)
    try:
        supervisor.wait(timeout=60)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        supervisor.wait()
