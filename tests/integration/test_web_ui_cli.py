"""`ingest run` serves the application's web UI: on by default at a free port
printed at start, `--ui-port`, `--ui-token`, `--no-ui`, and a port in use."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

INGEST = [sys.executable, "-m", "ingest.cli"]

# The application reads its own UI while it runs and prints what it got.
APP = """
    import json, sys, urllib.error, urllib.request
    from ingest import ManualClock, StreamingContext

    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock())
    ssc.queue_stream([[1, 2, 3], [4]]).foreach_batch(lambda b: None)
    ssc.start()
    ssc.step(2)
    print("URL", ssc.ui_url)
    if ssc.ui_url:
        for headers in ({}, {"Authorization": "Bearer s3cret-token"}):
            request = urllib.request.Request(ssc.ui_url + "api/v1/status", headers=headers)
            try:
                with urllib.request.urlopen(request) as resp:
                    print("STATUS", resp.status, json.dumps(json.load(resp)["batches_completed"]))
            except urllib.error.HTTPError as exc:
                print("STATUS", exc.code)
    ssc.stop()
"""


def run(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP))
    return subprocess.run([*INGEST, "run", *options, str(app)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)


def test_the_ui_is_on_by_default_at_a_free_port_printed_at_start(tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr
    printed = re.search(r"^ingest: web UI at (http://127\.0\.0\.1:\d+/)$", result.stderr, flags=re.M)
    assert printed, result.stderr
    assert f"URL {printed.group(1)}" in result.stdout
    assert "STATUS 200 2" in result.stdout


def test_no_ui_turns_it_off(tmp_path):
    result = run(tmp_path, "--no-ui")
    assert result.returncode == 0, result.stderr
    assert "URL None" in result.stdout and "web UI" not in result.stderr


def test_a_given_port_and_token(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(tmp_path, "--ui-port", str(port), "--ui-token", "s3cret-token")
    assert result.returncode == 0, result.stderr
    assert f"URL http://127.0.0.1:{port}/" in result.stdout
    assert result.stdout.count("STATUS") == 2
    assert "STATUS 401" in result.stdout and "STATUS 200 2" in result.stdout
    assert "s3cret-token" not in result.stderr


def test_a_port_in_use_fails_the_run_naming_the_port(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run(tmp_path, "--ui-port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "--ui-port" in result.stderr


def test_a_bad_port_is_a_usage_error(tmp_path):
    result = run(tmp_path, "--ui-port", "70000")
    assert result.returncode == 2
    assert "ui_port must be a port number 0..65535" in result.stderr
