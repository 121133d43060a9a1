"""Specification of the job's web UI and JSON API (`StreamingContext(ui_port=...)`),
over a real HTTP server on a free port of 127.0.0.1 and a queue stream on a manual clock."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest import ManualClock, StreamingContext
from ingest.errors import BatchFailedError, ConfigError, PortInUseError
from ingest.ui import set_process_default
from ingest.ui.views import redact_url


def get(ssc: StreamingContext, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    assert ssc.ui_url is not None
    host, port = ssc.ui_url.split("//")[1].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def api(ssc: StreamingContext, path: str, **kw: Any) -> Any:
    status, headers, body = get(ssc, "/api/v1/" + path, **kw)
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    return json.loads(body)


@pytest.fixture
def job():
    """A started job with one queue input of 3 records per batch, 3 batches run."""
    ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, log_batches=False, stop_on_signal=False)
    seen: list[int] = []
    ssc.queue_stream([[1, 2, 3]] * 10, name="numbers").foreach_batch(lambda b: seen.append(b.count()), name="count")
    ssc.start()
    ssc.step(3)
    yield ssc
    ssc.stop(graceful=False)
    ssc.close_ui()


def test_the_ui_is_off_unless_a_port_is_given():
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False)
    ssc.queue_stream([[1]]).foreach_batch(lambda b: None)
    ssc.start()
    try:
        assert ssc.ui_url is None
    finally:
        ssc.stop(graceful=False)


def test_port_zero_serves_on_a_free_port_of_loopback(job):
    assert job.ui_url.startswith("http://127.0.0.1:")
    assert not job.ui_url.endswith(":0/")


def test_status_counts_the_batches_and_records_run(job):
    status = api(job, "status")
    assert status["state"] == "running"
    assert status["batches_completed"] == 3
    assert status["records_processed"] == 9
    assert status["timeline"]["input_rate"] == [3.0, 3.0, 3.0]
    assert len(status["timeline"]["total_delay_ms"]) == 3


def test_every_page_renders_without_javascript_and_shows_the_charts(job):
    for path in ("/", "/batches", "/inputs", "/checkpoint"):
        status, headers, body = get(job, path)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"<script src=\"/static/ui.js\" defer>" in body
    _, _, overview = get(job, "/")
    for metric in ("input_rate", "scheduling_delay_ms", "processing_ms", "total_delay_ms"):
        assert f'id="timeline-{metric}"'.encode() in overview
        assert f'id="histogram-{metric}"'.encode() in overview
    assert b'id="batches-completed" data-field="batches_completed">3<' in overview


def test_static_files_ship_with_the_package(job):
    for name, kind in (("ui.js", "text/javascript"), ("ui.css", "text/css")):
        status, headers, body = get(job, f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and body
        assert b"http://" not in body and b"https://" not in body  # nothing fetched from elsewhere


def test_a_batch_shows_its_output_operations_and_typed_positions(job):
    batches = api(job, "batches")
    assert [b["status"] for b in batches["completed"]] == ["completed"] * 3
    newest = batches["completed"][0]
    batch = api(job, f"batches/{newest['id']}")
    assert batch["records"] == 3
    assert [(op["name"], op["status"]) for op in batch["output_operations"]] == [("count", "succeeded")]
    (inp,) = batch["inputs"]
    assert inp["name"] == "numbers" and inp["position"]["kind"] == "queue" and inp["position"]["records"] == 3
    status, _, page = get(job, f"/batches/{newest['id']}")
    assert status == 200 and b"Input <code>numbers</code>: 3 records" in page


def test_inputs_and_checkpoint_without_a_checkpoint_directory(job):
    (inp,) = api(job, "inputs")
    assert (inp["name"], inp["kind"], inp["last_batch_records"]) == ("numbers", "queue", 3)
    ckpt = api(job, "checkpoint")
    assert ckpt["durable"] is False and ckpt["directory"] is None
    assert ckpt["last_commit"] == api(job, "batches")["completed"][0]["id"]
    assert api(job, "receivers") == []


@pytest.mark.parametrize("path", [
    "/nope", "/api/v1/", "/api/v1/nope", "/api/v2/status", "/api/v1/batches/abc", "/api/v1/batches/1/2",
    "/api/v1/batches/-5", "/batches/notatime", "/api/v1/batches/42", "/static/../server.py", "/static/x.js",
])
def test_unknown_pages_and_malformed_api_paths_are_404_with_a_json_error(job, path):
    status, headers, body = get(job, path)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]


def test_metrics_are_served_in_prometheus_text_format(job):
    status, headers, body = get(job, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"ingest_batches_total" in body


def test_without_prometheus_client_a_job_runs_with_its_ui_and_metrics_say_how_to_install_it(tmp_path):
    """prometheus-client is an extra: a job without it (e.g. after `make demo`'s
    core install) imports, runs and serves its UI; /metrics is a 404 saying what to install."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import json, sys, urllib.error, urllib.request
        sys.modules["prometheus_client"] = None  # as if the package were not installed
        from ingest import ManualClock, StreamingContext
        ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, stop_on_signal=False)
        ssc.queue_stream([[1, 2, 3]]).count().foreach_batch(lambda b: print("count", b.collect()))
        ssc.start()
        ssc.step()
        with urllib.request.urlopen(ssc.ui_url + "api/v1/status", timeout=10) as r:
            print("status", json.loads(r.read())["state"])
        try:
            urllib.request.urlopen(ssc.ui_url + "metrics", timeout=10)
        except urllib.error.HTTPError as e:
            print("metrics", e.code, json.loads(e.read())["error"])
        ssc.stop()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 0, proc.stderr
    assert "count [3]" in proc.stdout and "status running" in proc.stdout
    assert "metrics 404" in proc.stdout and "pip install" in proc.stdout and "metrics" in proc.stdout


