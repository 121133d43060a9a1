"""A file-directory stream killed with SIGKILL at chosen points of the batch
lifecycle and at random moments, again and again, while files keep arriving,
and restarted with `get_or_create` each time: in the end every file's lines
were output exactly once (full contents compared), and none of the files that
were there when the job first started."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "jobs" / "file_job.py"
pytestmark = pytest.mark.slow

FILES = 400
CRASH_POINTS = ["after_intent:2", "after_outputs:3", "after_commit:2", "before_intent:4", "after_intent:1",
                "after_outputs:1"]
RANDOM_KILLS = 12


def start_job(incoming: Path, ckpt: Path, out: Path, crash_at: str | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_CRASH_AT"}
    if crash_at:
        env["INGEST_CRASH_AT"] = crash_at
    return subprocess.Popen([sys.executable, str(JOB), str(incoming), str(ckpt), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def file_lines(i: int) -> list[str]:
    # Some files are long enough to be split into byte ranges (min_partition_bytes=256 in the job).
    return [f"file {i:04d} line {j:03d}" for j in range(1 + (i * 7) % 40)]


class Writer(threading.Thread):
    """Moves FILES files into the directory, one every few milliseconds."""

    def __init__(self, incoming: Path) -> None:
        super().__init__(name="test-file-writer")
        self.incoming = incoming
        self.rng = random.Random(3)

    def run(self) -> None:
        for i in range(FILES):
            tmp = self.incoming / f".f{i:04d}.writing"
            tmp.write_text("".join(line + "\n" for line in file_lines(i)))
            os.replace(tmp, self.incoming / f"f{i:04d}.txt")
            time.sleep(self.rng.uniform(0.0, 0.08))


def output_lines(out: Path) -> list[str]:
    return [line for p in sorted(out.glob("*.json")) for line in json.loads(p.read_text())["lines"]]


def test_no_file_is_missed_or_repeated_across_many_sigkills(tmp_path: Path) -> None:
    incoming, ckpt, out = tmp_path / "incoming", tmp_path / "ckpt", tmp_path / "out"
    incoming.mkdir()
    for i in range(3):
        (incoming / f"present-{i}.txt").write_text(f"present at the first start {i}\n")

    # The first run lists the files already there, then commits a batch of new files before it is killed.
    first = start_job(incoming, ckpt, out)
    assert first.stdout is not None and first.stdout.readline().strip() == "started", first.stderr.read()
    writer = Writer(incoming)
    writer.start()
    deadline = time.monotonic() + 60
    while not (ckpt / "commits").exists() or not any((ckpt / "commits").iterdir()):
        assert time.monotonic() < deadline, "the first run committed no batch"
        time.sleep(0.05)
    first.kill()
    first.communicate(timeout=30)

    kills = 1
    for crash_at in CRASH_POINTS:
        proc = start_job(incoming, ckpt, out, crash_at)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, (crash_at, err[-3000:])
        kills += 1
    rng = random.Random(17)
    for _ in range(RANDOM_KILLS):
        proc = start_job(incoming, ckpt, out)
        time.sleep(rng.uniform(0.3, 1.6))
        proc.kill()
        _, err = proc.communicate(timeout=30)
        assert proc.returncode in (-signal.SIGKILL, 0), err[-3000:]
        kills += 1
    writer.join()

    final = start_job(incoming, ckpt, out)
    expected = sorted(line for i in range(FILES) for line in file_lines(i))
    deadline = time.monotonic() + 120
    while len(output_lines(out)) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # a few more batches: nothing may come twice
    final.send_signal(signal.SIGTERM)
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err[-3000:]

    got = output_lines(out)
    print(f"{kills} kills; {len(list(out.glob('*.json')))} batches with data; {len(got)} lines")
    assert sorted(got) == expected
    assert not any("present at the first start" in line for line in got)
