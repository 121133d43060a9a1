"""`make demo` installs the core alone (msgpack, cloudpickle, crc32c). The seeds'
socket job, a custom receiver and the checkpoint must then work: no optional
package (Kafka clients, fastavro, prometheus-client, boto3, hdfs, distributed)
may be imported on their path. Each test hides those packages from a fresh
interpreter, as if they were not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("confluent_kafka", "kafka", "fastavro", "avro", "prometheus_client", "boto3", "botocore", "hdfs",
            "distributed", "dask", "playwright", "psycopg")


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    hide = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL)
    return subprocess.run([sys.executable, "-c", hide + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_seed_socket_job_runs_with_the_core_install_only(tmp_path: Path) -> None:
    proc = run_without_extras("""
        import socket, threading
        from ingest import ManualClock, StreamingContext
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        def serve():
            conn, _ = server.accept()
            conn.sendall(b"ok line\\nan error line\\n")
        threading.Thread(target=serve).start()
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
        lines = ssc.socket_text_stream("127.0.0.1", port)
        seen = []
        lines.filter(lambda line: "error" in line).foreach_batch(lambda b: seen.extend(b.collect()))
        ssc.start()
        import time
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            ssc.step()
        ssc.stop()
        print("seen", seen)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "seen ['an error line']" in proc.stdout


def test_a_checkpointed_job_with_a_receiver_and_the_wal_runs_with_the_core_install_only(tmp_path: Path) -> None:
    proc = run_without_extras(f"""
        from ingest import ManualClock, StreamingContext
        from receivers import Receiver
        class Numbers(Receiver):
            def on_start(self):
                self.store_batch([1, 2, 3])
            def on_stop(self):
                pass
        ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), write_ahead_log=True, stop_on_signal=False)
        ssc.checkpoint({str(tmp_path / "checkpoint")!r})
        out = []
        ssc.receiver_stream(Numbers("numbers")).foreach_batch(lambda b: out.extend(b.collect()))
        ssc.start()
        ssc.step()
        ssc.stop()
        print("out", sorted(out))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "out [1, 2, 3]" in proc.stdout


def test_a_flume_stream_without_fastavro_says_what_to_install(tmp_path: Path) -> None:
    proc = run_without_extras("""
        from ingest.errors import ConfigError
        try:
            from receivers import flume_stream
        except ConfigError as exc:
            print("error", exc)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "error Flume streams need fastavro" in proc.stdout and "pip install" in proc.stdout
