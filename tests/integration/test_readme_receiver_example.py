"""The README's receiver example (examples/numbers_receiver.py, which holds the README's
block verbatim: tests/unit/test_readme_examples.py) stops quietly on Ctrl-C: the
graceful stop processes what was stored and prints no traceback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_receiver_example_stops_on_ctrl_c_without_a_traceback(tmp_path: Path) -> None:
    example = ROOT / "examples" / "numbers_receiver.py"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-u", str(example), str(tmp_path / "checkpoint")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        first_batch = threading.Event()
        stdout: list[str] = []

        def read_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                stdout.append(line)
                if re.fullmatch(r"[1-9]\d*\n", line):  # a batch that counted received records
                    first_batch.set()

        reader = threading.Thread(target=read_stdout)
        reader.start()
        assert first_batch.wait(60), f"no batch with records was printed: {''.join(stdout)}"
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert proc.wait(60) == 0, stderr
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in stderr
    assert "SIGINT received: stopping gracefully" in stderr
    assert "lost" not in stderr and "ERROR" not in stderr
