"""What a checkpoint commit costs on each storage backend: local disk, HDFS
(a MiniDFSCluster over WebHDFS) and S3 (moto's server). Prints figures,
asserts nothing.

For each backend, a small stateful job (a queue stream, a running count per
key, 1,000 keys of state) runs N batches on a `ManualClock` with its
checkpoint on that backend. The figures are means per batch:

- ``batch``: wall time of one ``step()`` (plan, intent, run, state file,
  commit, clean-up);
- ``intent`` / ``commit``: time inside ``write_intent`` and ``write_commit``
  (a create-only write each: link on local disk, rename without overwrite on
  HDFS, a PUT with If-None-Match on S3; the commit also writes the state file);
- ``clean``: the clean-up step (deletes of files behind the retention point);
- ``write_new``: one create-only write of 1 KiB, alone.

Both servers run on this machine, so the figures are the backends' protocol
costs (HTTP round trips, the NameNode's rename, WebHDFS's redirect to the
DataNode), not a network's: a real cluster or AWS adds its round-trip time
to every call (two round trips for a WebHDFS write, one for an S3 PUT).

Usage: ``.venv/bin/python bench/storage.py [--quick] [--batches N] [--backends local,hdfs,s3]``.
Starting HDFS takes ~15 s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from ingest import ManualClock, StreamingContext  # noqa: E402
from ingest.checkpoint import CheckpointLog  # noqa: E402
from ingest.storage import storage_for  # noqa: E402


def timed(fn: Callable[..., Any], sink: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - started)
    return wrapper


def run_job(url: str, options: dict[str, Any], batches: int) -> dict[str, float]:
    data = [[(f"k{(b * 31 + i) % 1000}", 1) for i in range(200)] for b in range(batches + 1)]
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(url, storage_options=options, retain_batches=3)
    counts = ssc.queue_stream(data, name="pairs").update_state_by_key(lambda new, old: (old or 0) + sum(new),
                                                                       name="counts")
    counts.foreach_batch(lambda b: b.count())
    log: CheckpointLog = ssc._log  # type: ignore[assignment]
    intents: list[float] = []
    commits: list[float] = []
    cleans: list[float] = []
    log.write_intent = timed(log.write_intent, intents)  # type: ignore[method-assign]
    log.write_commit = timed(log.write_commit, commits)  # type: ignore[method-assign]
    log.clean_up = timed(log.clean_up, cleans)  # type: ignore[method-assign]
    steps: list[float] = []
    ssc.start()
    try:
        ssc.step(1)  # warm-up: the first full snapshot, directories created
        intents.clear(), commits.clear(), cleans.clear()
        for _ in range(batches):
            started = time.perf_counter()
            ssc.step(1)
            steps.append(time.perf_counter() - started)
    finally:
        ssc.stop(graceful=False)
    st = storage_for(url, options)
    singles: list[float] = []
    for i in range(max(5, batches)):
        started = time.perf_counter()
        st.write_new(f"bench-write-new/{i}", b"x" * 1024)
        singles.append(time.perf_counter() - started)
    ms = lambda xs: 1000 * statistics.mean(xs) if xs else float("nan")  # noqa: E731
    return {"batch": ms(steps), "intent": ms(intents), "commit": ms(commits), "clean": ms(cleans),
            "write_new": ms(singles)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 batches per backend")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--backends", default="local,hdfs,s3")
    args = parser.parse_args()
    batches = 10 if args.quick else args.batches
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results: dict[str, dict[str, float]] = {}
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        if backend == "local":
            directory = tempfile.mkdtemp(prefix="storage-", dir=out)
            try:
                results[backend] = run_job(directory, {}, batches)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
        elif backend == "hdfs":
            from ingest.testing.hdfs import HdfsCluster

            with HdfsCluster() as cluster:
                results[backend] = run_job(f"{cluster.url}/bench/{uuid.uuid4().hex[:8]}", {"user": "bench"},
                                           batches)
        elif backend == "s3":
            from ingest.testing.s3 import S3Server

            with S3Server() as server:
                bucket = server.create_bucket()
                results[backend] = run_job(f"s3://{bucket}/bench", server.storage_options(), batches)
        else:
            print(f"unknown backend {backend!r}", file=sys.stderr)
            return 2
    print(f"checkpoint cost per batch, mean of {batches} batches (ms)")
    print(f"{'backend':<8} {'batch':>8} {'intent':>8} {'commit':>8} {'clean':>8} {'write_new':>10}")
    for backend, r in results.items():
        print(f"{backend:<8} {r['batch']:>8.1f} {r['intent']:>8.1f} {r['commit']:>8.1f} {r['clean']:>8.1f} "
              f"{r['write_new']:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
