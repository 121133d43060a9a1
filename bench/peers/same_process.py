"""Same-process ratio: ingest's job against the bare confluent-kafka loop doing
the same work, both run in this one process, alternately, on one topic. Process
start, imports and the machine's load between runs weigh on neither side, so
the ratio shows what the framework costs per record and per batch.

    python bench/peers/same_process.py BOOTSTRAP [--records 1000000] [--rounds 3] [--jobs count,filter,json,stateful,eos]

Fills a fresh topic of --records records (spec.py; 4 partitions) unless --topic
names one already filled. Prints, per job, the seconds of each run and the
ratio of medians (ingest records/s / bare loop records/s); the target is 0.85x.
Also the CPU seconds of the process during each run (every thread, librdkafka's
included: ingest's four partition consumers count against it) and their ratio,
which a busy machine sways less than wall time; and the load average.
Jobs that produce (json, eos) write to a fresh output topic per run. The
stateful job's bare loop keeps a dict of counts per key and emits each
record's running count per fetch (the job's output, as ours emits it per
batch); ours also checkpoints the counts of the keys each batch touched
(map_with_state). The eos
job's bare loop commits a transaction per fetch of up to 10,000 records, ours
one per batch (KafkaTransactionalSink). Each run's check line (counts, keys,
kept records) is compared with the bare loop's, so no ratio comes from a run
that dropped records.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import jobs_bare
import jobs_ingest
import produce
import spec


def timed(run, job: str, side: str, checks: dict[str, dict], cpu: list[float]) -> float:
    """The run's seconds (its CPU seconds appended to `cpu`); its check line
    must agree, on the fields both sides report, with every earlier run of the job."""
    out = io.StringIO()
    started = time.process_time()
    with contextlib.redirect_stdout(out):
        run()
    cpu.append(time.process_time() - started)
    line = json.loads([x for x in out.getvalue().splitlines() if x.startswith('{"seconds"')][-1])
    for other_side, other in checks.items():
        common = line["check"].keys() & other.keys()
        if any(line["check"][k] != other[k] for k in common):
            raise SystemExit(f"{job}: the {side} run's output {line['check']} differs from the {other_side} "
                             f"run's {other}: a ratio would compare unequal work")
    checks.setdefault(side, line["check"])
    return line["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bootstrap")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", default="count,filter,json,stateful,eos")
    parser.add_argument("--topic", default="")
    args = parser.parse_args()
    topic = args.topic or f"same-{uuid.uuid4().hex[:8]}"
    if not args.topic:
        produce.fill(args.bootstrap, topic, args.records)
    for job in args.jobs.split(","):
        bare: list[float] = []
        ours: list[float] = []
        cpu: dict[str, list[float]] = {"bare": [], "ingest": []}
        checks: dict[str, dict] = {}
        for _round in range(args.rounds):
            for runs, side in ((bare, "bare"), (ours, "ingest")):
                out_topic = ""
                if job in ("json", "eos"):
                    out_topic = f"same-out-{uuid.uuid4().hex[:10]}"
                    produce.create(args.bootstrap, out_topic, spec.PARTITIONS)
                with tempfile.TemporaryDirectory() as workdir:
                    if side == "bare":
                        runs.append(timed(lambda: jobs_bare.main(job, args.bootstrap, topic, args.records,
                                                                 out_topic), job, side, checks, cpu[side]))
                    else:
                        runs.append(timed(lambda: jobs_ingest.main(job, args.bootstrap, topic, args.records,
                                                                   out_topic, Path(workdir)), job, side, checks,
                                                      cpu[side]))
        ratio = statistics.median(bare) / statistics.median(ours)
        cpu_ratio = statistics.median(cpu["bare"]) / statistics.median(cpu["ingest"])
        print(f"{job:8} bare {' '.join(f'{s:.2f}' for s in bare)} s | ingest {' '.join(f'{s:.2f}' for s in ours)}"
              f" s | ingest/bare {ratio:.2f}x | CPU s bare {' '.join(f'{s:.2f}' for s in cpu['bare'])}, ingest "
              f"{' '.join(f'{s:.2f}' for s in cpu['ingest'])}: {cpu_ratio:.2f}x | load {os.getloadavg()[0]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
