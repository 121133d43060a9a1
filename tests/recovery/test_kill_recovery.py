"""A job killed with SIGKILL at chosen points of the batch lifecycle and
restarted with `get_or_create` ends with exactly the output of a run that never
crashed, record for record (the sink is idempotent: one file per batch id)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "jobs" / "queue_job.py"
pytestmark = pytest.mark.slow


def run_job(ckpt: Path, out: Path, *extra: str, crash_at: str | None = None, crash_during: int | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("INGEST_CRASH_AT", "JOB_CRASH_DURING_OUTPUT")}
    if crash_at:
        env["INGEST_CRASH_AT"] = crash_at
    if crash_during:
        env["JOB_CRASH_DURING_OUTPUT"] = str(crash_during)
    return subprocess.run([sys.executable, str(JOB), str(ckpt), str(out), *extra], env=env,
                          capture_output=True, text=True, timeout=timeout)


def read_output(out: Path, kind: str) -> dict[str, dict]:
    directory = out / kind
    return {p.name: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("reference")
    result = run_job(base / "ckpt", base / "out")
    assert result.returncode == 0, result.stderr
    return base / "out"


CRASHES = [
    ("before_intent:3", None),
    ("after_intent:2", None),
    ("after_intent_written:3", None),
    (None, 5),  # during an output
    ("after_outputs:4", None),
    ("after_commit:3", None),
    ("after_intent:1", None),
    ("after_outputs:1", None),
    ("after_commit:1", None),
]


def test_reference_run_covers_every_batch(reference: Path) -> None:
    lines = read_output(reference, "lines")
    assert len(lines) == 24
    all_records = [r for batch in lines.values() for r in batch["records"]]
    assert len(all_records) == len(set(all_records)) == sum(b % 4 + 3 for b in range(24))


def test_sigkill_at_every_lifecycle_point_then_restart_gives_the_no_crash_output(
        tmp_path: Path, reference: Path) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    for crash_at, during in CRASHES:
        result = run_job(ckpt, out, crash_at=crash_at, crash_during=during)
        assert result.returncode == -signal.SIGKILL, (crash_at, during, result.stdout, result.stderr)
    final = run_job(ckpt, out)
    assert final.returncode == 0, final.stderr
    assert read_output(out, "lines") == read_output(reference, "lines")
    assert read_output(out, "totals") == read_output(reference, "totals")


def test_code_change_between_restarts_keeps_output_and_state(tmp_path: Path, reference: Path) -> None:
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    first = run_job(ckpt, out, crash_at="after_outputs:6")
    assert first.returncode == -signal.SIGKILL, first.stderr
    upgraded = run_job(ckpt, out, "--extra", crash_at="after_intent:4")
    assert upgraded.returncode == -signal.SIGKILL, upgraded.stderr
    final = run_job(ckpt, out, "--extra")
    assert final.returncode == 0, final.stderr
    assert read_output(out, "lines") == read_output(reference, "lines")
    assert read_output(out, "totals") == read_output(reference, "totals")
    counts = read_output(out, "counts")
    lines = read_output(reference, "lines")
    assert counts, "the added output ran"
    for name, batch in counts.items():
        assert batch["records"] == [len(lines[name]["records"])]


def test_external_sigkill_at_random_moments_with_a_real_clock(tmp_path: Path, reference: Path) -> None:
    """Kill from outside at arbitrary moments (wall-clock batches of 50 ms)."""
    import random
    import time

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    rng = random.Random(7)
    for _ in range(6):
        env = {k: v for k, v in os.environ.items() if k != "INGEST_CRASH_AT"}
        proc = subprocess.Popen([sys.executable, str(JOB), str(ckpt), str(out), "--clock", "system"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = run_job(ckpt, out, "--clock", "system")
    assert final.returncode == 0, final.stderr
    # Batch times differ from the manual-clock reference; compare contents in order.
    def in_order(kind: str) -> list:
        return [b["records"] for _, b in sorted(read_output(out, kind).items(), key=lambda kv: kv[1]["time"])
                if b["records"] or kind == "lines"]
    got_lines = [r for b in in_order("lines") for r in b]
    want_lines = [r for b in read_output(reference, "lines").values() for r in b["records"]]
    assert sorted(got_lines) == sorted(want_lines)
    assert len(got_lines) == len(set(got_lines)), "no record was processed twice into different batches"
    final_totals = sorted(read_output(out, "totals").items(), key=lambda kv: kv[1]["time"])[-1][1]["records"]
    want_totals = max(read_output(reference, "totals").values(), key=lambda b: b["time"])["records"]
    assert final_totals == want_totals
