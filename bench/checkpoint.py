"""Checkpoint benchmarks: what a checkpoint costs per batch for large state.
Prints figures, asserts nothing.

Two stateful jobs, each with 10k and 1M keys of state (seeded through
`initial_state`, so no batch has to carry every key):

- ``update_state_by_key``: its function runs for every key on every batch and
  every commit writes a full snapshot of the state;
- ``map_with_state``: each batch touches ~1% of the keys; commits write the
  changed keys as a delta, and a full snapshot every 10 commits
  (``full_snapshot_every=10``, the default).

Each job runs the same batches twice on a `ManualClock` (one ``step()`` per
batch): without a checkpoint, then with one in a fresh directory. The figures:

- ``no ckpt`` / ``ckpt``: mean wall time per batch (ms), the first batch left
  out (it writes the first full snapshot; shown as ``first``);
- ``overhead``: their difference, what checkpointing adds to a batch;
- ``commit``: mean time inside ``CheckpointLog.write_commit`` (state files,
  commit record) and the ``clean_up`` step after it, with the mean of delta and of full commits for
  ``map_with_state``; ``intent``: mean time of ``write_intent`` (the batch's
  records are its plan, so they are in the intent);
- bytes written per batch into state files, intents and commits.

Every file is written with fsync of the file and its directory, so the disk
matters: the directory and its filesystem are printed. By default files go to
a temporary directory under ``bench/out/`` (git-ignored).

Usage: ``.venv/bin/python bench/checkpoint.py [--quick] [--dir DIR] [--batches N]``.
``--quick`` skips the 1M-key cases, which take most of the time (each
``update_state_by_key`` batch calls the function a million times and writes a
full snapshot of a million keys).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from ingest import DStream, ManualClock, StreamingContext  # noqa: E402
from _common import filesystem_of  # noqa: E402  (bench/ is the script directory)


def key(i: int) -> str:
    return f"user-{i:08d}"


def touched_batches(keys: int, batches: int, fraction: float = 0.01) -> list[list[tuple[str, int]]]:
    """`batches` lists of `(key, 1)` covering `fraction` of the keys each, moving
    through the key space so that successive batches touch different keys."""
    per_batch = max(1, int(keys * fraction))
    stride = 7919  # a prime: spreads a batch's keys over the whole key space
    return [[(key((b * per_batch + i) * stride % keys), 1) for i in range(per_batch)] for b in range(batches)]


def add_counts(values: list[int], old: int | None) -> int:
    return (old or 0) + len(values)


def count_record(_key: str, value: int, state: Any) -> None:
    state.update(state.get_option(0) + value)


def update_state_job(keys: int) -> Callable[[DStream[Any]], DStream[Any]]:
    def build(pairs: DStream[Any]) -> DStream[Any]:
        return pairs.update_state_by_key(add_counts, initial_state=((key(i), 1) for i in range(keys)))
    return build


def map_with_state_job(keys: int) -> Callable[[DStream[Any]], DStream[Any]]:
    def build(pairs: DStream[Any]) -> DStream[Any]:
        return pairs.map_with_state(count_record, initial_state=((key(i), 1) for i in range(keys)))
    return build


@dataclass
class Measured:
    batch_s: list[float] = field(default_factory=list)
    commit_s: list[float] = field(default_factory=list)
    commit_kind: list[str] = field(default_factory=list)  # "full" or "delta", per commit
    intent_s: list[float] = field(default_factory=list)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)


def _timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - start)
    return call


def run_job(build: Callable[[DStream[Any]], DStream[Any]], batches: list[list[Any]],
            directory: Path | None) -> Measured:
    measured = Measured()
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    if directory is not None:
        ssc.checkpoint(str(directory), retain_batches=2)
        ckpt: Any = ssc._log
        ckpt.write_commit = _timed(ckpt.write_commit, measured.commit_s)
        ckpt.write_intent = _timed(ckpt.write_intent, measured.intent_s)
        clean_up = ckpt.clean_up

        def clean_up_after_commit(retain_from_ms: int) -> None:
            # The clean-up is a separate step after the commit: counted with it.
            start = time.perf_counter()
            try:
                clean_up(retain_from_ms)
            finally:
                measured.commit_s[-1] += time.perf_counter() - start

        ckpt.clean_up = clean_up_after_commit

        def counting(write: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
            def counting_write(path: str, data: bytes) -> None:
                kind = path.split("/", 1)[0] if "/" in path else path
                if kind == "state":
                    measured.commit_kind.append(path.rsplit(".", 1)[-1])
                measured.bytes_by_kind[kind] = measured.bytes_by_kind.get(kind, 0) + len(data)
                write(path, data)
            return counting_write

        ckpt.storage.write_atomic = counting(ckpt.storage.write_atomic)
        ckpt.storage.write_new = counting(ckpt.storage.write_new)  # intents are written create-only
    build(ssc.queue_stream(batches)).foreach_batch(lambda batch: None)
    ssc.start()
    try:
        for _ in batches:
            start = time.perf_counter()
            ssc.step(1, timeout=600)
            measured.batch_s.append(time.perf_counter() - start)
    finally:
        ssc.stop(graceful=False)
    return measured


def ms(seconds: Sequence[float]) -> str:
    return f"{statistics.fmean(seconds) * 1000:.1f}" if seconds else "-"


def size(n: float) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def report(name: str, keys: int, plain: Measured, ckpt: Measured) -> None:
    steady_plain, steady_ckpt = plain.batch_s[1:], ckpt.batch_s[1:]
    overhead = statistics.fmean(steady_ckpt) - statistics.fmean(steady_plain)
    batches = len(ckpt.batch_s)
    kinds = ckpt.commit_kind
    commit = ms(ckpt.commit_s[1:])
    if "delta" in kinds:
        delta = [s for s, k in zip(ckpt.commit_s, kinds) if k == "delta"]
        full = [s for s, k in zip(ckpt.commit_s[1:], kinds[1:]) if k == "full"]
        commit += f" (delta {ms(delta)}, full {ms(full)})"
    per_batch = {k: v / batches for k, v in ckpt.bytes_by_kind.items()}
    print(f"{name:<20} {keys:>9,} {batches:>4} {ms(steady_plain):>9} {ms(steady_ckpt):>9} "
          f"{overhead * 1000:>9.1f} {ckpt.batch_s[0] * 1000:>9.1f}  {commit:<32} {ms(ckpt.intent_s):>7}  "
          f"state {size(per_batch.get('state', 0))}, intent {size(per_batch.get('offsets', 0))}, "
          f"commit {size(per_batch.get('commits', 0))}")


def run_case(name: str, job: Callable[[int], Callable[[DStream[Any]], DStream[Any]]], keys: int,
             batches: int, work_dir: Path) -> None:
    data = touched_batches(keys, batches)
    plain = run_job(job(keys), data, None)
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-{keys}-", dir=work_dir))
    try:
        ckpt = run_job(job(keys), data, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    report(name, keys, plain, ckpt)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the 10k-key cases")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write (default: a temporary directory under bench/out/)")
    parser.add_argument("--batches", type=int, default=None,
                        help="batches per run (default: 21 for map_with_state, two full-snapshot cycles; "
                             "11 for update_state_by_key, 4 of them with 1M keys)")
    args = parser.parse_args(argv)

    parent = args.dir if args.dir is not None else REPO / "bench" / "out"
    parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix="checkpoint-bench-", dir=parent)).resolve()
    sizes = [10_000] if args.quick else [10_000, 1_000_000]
    print("checkpoint cost per batch (ms); the first batch, which writes the first full snapshot, is "
          "shown apart")
    print(f"files in {work_dir} ({filesystem_of(work_dir)}), one fsync per file and per directory")
    print(f"{'job':<20} {'keys':>9} {'bat':>4} {'no ckpt':>9} {'ckpt':>9} {'overhead':>9} {'first':>9}  "
          f"{'commit':<32} {'intent':>7}  written per batch")
    try:
        for keys in sizes:
            if keys >= 1_000_000:
                print(f"-- {keys:,} keys: the slow part of the run (use --quick to skip it)", flush=True)
            small = keys < 1_000_000
            run_case("update_state_by_key", update_state_job, keys,
                     args.batches or (11 if small else 4), work_dir)
            run_case("map_with_state", map_with_state_job, keys, args.batches or 21, work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
