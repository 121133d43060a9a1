"""Like-for-like benchmark of ingest against a bare confluent-kafka loop and the
Python streaming peers (Quix Streams, Bytewax, Faust, PySpark Structured Streaming).

    python bench/peers/run.py [--records N] [--rounds 3] [--only PEER,PEER] [--jobs JOB,JOB]

- Kafka: $KAFKA_BOOTSTRAP_SERVERS, else a broker started for the run
  (ingest.testing.kafka.KafkaBroker) and stopped after.
- Data: produced once (spec.py: N records of 100 B on 4 partitions, 1M by default).
- Each peer runs in its own venv built from requirements-<peer>.txt here (venvs.py),
  never in the project's environment; each job and round is a fresh subprocess.
- Rounds are interleaved (round r runs every job of every peer), round 0 is a warm-up
  and is not reported. Faust reads only the first --faust-records records (200k by default;
  it does ~2-4k/s here).
- Reported per job and peer: records/s (min/median/max over rounds, from the job
  process's start after imports until its output was complete), the peak RSS of the
  job's process tree, ratios of medians to ingest's, the load average at the end.
  End-to-end latency is not reported: every job is a catch-up read of data produced
  before it started, so a record's age says how long the run took, not the latency.
- Every job's output is checked (counts, kept records, records in the output topic,
  keys of the stateful job); a run whose output is wrong is reported as failed, not timed.
Writes results/latest.md and results/latest.png (matplotlib, in the bench venv).

    python bench/peers/run.py --from-log RUN.log [--records N] [--rounds R] [--faust-records N]

renders the table and chart from the lines a run printed (its stdout saved to
RUN.log) when the run was stopped before its end: per job, only the measured
rounds that every peer finished are counted, and the header says how many of
the planned rounds those are (pass the run's own --records, --rounds,
--faust-records).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import venvs  # noqa: E402

if os.environ.get("INGEST_BENCH_IN_VENV") != "1":  # re-run inside the bench venv
    python = venvs.venv_python("bench")
    os.environ["INGEST_BENCH_IN_VENV"] = "1"
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])

import psutil  # noqa: E402

import produce  # noqa: E402
import spec  # noqa: E402

FAUST_RECORDS = 200_000


@dataclass(frozen=True)
class Peer:
    name: str
    venv: str
    script: str
    jobs: tuple[str, ...]
    max_records: int | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


PEERS = (
    Peer("bare loop", "bench", "jobs_bare.py", ("count", "filter", "json", "stateful", "eos"),
         unsupported={"eos_sql": "ours only"}),
    Peer("ingest", "bench", "jobs_ingest.py", spec.JOBS),
    Peer("quix", "quix", "jobs_quix.py", ("count", "filter", "json", "stateful", "eos"),
         unsupported={"eos_sql": "ours only"}),
    Peer("bytewax", "bytewax", "jobs_bytewax.py", ("count", "filter", "json", "stateful"),
         unsupported={"eos": "Bytewax has no exactly-once mode (at-least-once, idempotent outputs)",
                      "eos_sql": "ours only"}),
    Peer("faust", "faust", "jobs_faust.py", ("count", "filter", "json", "stateful", "eos"),
         max_records=FAUST_RECORDS, unsupported={"eos_sql": "ours only"}),
    Peer("pyspark", "pyspark", "jobs_pyspark.py", ("count", "filter", "json", "stateful"),
         unsupported={"eos": "Structured Streaming's Kafka sink is at-least-once only",
                      "eos_sql": "ours only"}),
)


@dataclass
class Result:
    peer: str
    job: str
    records: int
    rates: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    warm_rates: list[float] = field(default_factory=list)  # pyspark: 2nd query in the same JVM
    failure: str | None = None


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:  # psutil.Error when the root ended
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_job(python: Path, peer: Peer, job: str, bootstrap: str, topic: str, records: int,
            workdir: Path, timeout: float) -> tuple[dict, float]:
    """Runs one job in a fresh process; returns its report and its tree's peak RSS (MB)."""
    out_topic = ""
    if job in ("json", "eos"):
        out_topic = f"peers-out-{uuid.uuid4().hex[:10]}"
        produce.create(bootstrap, out_topic, spec.PARTITIONS)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(python), str(HERE / peer.script), job, bootstrap, topic, str(records), out_topic, str(workdir)]
    env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=workdir)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        try:
            process = psutil.Process(child.pid)
            while not stop.wait(0.05):
                peak[0] = max(peak[0], tree_rss(process))
        except psutil.Error:  # the job ended between two samples
            pass

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        raise RuntimeError(f"timed out after {timeout:.0f} s; stderr tail: {stderr[-300:]!r}")
    finally:
        stop.set()
        sampler.join()
    # From the report's start: a peer's terminal codes may precede it on the line.
    lines = [line[line.index('{"seconds"'):] for line in stdout.splitlines() if '{"seconds"' in line]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"exit {child.returncode}; stderr tail: {stderr.strip()[-400:]!r}")
    report = json.loads(lines[-1])
    if out_topic:
        report["check"]["in_output_topic"] = produce.count(bootstrap, out_topic)
    return report, peak[0] / 2**20


