"""File-stream benchmark: files/s discovered and MB/s read by a text file
stream, beside a plain Python loop over the same files. Prints figures,
asserts nothing.

- discovery: listing the directory and choosing the batch's files
  (`FileInputDStream.plan`: list, filter, planner, slices) next to the plain
  loop's listing (local disk: `os.scandir` with a stat per entry; other
  backends: the backend's own `list_entries`, the same client);
- read: one batch taking every file, end to end through a `StreamingContext`
  (plan, read, decode, split into lines, count) next to the plain loop
  (list, read each file, decode, split into lines, count). MB/s are of file
  bytes (1 MB = 10^6 bytes); the ratio is stream/plain (target >= 0.8x).

The directory is `--url`: a local path (default: a temporary directory under
bench/out/, git-ignored) or any URL with a registered storage backend
(hdfs://..., s3://...); the files are written through that backend's
`write_atomic`, then read back by both sides. Runs alternate between the two
sides and the best of `--repeat` is printed (the page cache is warm for both).

Usage: ``.venv/bin/python bench/files.py [--url URL] [--files N] [--file-kib K] [--repeat R] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from ingest import ManualClock, StreamingContext  # noqa: E402
from ingest.storage import LocalStorage, Storage, storage_for  # noqa: E402
from _common import filesystem_of  # noqa: E402  (bench/ is the script directory)


def populate(storage: Storage, files: int, file_bytes: int) -> int:
    line = b"%08d " + b"x" * 90 + b"\n"
    per_file = max(1, file_bytes // len(line % 0))
    total = 0
    for i in range(files):
        data = b"".join(line % (i * per_file + j) for j in range(per_file))
        storage.write_atomic(f"f{i:06d}.txt", data)
        total += len(data)
    return total


def plain_listing(storage: Storage) -> int:
    if isinstance(storage, LocalStorage):
        n = 0
        with os.scandir(storage.root) as it:
            for entry in it:
                entry.stat()
                n += 1
        return n
    return len(storage.list_entries(""))


def plain_read(storage: Storage) -> tuple[int, int]:
    """Lines and bytes of every file, the plain way."""
    lines = size = 0
    if isinstance(storage, LocalStorage):
        for name in sorted(os.listdir(storage.root)):
            with open(os.path.join(storage.root, name), "rb") as f:
                data = f.read()
            size += len(data)
            lines += len(data.decode("utf-8").splitlines())
        return lines, size
    for entry in storage.list_entries(""):
        with storage.open_read(entry.path) as f:
            data = f.read()
        size += len(data)
        lines += len(data.decode("utf-8").splitlines())
    return lines, size


def stream_plan(url: str) -> tuple[float, int]:
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    stream = ssc.text_file_stream(url, new_files_only=False)
    started = time.perf_counter()
    position = stream.plan(1000)
    return time.perf_counter() - started, len(position.paths)


def stream_read(url: str) -> tuple[float, int]:
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    counts: list[int] = []
    ssc.text_file_stream(url, new_files_only=False).count().foreach_batch(lambda b: counts.extend(b.collect()))
    ssc.start()
    try:
        started = time.perf_counter()
        ssc.step(timeout=600)
        return time.perf_counter() - started, sum(counts)
    finally:
        ssc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="directory to use (path or URL); default a temporary local directory")
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--file-kib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 files of 16 KiB, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.files, args.file_kib, args.repeat = 1000, 16, 2
    cleanup = None
    url = args.url
    if url is None:
        out = REPO / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        cleanup = tempfile.mkdtemp(prefix="files-", dir=out)
        url = os.path.join(cleanup, "incoming")
    try:
        storage = storage_for(url)
        where = filesystem_of(Path(storage.root)) if isinstance(storage, LocalStorage) else url.split("://")[0]
        print(f"directory: {storage.url} ({where})")
        started = time.perf_counter()
        total = populate(storage, args.files, args.file_kib * 1024)
        print(f"wrote {args.files} files, {total / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")

        plan_best = list_best = read_best = plain_best = float("inf")
        for _ in range(args.repeat):
            t, n = stream_plan(url)
            assert n == args.files, n
            plan_best = min(plan_best, t)
            started = time.perf_counter()
            assert plain_listing(storage) == args.files
            list_best = min(list_best, time.perf_counter() - started)
            t, lines = stream_read(url)
            read_best = min(read_best, t)
            started = time.perf_counter()
            plain_lines, plain_bytes = plain_read(storage)
            plain_best = min(plain_best, time.perf_counter() - started)
            assert lines == plain_lines and plain_bytes == total, (lines, plain_lines, plain_bytes, total)
        print(f"discovery: stream {args.files / plan_best:,.0f} files/s, plain listing "
              f"{args.files / list_best:,.0f} files/s, ratio {list_best / plan_best:.2f}x")
        print(f"read:      stream {total / 1e6 / read_best:,.1f} MB/s ({args.files / read_best:,.0f} files/s), plain "
              f"loop {total / 1e6 / plain_best:,.1f} MB/s, ratio {plain_best / read_best:.2f}x (target >= 0.8x)")
    finally:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)


if __name__ == "__main__":
    main()
