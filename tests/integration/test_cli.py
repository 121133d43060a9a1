"""The `ingest` command, run as a separate process: the demo, `ingest run`
with an application file, exit codes, and a graceful stop on SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path


INGEST = [sys.executable, "-m", "ingest.cli"]


def ingest(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*INGEST, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def write_app(tmp_path: Path, source: str) -> Path:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(source))
    return app


# -- demo ----------------------------------------------------------------------------------------


def test_demo_prints_error_lines_batch_by_batch_and_a_summary_then_exits_0(tmp_path):
    started = time.monotonic()
    result = ingest("demo", "--port", "0", "--duration", "3", "--rate", "50", cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 3 + 15

    out = result.stdout
    assert re.search(r"line generator on 127\.0\.0\.1:\d+ \(50 lines/s\)", out)
    headers = re.findall(r"^-{43}\nTime: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n-{43}$", out, flags=re.M)
    assert len(headers) >= 2
    printed = [line for line in out.splitlines()
               if re.match(r"\d\d:\d\d:\d\d \d{6} ", line)]  # the generator's records
    assert printed, out
    assert all("error" in line for line in printed)

    summary = re.search(r"^ingest demo: (\d+) lines received in (\d+) batches, (\d+) of them contain 'error'$",
                        out, flags=re.M)
    assert summary, out
    received, batches, errors = map(int, summary.groups())
    assert batches >= 2
    assert 30 <= received <= 50 * (3 + 2)
    assert errors >= len(printed) >= 1
    assert "batch " in result.stderr  # the per-batch log lines


def test_demo_on_a_port_in_use_exits_2_naming_the_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = ingest("demo", "--port", str(port), "--duration", "1", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port 0" in result.stderr
    assert "Time:" not in result.stdout


def test_demo_with_a_non_positive_duration_exits_2(tmp_path):
    result = ingest("demo", "--port", "0", "--duration", "0", cwd=tmp_path, timeout=30)
    assert result.returncode == 2
    assert "--duration must be positive, got 0" in result.stderr


# -- ingest run --------------------------------------------------------------------------------------


def test_run_executes_an_app_file_as_main_with_its_arguments(tmp_path):
    app = write_app(tmp_path, """
        import sys
        from ingest import ManualClock, StreamingContext

        if __name__ == "__main__":
            factor = int(sys.argv[1])
            ssc = StreamingContext(batch_interval=1.0, clock=ManualClock())
            numbers = ssc.queue_stream([[1, 2, 3], [4, 5]])
            numbers.map(lambda x: x * factor).foreach_batch(lambda b: print("batch", b.time, b.collect()))
            numbers.count().pprint()
            ssc.start()
            ssc.step(2)
            ssc.stop()
            print("args", sys.argv[1:])
    """)
    result = ingest("run", str(app), "10", "--flag", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "batch 1000 [10, 20, 30]" in lines
    assert "batch 2000 [40, 50]" in lines
    assert lines[-1] == "args ['10', '--flag']"
    assert result.stdout.count("Time: ") == 2


def test_run_of_an_app_whose_batch_fails_exits_1_with_the_error(tmp_path):
    app = write_app(tmp_path, """
        from ingest import ManualClock, StreamingContext

        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock())
        ssc.queue_stream([[1]]).foreach_batch(lambda b: 1 / 0, name="divide")
        ssc.start()
        ssc.step(1)
    """)
    result = ingest("run", str(app), cwd=tmp_path)
    assert result.returncode == 1
    assert "ingest: BatchFailedError: batch " in result.stderr
    assert "divide" in result.stderr and "ZeroDivisionError" in result.stderr


def test_run_of_a_missing_file_exits_2(tmp_path):
    result = ingest("run", str(tmp_path / "nope.py"), cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.py" in result.stderr and "does not exist" in result.stderr


def test_run_of_an_app_whose_function_fails_shows_the_frames_of_that_function(tmp_path):
    app = write_app(tmp_path, """
        from ingest import ManualClock, StreamingContext

        def parse(line):
            return int(line)  # the line that fails

        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock())
        ssc.queue_stream([["1", "x"]]).map(parse).pprint()
        ssc.start()
        ssc.step(1)
    """)
    result = ingest("run", str(app), cwd=tmp_path)
    assert result.returncode == 1
    trace = result.stderr.split("Traceback of your code (most recent call last):\n", 1)[1]
    frames = re.findall(r'^  File "(.*)", line (\d+), in (\w+)$', trace, flags=re.M)
    assert frames == [(str(app), "5", "parse")]  # the user's frame, none of the framework's
    assert "return int(line)  # the line that fails" in trace
    assert "ValueError: invalid literal for int() with base 10: 'x'" in trace
    assert "ingest: BatchFailedError: batch " in result.stderr


def test_run_of_a_file_with_a_syntax_error_exits_2_naming_the_file_and_line(tmp_path):
    app = write_app(tmp_path, """
        from ingest import StreamingContext

        ssc = StreamingContext(batch_interval=1.0
        ssc.start()
    """)
    result = ingest("run", str(app), cwd=tmp_path)
    assert result.returncode == 2
    assert f"application file {app}, line 4: SyntaxError:" in result.stderr
    assert "fix the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_of_a_directory_exits_2_saying_it_is_a_directory(tmp_path):
    result = ingest("run", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "is a directory" in result.stderr


def test_version_prints_the_package_version(tmp_path):
    import ingest as package

    result = ingest("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ingest {package.__version__}"


def test_sigterm_stops_a_running_app_gracefully_and_processes_what_was_received(tmp_path):
    app = write_app(tmp_path, """
        import threading
        from ingest import StreamingContext
        from receivers import Receiver

        class Counting(Receiver):
            def on_start(self):
                self.stored = 0
                self.thread = threading.Thread(target=self.run)
                self.thread.start()

            def run(self):
                while not self.stop_event.is_set():
                    self.store(self.stored)
                    self.stored += 1
                    self.stop_event.wait(0.001)

            def on_stop(self):
                self.thread.join()

        receiver = Counting()
        ssc = StreamingContext(batch_interval=30.0)  # no batch is due before the signal
        processed = []
        ssc.receiver_stream(receiver).foreach_batch(lambda b: processed.extend(b.collect()))
        ssc.start()
        while receiver.stored < 200:  # records received that no batch has processed yet
            threading.Event().wait(0.01)
        print("STARTED", flush=True)
        ssc.await_termination()
        print("STORED", receiver.stored, "PROCESSED", len(processed),
              "IN ORDER", processed == list(range(receiver.stored)), flush=True)
    """)
    proc = subprocess.Popen([*INGEST, "run", str(app)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        started = threading.Event()
        lines: list[str] = []

        def read_stdout() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line.rstrip("\n"))
                if line.startswith("STARTED"):
                    started.set()

        reader = threading.Thread(target=read_stdout)
        reader.start()
        assert started.wait(30), "the app did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()  # type: ignore[union-attr]
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = re.fullmatch(r"STORED (\d+) PROCESSED (\d+) IN ORDER (True|False)", lines[-1])
    assert summary, lines
    stored, processed, in_order = summary.groups()
    assert int(stored) > 0
    assert processed == stored
    assert in_order == "True"
    assert "SIGTERM received: stopping gracefully" in proc.stderr.read()  # type: ignore[union-attr]


def test_ingest_without_a_command_shows_usage_and_exits_2(tmp_path):
    result = ingest(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: ingest" in result.stderr