def check(job: str, records: int, report_check: dict) -> str | None:
    """None when the job's output is complete and right, else what is wrong."""
    expected_kept = spec.expected_filtered(records)
    wanted: dict = {}
    if job == "count":
        wanted = {"count": records}
    elif job == "filter":
        wanted = {"kept": expected_kept}
    elif job in ("json", "eos"):
        wanted = {"kept": expected_kept, "in_output_topic": expected_kept}
    elif job == "stateful":
        wanted = {"count": records, "keys": min(records, spec.KEYS)}
    elif job == "eos_sql":
        wanted = {"kept": expected_kept, "stored": expected_kept}
    if job in ("json", "eos") and "kept" not in report_check:
        wanted.pop("kept")  # a peer whose output goes straight to the topic: the topic is counted
    wrong = {k: (report_check.get(k), v) for k, v in wanted.items() if report_check.get(k) != v}
    return None if not wrong else "wrong output: " + ", ".join(f"{k}={got} (expected {v})"
                                                               for k, (got, v) in wrong.items())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"Linux {platform.release()}, Python {platform.python_version()}")


def fmt_rate(r: float) -> str:
    return f"{r / 1000:.1f}k" if r < 100_000 else f"{r / 1000:.0f}k"


def table(results: list[Result], skipped: list[tuple[str, str, str]]) -> str:
    ours = {r.job: r for r in results if r.peer == "ingest"}
    lines = ["| job | peer | records | records/s median (min–max) | vs ingest | peak RSS MB median | vs ingest |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for job in spec.JOBS:
        for r in [r for r in results if r.job == job]:
            if r.failure:
                lines.append(f"| {job} | {r.peer} | {r.records:,} | failed: {r.failure} | | | |")
                continue
            base = ours.get(job)
            rows = [(r.peer, r.rates)]
            if r.warm_rates:
                rows = [(f"{r.peer} (1st query)", r.rates), (f"{r.peer} (warm JVM)", r.warm_rates)]
            for name, rates in rows:
                med = statistics.median(rates)
                rss = statistics.median(r.rss_mb)
                vs = vs_rss = ""
                if base and not base.failure and base.rates:
                    vs = f"{med / statistics.median(base.rates):.2f}x"
                    vs_rss = f"{rss / statistics.median(base.rss_mb):.2f}x"
                lines.append(f"| {job} | {name} | {r.records:,} | {fmt_rate(med)} ({fmt_rate(min(rates))}–"
                             f"{fmt_rate(max(rates))}) | {vs} | {rss:.0f} | {vs_rss} |")
    if skipped:
        lines += ["", "Not run:", ""]
        lines += [f"- {peer}, {job}: {why}" for peer, job, why in skipped]
    return "\n".join(lines)


def chart(results: list[Result], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.failure and r.rates]
    peers = list(dict.fromkeys(r.peer for r in ok))
    jobs = [j for j in spec.JOBS if any(r.job == j for r in ok)]
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(1, len(peers))
    for n, peer in enumerate(peers):
        xs, ys, errs = [], [], []
        for x, job in enumerate(jobs):
            found = [r for r in ok if r.peer == peer and r.job == job]
            if found:
                rates = found[0].warm_rates or found[0].rates
                med = statistics.median(rates)
                xs.append(x + n * width)
                ys.append(med / 1000)
                errs.append([[(med - min(rates)) / 1000], [(max(rates) - med) / 1000]])
        if xs:
            lower = [e[0][0] for e in errs]
            upper = [e[1][0] for e in errs]
            ax.bar(xs, ys, width, label=peer + (" (warm JVM)" if peer == "pyspark" else ""),
                   yerr=[lower, upper], capsize=2)
    ax.set_xticks([x + width * (len(peers) - 1) / 2 for x in range(len(jobs))], jobs)
    ax.set_ylabel("thousand records/s (median, min–max)")
    ax.set_title("Catch-up read of one 4-partition topic, records of 100 B")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (a warm-up round comes first)")
    parser.add_argument("--only", default="", help="comma-separated peers (default: all)")
    parser.add_argument("--jobs", default="", help="comma-separated jobs (default: all)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per job run")
    parser.add_argument("--faust-records", type=int, default=FAUST_RECORDS,
                        help=f"records Faust reads (default {FAUST_RECORDS:,}): at ~2-4k records/s it takes "
                             "most of a run's time")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--from-log", type=Path, default=None,
                        help="render the results of a stopped run from its saved output instead of running")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    jobs = [j for j in spec.JOBS if not args.jobs or j in args.jobs.split(",")]
    peers = [p for p in PEERS if not only or p.name in only or p.name.split()[0] in only]
    peers = [dataclasses.replace(p, max_records=args.faust_records) if p.name == "faust" else p for p in peers]

    rounds_note = f"{args.rounds} measured rounds after a warm-up round"
    if args.from_log is not None:
        results, skipped, done = results_from_log(args.from_log.read_text(), peers, jobs, args.records)
        per_job = ", ".join(f"{job} {n}" for job, n in done.items())
        rounds_note = (f"PARTIAL RUN, stopped before its end: of the {args.rounds} planned measured rounds (after "
                       f"a warm-up round), only those every peer finished are counted, per job: {per_job}")
    else:
        broker = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            sys.path.insert(0, str(REPO))
            from ingest.testing.kafka import KafkaBroker
            broker = KafkaBroker().start()
            bootstrap = broker.bootstrap
        try:
            results, skipped = run_all(args, peers, jobs, bootstrap)
        finally:
            if broker is not None:
                broker.stop()
    load = os.getloadavg()
    header = (f"Machine: {machine()}; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.\n"
              f"{args.records:,} records of {spec.RECORD_BYTES} B on {spec.PARTITIONS} partitions "
              f"(Faust: the first {min(args.records, args.faust_records):,}), {rounds_note}, interleaved; "
              f"records/s from each job process's start until its output was "
              f"complete; peak RSS of the job's process tree.\n")
    text = header + "\n" + table(results, skipped)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text(text + "\n")
    chart(results, args.out / "latest.png")
    print(f"\nwrote {args.out / 'latest.md'} and {args.out / 'latest.png'}")


