"""Micro-batch core benchmark: prints figures, asserts nothing.

- Throughput: records/s through `map -> filter -> count` over a `queue_stream`,
  with 1,000 and 100,000 records per batch. Batches run on a `ManualClock`
  with `ssc.step()`, so the figure is processing only (no waiting for a
  clock); the data is built before the timer starts. Next to it, the same
  computation as a plain Python loop over the same lists: the ratio is what
  the framework costs on top of the user's functions.
- Fixed cost of a batch: ms per empty batch stepped through a context with
  one no-op output operation, and through the same `map -> filter -> count`
  pipeline (planning, intent/commit log calls, listener events, scheduling).

- The web UI's cost: the per-batch time (processing, and tick to end) of a
  job at 10 batches/s on the real clock (1,000 records a batch through
  `map -> filter -> count`), with the UI off and with the UI on while a client
  polls it as the live page does, but five times as often (the overview page
  and /api/v1/status and /api/v1/batches every 0.2 s). Off and on runs
  alternate, side by side in one run, `--repeat` pairs; the mean and median of
  all batches of each side are reported.

Each case runs `--repeat` times; the best run is reported (the least disturbed
by the rest of the machine).

Usage: ``.venv/bin/python bench/core.py [--executor inline|threads|processes]
[--partitions N] [--parallelism N] [--repeat N] [--scale F] [--only core|ui]``.
``--scale 0.1`` runs a tenth of the batches (a quick look); the default run
takes well under a minute on two cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from ingest import ManualClock, StreamingContext, StreamingListener  # noqa: E402


def double(x: int) -> int:
    return x * 2


def kept(x: int) -> bool:
    return x % 3 != 0


def make_context(args: argparse.Namespace) -> StreamingContext:
    return StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                            executor=args.executor, parallelism=args.parallelism)


def time_pipeline(args: argparse.Namespace, batches: list[list[int]],
                  build: Callable[[Any], Any]) -> tuple[float, list[int]]:
    """Seconds to step through `batches`, and what the output saw of each."""
    ssc = make_context(args)
    seen: list[int] = []
    try:
        stream = ssc.queue_stream(batches, num_partitions=args.partitions)
        build(stream).foreach_batch(lambda batch: seen.extend(batch.collect()))
        ssc.start()
        started = time.perf_counter()
        ssc.step(len(batches))
        elapsed = time.perf_counter() - started
    finally:
        ssc.stop(graceful=False)
    return elapsed, seen


def time_plain_python(batches: list[list[int]]) -> float:
    started = time.perf_counter()
    for batch in batches:
        sum(1 for x in map(double, batch) if kept(x))
    return time.perf_counter() - started


def map_filter_count(stream: Any) -> Any:
    return stream.map(double).filter(kept).count()


def throughput(args: argparse.Namespace, per_batch: int, num_batches: int) -> list[str]:
    batches = [list(range(i * per_batch, (i + 1) * per_batch)) for i in range(num_batches)]
    total = per_batch * num_batches
    best = min(time_pipeline(args, batches, map_filter_count)[0] for _ in range(args.repeat))
    plain = min(time_plain_python(batches) for _ in range(args.repeat))
    return [f"map+filter+count, {per_batch:,} records/batch", f"{num_batches}", f"{total / best:,.0f}",
            f"{best / num_batches * 1000:.3f}", f"{total / plain:,.0f}", f"{plain / best:.2f}x"]


def empty_batches(args: argparse.Namespace, label: str, build: Callable[[Any], Any], num_batches: int) -> list[str]:
    batches: list[list[int]] = [[] for _ in range(num_batches)]
    best = min(time_pipeline(args, batches, build)[0] for _ in range(args.repeat))
    return [label, f"{num_batches}", "-", f"{best / num_batches * 1000:.3f}", "-", "-"]


class BatchTimes(StreamingListener):
    """Processing and total delay of every completed batch, in ms."""

    def __init__(self) -> None:
        self.processing: list[float] = []
        self.total: list[float] = []

    def on_batch_completed(self, event: Any) -> None:
        if event.info.processing_delay_ms is not None:
            self.processing.append(event.info.processing_delay_ms)
            self.total.append(event.info.total_delay_ms)


class Poller:
    """Polls the UI as the live page does, five times as often, until stopped."""

    PATHS = ("", "api/v1/status", "api/v1/batches")

    def __init__(self, url: str, every: float = 0.2) -> None:
        self.url, self.every = url, every
        self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ui-poller")

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.PATHS:
                with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                    resp.read()
                self.requests += 1
            self._stop.wait(self.every)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)


def ui_run(args: argparse.Namespace, with_ui: bool, num_batches: int, per_batch: int) -> tuple[BatchTimes, int]:
    """One job at 10 batches/s on the real clock; (its batch times, UI requests served)."""
    times = BatchTimes()
    ssc = StreamingContext(batch_interval=0.1, stop_on_signal=False, log_batches=False, executor=args.executor,
                           parallelism=args.parallelism, ui_port=0 if with_ui else None)
    ssc.add_listener(times)
    data = list(range(per_batch))
    map_filter_count(ssc.queue_stream([data] * num_batches, num_partitions=args.partitions)) \
        .foreach_batch(lambda batch: batch.collect())
    requests = 0
    ssc.start()
    try:
        if with_ui:
            assert ssc.ui_url is not None
            with Poller(ssc.ui_url) as poller:
                while len(times.processing) < num_batches:
                    time.sleep(0.05)
            requests = poller.requests
        else:
            while len(times.processing) < num_batches:
                time.sleep(0.05)
    finally:
        ssc.stop(graceful=False)
    return times, requests


def ui_cost(args: argparse.Namespace, num_batches: int, per_batch: int = 1_000) -> None:
    sides: dict[bool, tuple[list[float], list[float]]] = {False: ([], []), True: ([], [])}
    requests = 0
    for _ in range(args.repeat):
        for with_ui in (False, True):
            times, served = ui_run(args, with_ui, num_batches, per_batch)
            sides[with_ui][0].extend(times.processing[1:])  # the first batch warms up
            sides[with_ui][1].extend(times.total[1:])
            requests += served
    rows = []
    for with_ui, label in ((False, "UI off"), (True, "UI on, polled")):
        proc, total = sides[with_ui]
        rows.append([label, f"{len(proc)}", f"{statistics.fmean(proc):.3f}", f"{statistics.median(proc):.3f}",
                     f"{statistics.fmean(total):.3f}", f"{statistics.median(total):.3f}"])
    off, on = statistics.fmean(sides[False][0]), statistics.fmean(sides[True][0])
    print(f"web UI cost: 10 batches/s, {per_batch:,} records/batch through map+filter+count, {args.repeat} "
          f"off/on pair(s) of {num_batches} batches, {requests:,} UI requests served while on")
    print_table(["case", "batches", "processing ms (mean)", "processing ms (p50)", "total delay ms (mean)",
                 "total delay ms (p50)"], rows)
    med_off, med_on = statistics.median(sides[False][0]), statistics.median(sides[True][0])
    print(f"processing time with the UI on and polled vs off: mean {on / off:.3f}x ({(on / off - 1) * 100:+.1f}%), "
          f"median {med_on / med_off:.3f}x ({(med_on / med_off - 1) * 100:+.1f}%)")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executor", default="inline", choices=["inline", "threads", "processes"])
    parser.add_argument("--partitions", type=int, default=1, help="partitions per queued batch (default 1)")
    parser.add_argument("--parallelism", type=int, default=None, help="workers of a threads/processes executor")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is reported (default 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the number of batches (default 1)")
    parser.add_argument("--only", choices=["core", "ui"], default=None, help="run one part only")
    args = parser.parse_args(argv)

    def n(batches: int) -> int:
        return max(2, int(batches * args.scale))

    print(f"ingest core benchmark: python {sys.version.split()[0]}, executor={args.executor}, "
          f"partitions={args.partitions}, best of {args.repeat}")
    print()
    if args.only == "ui":
        ui_cost(args, n(100))
        return 0
    rows = [
        throughput(args, 1_000, n(1_000)),
        throughput(args, 100_000, n(40)),
        empty_batches(args, "empty batch, one no-op output", lambda s: s, n(2_000)),
        empty_batches(args, "empty batch, map+filter+count", map_filter_count, n(2_000)),
    ]
    print_table(["case", "batches", "records/s", "ms/batch", "plain Python rec/s", "vs plain"], rows)
    print()
    print("records/s and ms/batch: ssc.step() over all batches, ManualClock, no logging listener;")
    print("vs plain: plain-Python time / framework time for the same map+filter+count (1.00x = no overhead).")
    if args.only is None:
        print()
        ui_cost(args, n(100))
    return 0


if __name__ == "__main__":
    sys.exit(main())
