"""The `processes` executor with a job file's own classes.

A job file runs as `__main__`; its functions and classes reach the worker
processes by value (cloudpickle), and so must the results made from them:
plain pickle looks a class up by its module and name, which fails for a class
defined inside the job's `main()` and, unless the worker was forked after the
class was registered, for a class defined in `__main__`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RUN_ONE_BATCH = """
    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False,
                           executor="processes", parallelism=2)
    seen = []
    ssc.queue_stream([[1, 2, 3, 4]], num_partitions=2).map(lambda n: Reading(f"s{n % 2}", n)).foreach_batch(
        lambda batch: seen.extend(batch.collect()))
    ssc.start()
    try:
        ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert all(type(r) is Reading for r in seen), [type(r) for r in seen]
    print(sorted((r.sensor, r.value) for r in seen))
"""

CLASS = """
    @dataclass(frozen=True)
    class Reading:
        sensor: str
        value: int
"""

IMPORTS = "from dataclasses import dataclass\nfrom ingest import ManualClock, StreamingContext\n"


def run_job(tmp_path: Path, source: str) -> str:
    job = tmp_path / "job.py"
    job.write_text(source)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(job)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_results_of_a_class_defined_in_the_job_files_main_function_come_back_from_workers(tmp_path: Path) -> None:
    source = IMPORTS + "\n\ndef main():" + textwrap.indent(textwrap.dedent(CLASS + RUN_ONE_BATCH), "    ") + \
        "\n\nif __name__ == '__main__':\n    main()\n"
    assert run_job(tmp_path, source) == "[('s0', 2), ('s0', 4), ('s1', 1), ('s1', 3)]"


def test_results_of_a_class_defined_at_the_top_of_the_job_file_come_back_from_workers(tmp_path: Path) -> None:
    source = IMPORTS + textwrap.dedent(CLASS) + "\n\nif __name__ == '__main__':" + \
        textwrap.indent(textwrap.dedent(RUN_ONE_BATCH), "    ")
    assert run_job(tmp_path, source) == "[('s0', 2), ('s0', 4), ('s1', 1), ('s1', 3)]"