_LINE = re.compile(r"^round (\d+) (\S+) +(.+?) +(?:FAILED: (.*)|([\d,]+) rec/s +(\d+) MB(?:  warm ([\d,]+) rec/s)?)")


def results_from_log(text: str, peers: list[Peer], jobs: list[str], records: int
                     ) -> tuple[list[Result], list[tuple[str, str, str]], dict[str, int]]:
    """The results in a run's printed lines and, per job, how many measured
    rounds they count: only rounds in which every peer ran the job (a run goes
    job by job within a round, so a stopped round leaves its first jobs whole)."""
    lines: dict[tuple[int, str, str], re.Match[str]] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            lines[int(m[1]), m[2], m[3]] = m
    skipped: list[tuple[str, str, str]] = []
    for peer in peers:
        for job in jobs:
            if job not in peer.jobs:
                skipped.append((peer.name, job, peer.unsupported.get(job, "not written")))
    failures = {(m[3], m[2]): m[4] for m in lines.values() if m[4]}
    results: list[Result] = []
    rounds: dict[str, int] = {}
    for job in jobs:
        runners = [p for p in peers if job in p.jobs]
        done = 0
        while all((done + 1, job, p.name) in lines or (p.name, job) in failures for p in runners):
            done += 1
        rounds[job] = done
        for peer in runners:
            result = Result(peer.name, job, min(records, peer.max_records or records))
            result.failure = failures.get((peer.name, job))
            for round_no in range(1, done + 1):
                m = lines.get((round_no, job, peer.name))
                if m is None or m[4]:
                    break
                result.rates.append(float(m[5].replace(",", "")))
                result.rss_mb.append(float(m[6]))
                if m[7]:
                    result.warm_rates.append(float(m[7].replace(",", "")))
            if result.failure or result.rates:
                results.append(result)
    return results, skipped, rounds


