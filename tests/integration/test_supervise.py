"""`ingest run --supervise`, as separate processes with real signals: a job
that crashes twice mid-stream writes exactly what a job that never crashed
writes; a job that always fails is given up after --max-restarts; SIGTERM to
the supervisor stops the job gracefully."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ingest.supervise import child_command

INGEST = [sys.executable, "-m", "ingest.cli"]

# 12 queued batches through a checkpoint, written idempotently: one file per
# batch time, replaced atomically, so a batch re-run after a crash rewrites
# its own file. While the counter file says fewer than 2 crashes happened, the
# run dies with os._exit after writing its 3rd batch (before the commit).
CRASHING_JOB = """
    import json, logging, os, sys, time
    from ingest import StreamingContext

    work = sys.argv[1]
    crashes_file = os.path.join(work, "crashes")
    crashes = int(open(crashes_file).read()) if os.path.exists(crashes_file) else 0
    written_this_run = 0

    def write(batch):
        global written_this_run
        records = batch.collect()
        if not records:
            return
        out = os.path.join(work, "out")
        os.makedirs(out, exist_ok=True)
        tmp = os.path.join(out, f".{batch.time}.tmp")
        with open(tmp, "w") as f:
            json.dump(records, f)
        os.replace(tmp, os.path.join(out, f"{batch.time}.json"))
        written_this_run += 1
        if written_this_run == 3 and crashes < 2:
            with open(crashes_file, "w") as f:
                f.write(str(crashes + 1))
            logging.getLogger("app").error("simulated crash %d after batch %d", crashes + 1, batch.time)
            os._exit(3)

    def build():
        global numbers
        ssc = StreamingContext(batch_interval=0.05)
        numbers = ssc.queue_stream([[n * 10 + i for i in range(3)] for n in range(12)], name="numbers")
        numbers.map(lambda n: n * 2).foreach_batch(write, name="files")
        return ssc

    ssc = StreamingContext.get_or_create(os.path.join(work, "checkpoint"), build)
    ssc.start()
    while numbers.pending():
        time.sleep(0.02)
    ssc.stop(graceful=True, timeout=30)
    ssc.await_termination()
"""


def write_app(directory: Path, source: str) -> Path:
    app = directory / "app.py"
    app.write_text(textwrap.dedent(source))
    return app


def output(work: Path) -> list[list[int]]:
    """The batches written, in batch-time order."""
    files = sorted((work / "out").glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_text()) for p in files]


def test_a_job_that_crashes_twice_writes_exactly_what_a_job_that_never_crashed_writes(tmp_path):
    app = write_app(tmp_path, CRASHING_JOB)
    calm, crashing = tmp_path / "calm", tmp_path / "crashing"
    calm.mkdir()
    crashing.mkdir()
    (calm / "crashes").write_text("2")  # it has crashed enough: this run never does
    reference = subprocess.run([*INGEST, "run", str(app), str(calm)], capture_output=True, text=True, timeout=120)
    assert reference.returncode == 0, reference.stderr

    result = subprocess.run([*INGEST, "run", "--supervise", "--restart-delay", "0.1", "--max-restarts", "3",
                             str(app), str(crashing)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (crashing / "crashes").read_text() == "2"
    expected = [[(n * 10 + i) * 2 for i in range(3)] for n in range(12)]
    assert output(calm) == expected
    assert output(crashing) == expected
    restarts = [line for line in result.stderr.splitlines() if "Restarting it in" in line]
    assert len(restarts) == 2, result.stderr
    for n, line in enumerate(restarts, start=1):
        assert f"the job exited with code 3: " in line and f"simulated crash {n} after batch" in line
    assert "Restarting it in 0.1 s" in restarts[0] and "Restarting it in 0.2 s" in restarts[1]
    assert "the job finished (exit code 0)" in result.stderr


ALWAYS_FAILING_JOB = """
    import os, sys
    with open(os.path.join(sys.argv[1], "runs"), "a") as f:
        f.write("run\\n")
    raise RuntimeError("database is down")
"""


def test_a_job_that_always_fails_is_given_up_after_max_restarts_with_a_non_zero_exit(tmp_path):
    app = write_app(tmp_path, ALWAYS_FAILING_JOB)
    result = subprocess.run([*INGEST, "run", "--supervise", "--max-restarts", "2", "--restart-window", "60",
                             "--restart-delay", "0.05", str(app), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert (tmp_path / "runs").read_text() == "run\n" * 3  # the first run and 2 restarts
    restarts = [line for line in result.stderr.splitlines() if "Restarting it in" in line]
    assert len(restarts) == 2
    assert all("exited with code 1: RuntimeError: database is down" in line for line in restarts)
    assert "Giving up: 3 failures within 60 s (--max-restarts 2, --restart-window 60)" in result.stderr


def test_a_job_with_a_configuration_error_is_not_restarted(tmp_path):
    app = write_app(tmp_path, """
        from ingest import StreamingContext
        StreamingContext(batch_interval=-1)
    """)
    result = subprocess.run([*INGEST, "run", "--supervise", "--restart-delay", "0.05", str(app)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "not restarting" in result.stderr and "batch_interval must be a positive number" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_to_the_supervisor_stops_the_job_gracefully_and_exits_with_its_status(tmp_path, sig):
    app = write_app(tmp_path, """
        import os, sys
        from ingest import StreamingContext
        ssc = StreamingContext(batch_interval=0.05)
        ssc.queue_stream([], default=[1]).count().foreach_batch(lambda b: None)
        ssc.start()
        with open(os.path.join(sys.argv[1], "started"), "w") as f:
            f.write(str(os.getpid()))
        ssc.await_termination()
        with open(os.path.join(sys.argv[1], "stopped"), "w") as f:
            f.write(ssc.state)
    """)
    supervisor = subprocess.Popen([*INGEST, "run", "--supervise", "--restart-delay", "0.05", str(app),
                                   str(tmp_path)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and supervisor.poll() is None, "the job never started"
            time.sleep(0.05)
        child_pid = int((tmp_path / "started").read_text())
        assert child_pid != supervisor.pid
        supervisor.send_signal(sig)
        _, stderr = supervisor.communicate(timeout=60)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert supervisor.returncode == 0, stderr
    assert (tmp_path / "stopped").read_text() == "stopped"  # await_termination returned: a graceful stop
    assert f"{sig.name} received: stopping gracefully" in stderr  # the job's own handler got it, once
    assert "stopping now" not in stderr
    assert "Restarting" not in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_the_child_runs_the_same_command_without_the_supervisors_options():
    argv = ["--log-level", "DEBUG", "run", "--supervise", "--max-restarts", "3", "--restart-window=60",
            "app.py", "--supervise", "x"]
    assert child_command(argv, "app.py") == [sys.executable, "-m", "ingest.cli", "--log-level", "DEBUG", "run",
                                             "app.py", "--supervise", "x"]
