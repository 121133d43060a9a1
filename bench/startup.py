"""Start-up benchmark: what a job and an `ingest` command pay before doing work.

Each case runs in a fresh interpreter (the same one running this script, with
this checkout first on sys.path) and prints one figure; the median of
`--runs` runs is reported, with the spread (min-max), in milliseconds:

- `python -c pass`: the interpreter alone (the floor of every case below);
- `import ingest`: the package import, timed inside the process;
- `StreamingContext`: `from ingest import StreamingContext` plus building one;
- `first batch (files)`: from process start to the first completed batch of a
  text file stream over a directory holding one small file (a manual clock,
  stepped once: no batch interval is waited for);
- `kafka graph`: import, context and `kafka_direct_stream(...)` built (not
  started: no broker is contacted), what a direct Kafka job pays before
  `start()`;
- `ingest --version`: the CLI's entry point, from process start to exit.

Children run with compiled bytecode cached, as an installed package has it
(in a directory of this run's, filled by a first round that is not counted),
even where PYTHONDONTWRITEBYTECODE is set: without a cache every import
compiles its source, which is not what a job pays.

"from process start" is measured by this script around the child process, so
it includes the interpreter's own start-up (see the first line). Wall and CPU
time (user + system) are both shown: on a loaded machine the CPU figures move
far less from run to run.

Usage: ``.venv/bin/python bench/startup.py [--runs N] [--importtime]``
(`--importtime` prints the 15 slowest modules of `python -X importtime -c 'import ingest'`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import ingest
print(time.perf_counter() - t0, time.process_time() - c0)
"""

CONTEXT = """
import time
t0, c0 = time.perf_counter(), time.process_time()
from ingest import StreamingContext
StreamingContext(batch_interval=1.0, stop_on_signal=False, log_batches=False)
print(time.perf_counter() - t0, time.process_time() - c0)
"""

FIRST_BATCH = """
import sys
from ingest import ManualClock, StreamingContext
ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
counts = []
ssc.text_file_stream(sys.argv[1], new_files_only=False).foreach_batch(lambda batch: counts.append(batch.data.count()))
ssc.start()
ssc.step()
ssc.stop()
assert counts == [3], counts
"""

KAFKA_GRAPH = """
from ingest import StreamingContext
ssc = StreamingContext(batch_interval=1.0, stop_on_signal=False, log_batches=False)
ssc.stream("kafka_direct_stream", topics=["events"], kafka_params={"bootstrap.servers": "127.0.0.1:9", "group.id": "g"})
"""


PYCACHE = tempfile.mkdtemp(prefix="ingest-startup-pycache-")


def child_env() -> dict[str, str]:
    """This checkout first on the path, and compiled bytecode cached (in a
    directory of this run's, warmed by a first round that is not counted), as
    an installed package has it: without a cache every import compiles its
    source, which is not what a job pays."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    return env


def timed_in_process(code: str) -> tuple[float, float]:
    """(wall, CPU) seconds the child printed: its own timing of the code."""
    out = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    wall, cpu = out.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def timed_from_start(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds from spawning the child to its exit; CPU is the
    child's user + system time (what other jobs' load disturbs far less)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=child_env(), cwd=ROOT, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise RuntimeError(f"{argv[:3]} failed: {out.stderr.decode(errors='replace')[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    return f"{statistics.median(ms):7.1f} ms ({ms[0]:.0f}-{ms[-1]:.0f})"


def importtime_top(n: int = 15) -> list[str]:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import ingest"], env=child_env(),
                         cwd=ROOT, check=True, capture_output=True, text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(cumulative), int(self_us), name.strip()))
    rows.sort(reverse=True)
    return [f"{cum / 1000:7.1f} ms cumulative {self_us / 1000:6.1f} ms self  {name}" for cum, self_us, name in rows[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "a.txt").write_text("one\ntwo\nthree\n")
        cases = [
            ("python -c pass", lambda: timed_from_start([sys.executable, "-c", "pass"])),
            ("import ingest", lambda: timed_in_process(IMPORT)),
            ("StreamingContext", lambda: timed_in_process(CONTEXT)),
            ("first batch (files)", lambda: timed_from_start([sys.executable, "-c", FIRST_BATCH, directory])),
            ("kafka graph", lambda: timed_from_start([sys.executable, "-c", KAFKA_GRAPH])),
            ("ingest --version", lambda: timed_from_start(
                [sys.executable, "-c", "import sys; from ingest.cli import main; sys.exit(main(['--version']))"])),
        ]
        walls: dict[str, list[float]] = {name: [] for name, _ in cases}
        cpus: dict[str, list[float]] = {name: [] for name, _ in cases}
        for name, run in cases:  # warm-up: fills the bytecode cache
            run()
        for _ in range(args.runs):  # interleaved, so that load on the machine hits every case alike
            for name, run in cases:
                wall, cpu = run()
                walls[name].append(wall)
                cpus[name].append(cpu)
    print(f"median of {args.runs} runs (min-max), wall and CPU (user + system); * = from process start")
    for name, _ in cases:
        where = "" if name in ("import ingest", "StreamingContext") else " *"
        print(f"  {name + where:24s} wall {summary(walls[name])}   CPU {summary(cpus[name])}")
    if args.importtime:
        print("slowest modules of `import ingest` (python -X importtime):")
        for row in importtime_top():
            print("  " + row)
    shutil.rmtree(PYCACHE, ignore_errors=True)


if __name__ == "__main__":
    main()
