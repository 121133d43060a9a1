"""A file-directory stream killed with SIGKILL at chosen points of the batch
lifecycle and at random moments, again and again, while files keep arriving,
and restarted with `get_or_create` each time: in the end every file's lines
were output exactly once (full contents compared), and none of the files that
were there when the job first started. (The HDFS and S3 variants:
test_remote_file_stream_recovery.py.)"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from .file_stream_kills import JobRuns, Writer, expected_lines, output_lines

pytestmark = pytest.mark.slow

FILES = 400
CRASH_POINTS = ["after_intent:2", "after_outputs:3", "after_commit:2", "before_intent:4", "after_intent:1",
                "after_outputs:1"]
RANDOM_KILLS = 12


def test_no_file_is_missed_or_repeated_across_many_sigkills(tmp_path: Path) -> None:
    incoming, ckpt, out = tmp_path / "incoming", tmp_path / "ckpt", tmp_path / "out"
    incoming.mkdir()
    for i in range(3):
        (incoming / f"present-{i}.txt").write_text(f"present at the first start {i}\n")

    def put(name: str, text: str) -> None:
        tmp = incoming / f".{name}.writing"
        tmp.write_text(text)
        os.replace(tmp, incoming / name)

    jobs = JobRuns(str(incoming), str(ckpt), out, tmp_path / "logs")
    try:
        # The first run lists the files already there, then commits a batch of new files before it is killed.
        first, stdout = jobs.start()
        jobs.wait_started(first, stdout)
        writer = Writer(put, FILES)
        writer.start()
        deadline = time.monotonic() + 60
        while not (ckpt / "commits").exists() or not any((ckpt / "commits").iterdir()):
            assert time.monotonic() < deadline, "the first run committed no batch"
            time.sleep(0.05)
        jobs.kill(first)

        for crash_at in CRASH_POINTS:
            jobs.run_to_crash_point(crash_at)
        rng = random.Random(17)
        for _ in range(RANDOM_KILLS):
            jobs.run_and_kill_at_random(rng, 0.1, 1.2)
        writer.join()
        assert writer.error is None, writer.error

        expected = expected_lines(FILES)
        jobs.run_until(len(expected))
    finally:
        jobs.close()
    got = output_lines(out)
    print(f"{jobs.kills} kills; {len(list(out.glob('*.json')))} batches with data; {len(got)} lines")
    assert sorted(got) == expected
    assert not any("present at the first start" in line for line in got)