def run_all(args, peers: list[Peer], jobs: list[str], bootstrap: str):
    skipped: list[tuple[str, str, str]] = []
    pythons: dict[str, Path] = {}
    for peer in peers:
        try:
            pythons[peer.name] = venvs.venv_python(peer.venv)
        except Exception as exc:  # a peer that cannot be installed is listed with the reason
            skipped.append((peer.name, "all jobs", f"venv could not be built: {exc}"))
    topic = f"peers-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    produce.fill(bootstrap, topic, args.records)
    print(f"topic {topic}: {args.records:,} records produced in {time.perf_counter() - started:.1f} s", flush=True)
    # A peer that reads only the first M records gets a topic of exactly those:
    # a prefix of a 4-partition topic read in parallel is not the first M records.
    topics = {None: topic}
    for cap in {p.max_records for p in peers if p.max_records and p.max_records < args.records}:
        topics[cap] = f"{topic}-first{cap}"
        produce.fill(bootstrap, topics[cap], cap)
    results: dict[tuple[str, str], Result] = {}
    for peer in peers:
        for job in jobs:
            if peer.name not in pythons:
                continue
            if job not in peer.jobs:
                skipped.append((peer.name, job, peer.unsupported.get(job, "not written")))
                continue
            results[peer.name, job] = Result(peer.name, job, min(args.records, peer.max_records or args.records))
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        for round_no in range(args.rounds + 1):
            for job in jobs:
                for peer in peers:
                    result = results.get((peer.name, job))
                    if result is None or result.failure:
                        continue
                    workdir = Path(tmp) / f"{peer.venv}-{job}-{round_no}"
                    try:
                        peer_topic = topics.get(peer.max_records, topic)
                        report, rss = run_job(pythons[peer.name], peer, job, bootstrap, peer_topic, result.records,
                                              workdir, args.timeout)
                        wrong = check(job, result.records, report["check"])
                        if wrong:
                            raise RuntimeError(wrong)
                    except Exception as exc:
                        result.failure = str(exc)[:300]
                        print(f"round {round_no} {job:9} {peer.name:10} FAILED: {result.failure}", flush=True)
                        continue
                    rate = result.records / report["seconds"]
                    warm = report.get("seconds_warm")
                    print(f"round {round_no} {job:9} {peer.name:10} {rate:10,.0f} rec/s {rss:6.0f} MB"
                          + (f"  warm {result.records / warm:,.0f} rec/s" if warm else "")
                          + ("  (warm-up, not counted)" if round_no == 0 else ""), flush=True)
                    if round_no == 0:
                        continue
                    result.rates.append(rate)
                    result.rss_mb.append(rss)
                    if warm:
                        result.warm_rates.append(result.records / warm)
    return list(results.values()), skipped


if __name__ == "__main__":
    main()
