"""A 1 GB text file read by a file stream: cut into byte ranges read by
separate tasks, every line exactly once and in order. (On a 2-core machine:
about 15 s to write the file and 17 s to read it.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SIZE = 1_000_000_000
LINE = 64  # bytes per line, the newline included


def summary(lines):
    """Per partition: how many lines, their sum, the first and the last."""
    numbers = [int(line) for line in lines]
    return [(len(numbers), sum(numbers), numbers[0] if numbers else None, numbers[-1] if numbers else None)]


def test_a_1_gb_file_is_split_into_tasks_that_read_every_line_once(make_context, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    n = SIZE // LINE
    started = time.monotonic()
    with open(incoming / ".big.tmp", "wb") as f:
        for first in range(0, n, 1 << 16):
            f.write(b"".join(b"%063d\n" % i for i in range(first, min(n, first + (1 << 16)))))
    os.replace(incoming / ".big.tmp", incoming / "big.txt")
    written = time.monotonic() - started

    ssc = make_context()
    stream = ssc.text_file_stream(str(incoming), new_files_only=False)  # 64 MiB ranges
    parts: list[list[tuple]] = []
    stream.map_partitions(summary).foreach_batch(lambda b: parts.append(b.collect()))
    ssc.start()
    started = time.monotonic()
    ssc.step(timeout=300)
    read = time.monotonic() - started
    (incoming / "big.txt").unlink()
    print(f"1 GB: written in {written:.1f} s, read by {len(parts[0])} tasks in {read:.1f} s")

    summaries = parts[0]
    assert len(summaries) == SIZE // (64 << 20)
    assert sum(s[0] for s in summaries) == n
    assert sum(s[1] for s in summaries) == n * (n - 1) // 2
    assert summaries[0][2] == 0 and summaries[-1][3] == n - 1
    for before, after in zip(summaries, summaries[1:]):
        assert after[2] == before[3] + 1, "ranges meet without a gap or an overlap"
    assert all(s[0] == s[3] - s[2] + 1 for s in summaries), "each range holds consecutive lines"
