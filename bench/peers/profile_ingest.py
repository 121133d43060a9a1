"""Profiles one ingest job of the benchmark (jobs_ingest.py) across all its
threads: the batches run on executor threads, which a main-thread profiler does
not see. cProfile is started in every thread the job creates; the statistics of
all threads are merged and the top entries printed (by own time, then cumulative).

Usage: python bench/peers/profile_ingest.py JOB BOOTSTRAP TOPIC RECORDS [TOP] [OUT_TOPIC]
(OUT_TOPIC, created with `produce.py create`, for the json and eos jobs)
(the topic as run.py produces it: `python bench/peers/produce.py fill BOOTSTRAP TOPIC RECORDS`)"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jobs_ingest  # noqa: E402

profiles: list[cProfile.Profile] = []
guard = threading.Lock()


def start_in_thread(*_args: object) -> None:
    profile = cProfile.Profile()
    with guard:
        profiles.append(profile)
    profile.enable()  # replaces this hook as the thread's profile function


def main() -> None:
    job, bootstrap, topic, records = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 25
    out_topic = sys.argv[6] if len(sys.argv) > 6 else ""
    threading.setprofile(start_in_thread)
    main_profile = cProfile.Profile()
    profiles.append(main_profile)
    with tempfile.TemporaryDirectory() as workdir:
        main_profile.enable()
        jobs_ingest.main(job, bootstrap, topic, records, out_topic, Path(workdir))
        main_profile.disable()
    threading.setprofile(None)
    with guard:
        for profile in profiles:
            profile.create_stats()
        stats = pstats.Stats(*[p for p in profiles if p.stats], stream=(out := io.StringIO()))
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(out.getvalue())


if __name__ == "__main__":
    main()