def test_writes_are_refused(job):
    host, port = job.ui_url.split("//")[1].rstrip("/").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", "/api/v1/status", body=b"{}")
    resp = conn.getresponse()
    assert resp.status == 405 and json.loads(resp.read())["error"]
    conn.close()


def test_a_port_in_use_is_a_clear_error_at_start_and_releases_the_checkpoint(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=port, stop_on_signal=False)
        ssc.checkpoint(str(tmp_path / "ckpt"))
        ssc.queue_stream([[1]]).foreach_batch(lambda b: None)
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use.*--ui-port"):
            ssc.start()
        # The checkpoint was not left locked: another context can start on it.
        other = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False)
        other.checkpoint(str(tmp_path / "ckpt"))
        other.queue_stream([[1]]).foreach_batch(lambda b: None)
        other.start()
        other.stop(graceful=False)
    finally:
        taken.close()


@pytest.mark.parametrize("options,message", [
    ({"ui_port": -1}, "ui_port must be a port number 0..65535"),
    ({"ui_port": 70000}, "ui_port must be a port number"),
    ({"ui_port": "80"}, "ui_port must be a port number"),
    ({"ui_port": 0, "ui_token": "two words"}, "ui_token .* must be a non-empty string without spaces"),
    ({"ui_host": "0.0.0.0"}, "ui_host= and ui_token= need ui_port="),
])
def test_bad_ui_options_are_refused_at_construction(options, message):
    with pytest.raises(ConfigError, match=message):
        StreamingContext(1.0, **options)


def test_an_access_token_is_required_as_bearer_cookie_or_query_once(monkeypatch):
    monkeypatch.setenv("INGEST_UI_TOKEN", "t0ken-from-env")
    ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, stop_on_signal=False, log_batches=False)
    ssc.queue_stream([[1]]).foreach_batch(lambda b: None)
    ssc.start()
    try:
        status, headers, _ = get(ssc, "/api/v1/status")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert get(ssc, "/", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(ssc, "/api/v1/status", {"Authorization": "Bearer t0ken-from-env"})[0] == 200
        status, headers, _ = get(ssc, "/inputs?token=t0ken-from-env")
        assert status == 303 and headers["location"] == "/inputs"
        cookie = headers["set-cookie"].split(";")[0]
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        assert get(ssc, "/inputs", {"Cookie": cookie})[0] == 200
        assert get(ssc, "/inputs", {"Cookie": "ingest_ui_token=nope"})[0] == 401
    finally:
        ssc.stop(graceful=False)


def test_a_failed_job_keeps_showing_the_failure_with_its_traceback_until_closed():
    ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, stop_on_signal=False, log_batches=False)

    def explode(batch):
        raise ValueError("the sink refused batch")

    ssc.queue_stream([[1, 2]]).foreach_batch(explode, name="sink")
    ssc.start()
    with pytest.raises(BatchFailedError):
        ssc.step()
    with pytest.raises(BatchFailedError):
        ssc.await_termination(10)
    deadline = time.monotonic() + 10
    while ssc.state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        status = api(ssc, "status")
        assert status["state"] == "failed" and "the sink refused batch" in status["error"]
        assert (status["batches_completed"], status["batches_failed"]) == (0, 1)
        assert [b["status"] for b in api(ssc, "batches")["recent"]] == ["failed"]
        (failed,) = api(ssc, "batches")["failed"]
        batch = api(ssc, f"batches/{failed['id']}")
        (op,) = batch["output_operations"]
        assert op["status"] == "failed" and op["failure"] == "ValueError: the sink refused batch"
        assert "Traceback (most recent call last)" in op["traceback"] and "in explode" in op["traceback"]
        _, _, page = get(ssc, "/")
        assert b'id="job-error"' in page and b"the sink refused batch" in page
    finally:
        url = ssc.ui_url
        ssc.close_ui()
    assert ssc.ui_url is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rstrip("/").rsplit(":", 1)[1])), timeout=2).close()


