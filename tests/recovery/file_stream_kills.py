"""The kill-and-restart campaign of the file-stream recovery tests, shared by
the local-disk, HDFS and S3 variants: a writer moves files into the watched
directory atomically while `jobs/file_job.py` is killed with SIGKILL at chosen
points of the batch lifecycle and at seeded random moments, and restarted each
time; a last run catches up and stops gracefully. The job's sink writes one
local file per batch, named by the batch (idempotent), so the output is the
lines of every batch that committed, each batch once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

JOB = Path(__file__).parent / "jobs" / "file_job.py"
ROOT = Path(__file__).resolve().parents[2]


def file_lines(i: int) -> list[str]:
    # Some files are long enough to be split into byte ranges (min_partition_bytes=256 in the job).
    return [f"file {i:04d} line {j:03d}" for j in range(1 + (i * 7) % 40)]


def file_text(i: int) -> str:
    return "".join(line + "\n" for line in file_lines(i))


def expected_lines(files: int) -> list[str]:
    return sorted(line for i in range(files) for line in file_lines(i))


def output_lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("*.json")) for line in json.loads(p.read_text())["lines"]]


class Writer(threading.Thread):
    """Puts `files` files into the directory with `put(name, text)` (which must
    be atomic: a rename on disk and HDFS, one PUT on S3), a few milliseconds apart."""

    def __init__(self, put: Callable[[str, str], None], files: int, seed: int = 3, pause_s: float = 0.08) -> None:
        super().__init__(name="test-file-writer")
        self.put, self.files, self.pause_s = put, files, pause_s
        self.rng = random.Random(seed)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(self.files):
                self.put(f"f{i:04d}.txt", file_text(i))
                time.sleep(self.rng.uniform(0.0, self.pause_s))
        except BaseException as exc:  # noqa: BLE001 - reported by the test after join()
            self.error = exc


@dataclass
class JobRuns:
    """Starts `file_job.py` runs over one directory and checkpoint; each run's
    stdout and stderr go to files in `logs` (kept for the secret checks, and
    never a full pipe blocking a chatty job)."""

    incoming: str
    checkpoint: str
    out: Path
    logs: Path
    storage_options: dict[str, Any] | None = None
    lease_seconds: float = 30.0
    runs: int = 0
    kills: int = 0
    _files: list[tuple[Any, Any]] = field(default_factory=list)

    def start(self, crash_at: str | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        env = {k: v for k, v in os.environ.items() if k not in ("INGEST_CRASH_AT", "JOB_STORAGE_OPTIONS")}
        env["PYTHONPATH"] = str(ROOT)
        env["JOB_LEASE_SECONDS"] = str(self.lease_seconds)
        if self.storage_options:
            env["JOB_STORAGE_OPTIONS"] = json.dumps(self.storage_options)
        if crash_at:
            env["INGEST_CRASH_AT"] = crash_at
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs += 1
        stdout_path = self.logs / f"run-{self.runs:02d}.out"
        stdout = open(stdout_path, "wb")
        stderr = open(self.logs / f"run-{self.runs:02d}.err", "wb")
        self._files.append((stdout, stderr))
        proc = subprocess.Popen([sys.executable, str(JOB), self.incoming, self.checkpoint, str(self.out)], env=env,
                                stdout=stdout, stderr=stderr)
        return proc, stdout_path

    def stderr_of_last(self) -> str:
        return (self.logs / f"run-{self.runs:02d}.err").read_text(errors="replace")[-3000:]

    def wait_started(self, proc: subprocess.Popen[bytes], stdout: Path, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while b"started" not in stdout.read_bytes():
            assert proc.poll() is None, f"the job exited ({proc.returncode}) before starting: {self.stderr_of_last()}"
            assert time.monotonic() < deadline, f"the job did not start within {timeout} s: {self.stderr_of_last()}"
            time.sleep(0.05)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(30)
        assert proc.returncode in (-signal.SIGKILL, 0), self.stderr_of_last()
        self.kills += 1

    def run_to_crash_point(self, crash_at: str, timeout: float = 120.0) -> None:
        proc, _ = self.start(crash_at)
        proc.wait(timeout)
        assert proc.returncode == -signal.SIGKILL, (crash_at, self.stderr_of_last())
        self.kills += 1

    def run_and_kill_at_random(self, rng: random.Random, low: float, high: float) -> None:
        """Killed a random while after it started (random.Random(seed): the same moments every run)."""
        proc, stdout = self.start()
        self.wait_started(proc, stdout)
        time.sleep(rng.uniform(low, high))
        self.kill(proc)

    def run_until(self, expected: int, timeout: float = 120.0) -> dict[str, Any]:
        """A last run, until the output has `expected` lines (and a little more:
        nothing may come twice); stopped with SIGTERM. Returns its status."""
        proc, stdout = self.start()
        self.wait_started(proc, stdout)  # the output may be complete already: it must stay so
        deadline = time.monotonic() + timeout
        while len(output_lines(self.out)) < expected and time.monotonic() < deadline:
            assert proc.poll() is None, self.stderr_of_last()
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert proc.returncode == 0, self.stderr_of_last()
        lines = stdout.read_text().splitlines()
        assert lines[-1] == "done", lines
        return json.loads(lines[-2])

    def close(self) -> None:
        for stdout, stderr in self._files:
            stdout.close()
            stderr.close()

    def log_text(self) -> str:
        """Everything every run printed."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.iterdir()))
