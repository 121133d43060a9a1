"""`/metrics` as Prometheus reads it: `render_metrics(ssc)` parsed with
prometheus_client's own parser, every value checked against `ssc.status()` or
against what the job did."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest import BatchFailedError
from ingest.metrics import METRICS, render_metrics
from receivers import Receiver


def scrape(ssc: Any) -> dict[str, Any]:
    """Family name -> {labels as a sorted tuple of pairs + sample name: value}."""
    body, content_type = render_metrics(ssc)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {}
    for family in text_string_to_metric_families(body.decode()):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    return families[name][(sample or name, tuple(sorted(labels.items())))]


def test_batches_records_and_delays_match_the_status(make_context):
    ssc = make_context()
    ssc.queue_stream([[1, 2, 3], [4, 5], [], [6]], name="numbers").foreach_batch(lambda b: b.collect())
    ssc.start()
    ssc.step(5)
    families = scrape(ssc)
    status = ssc.status()
    assert status["batches_completed"] == 5 and status["batches_failed"] == 0
    assert value(families, "ingest_batches", "ingest_batches_total", status="completed") == 5
    assert value(families, "ingest_batches", "ingest_batches_total", status="failed") == 0
    assert value(families, "ingest_input_records", "ingest_input_records_total", input="numbers") == 6
    assert status["records_processed"] == 6
    for name in ("ingest_batch_scheduling_delay_seconds", "ingest_batch_processing_time_seconds",
                 "ingest_batch_total_delay_seconds"):
        assert value(families, name, f"{name}_count") == 5
        assert value(families, name, f"{name}_bucket", le="+Inf") == 5
    assert value(families, "ingest_state", state="active") == 1
    assert value(families, "ingest_state", state="stopped") == 0
    assert value(families, "ingest_last_completed_batch_time_seconds") == status["last_batch"]["time_ms"] / 1000
    assert set(families) <= set(METRICS), "every exported family is documented"


def test_a_failed_batch_is_counted_as_failed_and_the_context_as_failed(make_context):
    ssc = make_context()

    def output(batch: Any) -> None:
        if 13 in batch.collect():
            raise ValueError("unlucky")

    ssc.queue_stream([[1], [13]], name="numbers").foreach_batch(output)
    ssc.start()
    ssc.step(1)
    with pytest.raises(Exception, match="unlucky"):
        ssc.step(1)
    with pytest.raises(BatchFailedError):
        ssc.await_termination(10)
    families = scrape(ssc)
    status = ssc.status()
    assert status["batches_failed"] == 1
    assert value(families, "ingest_batches", "ingest_batches_total", status="completed") == 1
    assert value(families, "ingest_batches", "ingest_batches_total", status="failed") == 1
    assert value(families, "ingest_input_records", "ingest_input_records_total", input="numbers") == 1
    assert value(families, "ingest_failed") == 1
    assert value(families, "ingest_state", state="stopped") == 1


def test_two_contexts_export_their_own_numbers(make_context):
    first, second = make_context(), make_context()
    first.queue_stream([[1, 2]], name="a").foreach_batch(lambda b: b.collect())
    second.queue_stream([[1, 2, 3]], name="b").foreach_batch(lambda b: b.collect())
    first.start()
    second.start()
    first.step(3)
    second.step(1)
    one, two = scrape(first), scrape(second)
    assert value(one, "ingest_batches", "ingest_batches_total", status="completed") == 3
    assert value(two, "ingest_batches", "ingest_batches_total", status="completed") == 1
    assert list(one["ingest_input_records"]) == [("ingest_input_records_total", (("input", "a"),))]
    assert value(two, "ingest_input_records", "ingest_input_records_total", input="b") == 3


class FailingOnce(Receiver[str]):
    """Fails its first start, then stores one block per start."""

    def __init__(self) -> None:
        super().__init__("failing-once")
        self.starts = 0

    def on_start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise OSError("source unavailable")
        self.store_batch([f"record-{i}" for i in range(10)])

    def on_stop(self) -> None:
        pass


def test_receiver_restarts_wal_and_checkpoint_commits(make_context, tmp_path, wait_until):
    ssc = make_context(block_interval=0.01, write_ahead_log=True)
    ssc.checkpoint(str(tmp_path / "checkpoint"))
    stream = ssc.receiver_stream(FailingOnce(), name="source", restart_delay=0.01, max_restart_delay=0.02)
    stream.foreach_batch(lambda b: b.collect())
    ssc.start()
    wait_until(lambda: stream.records_received == 10, what="the block of the second start")
    ssc.step(2)
    families = scrape(ssc)
    status = ssc.status()
    assert status["receivers"]["source"]["restarts"] == 1
    assert value(families, "ingest_receiver_restarts", "ingest_receiver_restarts_total", input="source") == 1
    assert value(families, "ingest_receiver_active", input="source") == 1

    wal = stream.block_log.wal
    assert wal.fsyncs >= 1
    assert value(families, "ingest_wal_written_bytes", "ingest_wal_written_bytes_total", input="source") \
        == wal.bytes_written > 0
    assert value(families, "ingest_wal_records", "ingest_wal_records_total", input="source") == wal.records_written
    assert value(families, "ingest_wal_disk_bytes", input="source") == wal.disk_bytes
    assert value(families, "ingest_wal_segments", input="source") == len(wal.segments)
    assert value(families, "ingest_wal_fsync_seconds", "ingest_wal_fsync_seconds_count", input="source") \
        == wal.fsyncs
    assert value(families, "ingest_wal_fsync_seconds", "ingest_wal_fsync_seconds_sum", input="source") > 0
    assert value(families, "ingest_checkpoint_commit_seconds", "ingest_checkpoint_commit_seconds_count") == 2
    assert value(families, "ingest_input_records", "ingest_input_records_total", input="source") == 10


def test_a_job_without_checkpoint_or_receivers_exports_no_such_series(make_context):
    ssc = make_context()
    ssc.queue_stream([[1]], name="numbers").foreach_batch(lambda b: b.collect())
    ssc.start()
    ssc.step(1)
    families = scrape(ssc)
    assert "ingest_checkpoint_commit_seconds" not in families
    assert families["ingest_receiver_restarts"] == {}
    assert families["ingest_input_lag_records"] == {}
