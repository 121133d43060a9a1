"""Every file in examples/ runs as a user would run it (a subprocess, the broker from
KAFKA_BOOTSTRAP_SERVERS), stops by itself, and prints what it should."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingest.testing.kafka import create_topic, produce, read_to_end

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TESTED = {"socket_errors.py", "kafka_to_sqlite.py", "kafka_to_kafka.py", "numbers_receiver.py",
          "word_count_checkpoint.py", "kafka_receiver_wal.py", "file_stream.py", "web_ui.py", "flume_push.py",
          "flume_pull.py", "kafka_secured.py"}


def run_example(name: str, *args: str, bootstrap: str | None = None, cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if bootstrap is not None:
        env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
    print(f"{name} {' '.join(args)}: {time.monotonic() - started:.1f} s")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_every_example_has_a_test() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED


def test_socket_example_prints_the_error_lines_batch_by_batch(tmp_path: Path) -> None:
    out = run_example("socket_errors.py", "3", cwd=tmp_path)
    printed = [line for line in out.splitlines() if re.match(r"\d\d:\d\d:\d\d \d{6} ", line)]
    assert printed, out
    assert all("error" in line for line in printed)
    assert out.count("Time: ") >= 2


def test_numbers_receiver_example_counts_blocks_of_ten(tmp_path: Path) -> None:
    out = run_example("numbers_receiver.py", str(tmp_path / "checkpoint"), "3", cwd=tmp_path)
    counts = [int(line) for line in out.splitlines() if line.isdigit()]
    assert sum(counts) > 0 and all(n % 10 == 0 for n in counts), out
    assert (tmp_path / "checkpoint" / "receivers").is_dir()


def test_word_count_example_resumes_its_totals_after_a_restart(tmp_path: Path) -> None:
    checkpoint = str(tmp_path / "checkpoint")
    first = run_example("word_count_checkpoint.py", checkpoint, "3", "1", cwd=tmp_path)
    assert "words counted: 12" in first  # the first three lines
    second = run_example("word_count_checkpoint.py", checkpoint, "8", "2", cwd=tmp_path)
    # Lines 4-8 added to the restored totals: neither lost (23) nor counted twice (47).
    assert "words counted: 35" in second
    assert "the=8" in second and "fox=3" in second


@pytest.mark.kafka
def test_kafka_to_sqlite_example_writes_each_record_once_across_runs(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"example-events-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    produce(kafka_bootstrap, topic, [f"event {i}" for i in range(50)])
    db = str(tmp_path / "events.db")
    assert "rows in events: 50" in run_example("kafka_to_sqlite.py", topic, db, "3", bootstrap=kafka_bootstrap,
                                               cwd=tmp_path)
    produce(kafka_bootstrap, topic, [f"event {i}" for i in range(50, 70)])
    assert "rows in events: 70" in run_example("kafka_to_sqlite.py", topic, db, "3", bootstrap=kafka_bootstrap,
                                               cwd=tmp_path)


@pytest.mark.kafka
def test_kafka_to_kafka_example_writes_upper_cased_records_in_transactions(kafka_bootstrap: str,
                                                                           tmp_path: Path) -> None:
    topic = f"example-in-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    create_topic(kafka_bootstrap, topic + "-out", 1)
    produce(kafka_bootstrap, topic, [f"event {i}" for i in range(40)])
    out = run_example("kafka_to_kafka.py", topic, topic + "-out", "4", bootstrap=kafka_bootstrap, cwd=tmp_path)
    assert re.search(r"batches written: [1-9]", out), out
    written = read_to_end(kafka_bootstrap, topic + "-out")  # read_committed
    assert sorted(r.value for r in written) == sorted(f"EVENT {i}".encode() for i in range(40))


@pytest.mark.kafka
def test_kafka_receiver_example_receives_every_record(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"example-received-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    produce(kafka_bootstrap, topic, [f"event {i}" for i in range(60)])
    out = run_example("kafka_receiver_wal.py", topic, str(tmp_path / "checkpoint"), "8", bootstrap=kafka_bootstrap,
                      cwd=tmp_path)
    assert "records received: 60" in out


def start_example(name: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(EXAMPLES / name), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def wait_for_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"the example ended without printing {prefix!r}: {proc.stderr.read() if proc.stderr else ''}")


def test_file_stream_example_counts_the_words_of_a_file_moved_in_while_it_runs(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    proc = start_example("file_stream.py", str(incoming), str(tmp_path / "checkpoint"), "6", cwd=tmp_path)
    try:
        wait_for_line(proc, "watching")
        (incoming / ".a.txt").write_text("hello world\nhello\n")
        os.rename(incoming / ".a.txt", incoming / "a.txt")  # the atomic way the example's header describes
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "('hello', 2)" in out and "('world', 1)" in out, out
    assert "files so far: 1" in out, out


def test_web_ui_example_serves_its_status_while_it_runs(tmp_path: Path) -> None:
    import json
    import urllib.request

    proc = start_example("web_ui.py", "4", cwd=tmp_path)
    try:
        url = wait_for_line(proc, "web UI at").split()[-1]
        with urllib.request.urlopen(url + "api/v1/status", timeout=10) as response:
            status = json.loads(response.read())
        with urllib.request.urlopen(url + "inputs", timeout=10) as response:
            page = response.read().decode()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert status["state"] == "running"
    assert "<html" in page.lower() and "numbers" in page  # the inputs page lists the job's queue stream


@pytest.mark.flume
def test_flume_push_example_receives_every_event_of_a_real_agent_once(tmp_path: Path, flume_agent) -> None:
    from ingest.testing.flume import agent_config, avro_sink, memory_channel, seq_source
    from ingest.testing.jvm import free_port

    port = free_port()
    proc = start_example("flume_push.py", str(port), str(tmp_path / "checkpoint"), "20", cwd=tmp_path)
    try:
        wait_for_line(proc, "listening on port")
        flume_agent(agent_config(sources={"r1": seq_source(300, batch_size=50)}, channels={"c1": memory_channel()},
                                 sinks={"k1": avro_sink("127.0.0.1", port, batch_size=50)}))
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "events received: 300 distinct: 300" in out, out


@pytest.mark.flume
def test_flume_pull_example_polls_every_event_of_a_real_agent_once(tmp_path: Path, flume_agent,
                                                                   flume_sink_jar) -> None:
    from ingest.testing.flume import agent_config, memory_channel, pull_sink, seq_source
    from ingest.testing.jvm import free_port

    port = free_port()
    flume_agent(agent_config(sources={"r1": seq_source(300, batch_size=50)}, channels={"c1": memory_channel()},
                             sinks={"k1": pull_sink(port)}), plugin_jars=[flume_sink_jar])
    out = run_example("flume_pull.py", str(port), str(tmp_path / "checkpoint"), "15", cwd=tmp_path)
    assert "events received: 300 distinct: 300" in out, out


@pytest.mark.kafka
@pytest.mark.parametrize("listener", ["sasl", "tls"])
def test_kafka_secured_example_reads_a_topic_over_each_secured_listener(tmp_path: Path,
                                                                        kafka_sasl_bootstrap: dict,
                                                                        kafka_tls_bootstrap: dict,
                                                                        listener: str) -> None:
    import json

    topic = f"secured-{uuid.uuid4().hex[:8]}"
    settings = kafka_sasl_bootstrap if listener == "sasl" else kafka_tls_bootstrap
    create_topic(settings["bootstrap.servers"], topic, 2, client_config=settings)
    produce(settings["bootstrap.servers"], topic, [f"v{i}" for i in range(50)], config=settings)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"sasl": kafka_sasl_bootstrap, "tls": kafka_tls_bootstrap}))
    out = run_example("kafka_secured.py", str(path), topic, "4", listener, cwd=tmp_path)
    assert "records read: 50" in out, out