def test_a_cleanly_stopped_job_closes_its_ui():
    ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, stop_on_signal=False, log_batches=False)
    ssc.queue_stream([[1]]).foreach_batch(lambda b: None)
    ssc.start()
    ssc.step()
    ssc.stop(graceful=False)
    assert ssc.ui_url is None
    assert not [t for t in threading.enumerate() if t.name == "ingest-ui"]


def test_a_stalled_client_never_holds_up_a_batch(job):
    """A connection that sends half a request and goes silent, and one that
    never reads its response, cost the server a thread each, not a batch."""
    host, port = job.ui_url.split("//")[1].rstrip("/").rsplit(":", 1)
    silent = socket.create_connection((host, int(port)))
    silent.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # never finishes the request
    reader = socket.create_connection((host, int(port)))
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    reader.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 50)  # never reads the answers
    try:
        started = time.monotonic()
        job.step(5)
        assert time.monotonic() - started < 5
        assert api(job, "status")["batches_completed"] == 8
    finally:
        silent.close()
        reader.close()


def test_ingest_run_defaults_apply_to_contexts_built_without_ui_port():
    from ingest.ui import UIOptions

    set_process_default(UIOptions(0))
    try:
        ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
        ssc.queue_stream([[1]]).foreach_batch(lambda b: None)
        ssc.start()
        assert ssc.ui_url is not None
        ssc.stop(graceful=False)
    finally:
        set_process_default(None)


@pytest.mark.parametrize("url,shown", [
    ("s3://AKIAKEY:s3cr3t@bucket/ckpt?X-Amz-Signature=abc", "s3://bucket/ckpt"),
    ("hdfs://user@namenode:9870/ckpt", "hdfs://namenode:9870/ckpt"),
    ("/var/ckpt", "/var/ckpt"),
])
def test_locations_lose_their_credentials(url, shown):
    assert redact_url(url) == shown


def test_a_receiver_shows_its_state_restarts_and_write_ahead_log(tmp_path, wait_until):
    from receivers import Receiver

    class Batches(Receiver[int]):
        def on_start(self) -> None:
            self.store_batch(list(range(100)))

        def on_stop(self) -> None:
            pass

    ssc = StreamingContext(1.0, clock=ManualClock(), ui_port=0, write_ahead_log=True, stop_on_signal=False,
                           log_batches=False)
    ssc.checkpoint(str(tmp_path / "ckpt"))
    ssc.receiver_stream(Batches("numbers-receiver"), name="numbers").foreach_batch(lambda b: None)
    ssc.start()
    try:
        wait_until(lambda: api(ssc, "receivers") and api(ssc, "receivers")[0]["wal_bytes"], what="the WAL write")
        ssc.step()
        (receiver,) = api(ssc, "receivers")
        assert receiver["stream"] == "numbers" and receiver["name"] == "numbers-receiver"
        assert receiver["state"] == "active" and receiver["restarts"] == 0 and receiver["last_error"] is None
        assert receiver["wal_segments"] >= 1 and receiver["wal_bytes"] > 100
        assert receiver["rate"] == 100.0
        (batch,) = api(ssc, "batches")["completed"]
        (inp,) = api(ssc, f"batches/{batch['id']}")["inputs"]
        assert inp["position"]["kind"] == "blocks"
        (block,) = inp["position"]["tables"]["blocks"]["rows"]
        columns = inp["position"]["tables"]["blocks"]["columns"]
        assert dict(zip(columns, block))["num_records"] == 100
        ckpt = api(ssc, "checkpoint")
        assert ckpt["durable"] and ckpt["directory"].endswith("ckpt") and ckpt["last_commit"] == batch["id"]
        assert ckpt["pending_intents"] == [] and ckpt["write_ahead_log"] is True
        _, _, page = get(ssc, "/inputs")
        assert b"segment(s)" in page and b"numbers-receiver" in page
    finally:
        ssc.stop(graceful=False)


def test_kept_batches_hold_position_views_never_the_records_of_a_queue_stream():
    from ingest.listener import BatchCompleted, BatchInfo, BatchSubmitted, InputInfo, ProgressTracker
    from ingest.ui import UIHistory
    from offsets import QueueItems

    records = tuple(range(1000))
    info = BatchInfo(5000, 1.0, {"q": InputInfo.of("q", QueueItems(records, 1))}, 1.0, 2.0)
    history, progress = UIHistory(), ProgressTracker()
    for listener in (history, progress):
        listener.on_batch_submitted(BatchSubmitted(info))
        listener.on_batch_completed(BatchCompleted(info))
    (kept,) = history.snapshot().completed
    assert kept.inputs["q"].position is None and kept.inputs["q"].num_records == 1000
    assert progress.completed[-1].inputs["q"].position is None
    _, views = history.batch(5000)
    assert views["q"] == {"kind": "queue", "summary": "1000 record(s)", "records": 1000,
                          "fields": {"items": "1000 item(s)", "next_seq": 1}, "tables": {}}
