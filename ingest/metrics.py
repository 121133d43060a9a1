"""A context's metrics in Prometheus' text format (`render_metrics`).

Every scrape builds a `CollectorRegistry` of its own holding one collector
bound to the context, so nothing is shared between contexts (two jobs in one
process export their own numbers) and nothing lives in prometheus_client's
global registry. The collector only reads snapshots: `ssc.status()` (batches
by status, receivers), the context's `BatchStats` listener (delays, records per
input), each input's `lag()` and `wal_stats()`, and the checkpoint's commit
latency. It takes no lock the scheduler holds while running a batch.

Needs `prometheus-client`, the `metrics` extra (see `ingest.install_hint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from ingest.errors import ConfigError
from ingest.install_hint import install_hint
from ingest.latency import LatencySnapshot

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # an optional dependency: say which extra brings it
    raise ConfigError(f"ingest.metrics needs prometheus-client ({exc}): {install_hint('metrics')}") from exc

if TYPE_CHECKING:
    from ingest.context import StreamingContext

# The text format generate_latest writes; every Prometheus server reads it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATES = ("initialized", "active", "stopping", "stopped")

#: name -> help, every family the collector may export (the README lists them).
METRICS: dict[str, str] = {
    "ingest_state": "1 for the context's current state (initialized, active, stopping, stopped), 0 for the others",
    "ingest_failed": "1 once the context stopped with an error",
    "ingest_batches": "Batches finished, by status (completed: committed; failed: not committed)",
    "ingest_last_completed_batch_time_seconds": "Batch time of the newest committed batch (Unix time)",
    "ingest_input_records": "Records of committed batches, per input",
    "ingest_batch_scheduling_delay_seconds": "From a batch's tick to the start of its processing",
    "ingest_batch_processing_time_seconds": "From the start to the end of a batch's processing",
    "ingest_batch_total_delay_seconds": "From a batch's tick to the end of its processing",
    "ingest_input_lag_records": "Records in the partition beyond the newest planned batch, as planning saw them",
    "ingest_input_latest_offset": "The partition's end offset when the newest batch was planned",
    "ingest_input_until_offset": "The offset the newest planned batch reads up to (exclusive)",
    "ingest_receiver_active": "1 while the input's receiver runs",
    "ingest_receiver_restarts": "Restarts of the input's receiver after failures",
    "ingest_wal_written_bytes": "Bytes appended to the input's write-ahead log by this process",
    "ingest_wal_records": "Records appended to the input's write-ahead log by this process",
    "ingest_wal_disk_bytes": "Size of the input's write-ahead log segments on disk",
    "ingest_wal_segments": "Segments of the input's write-ahead log on disk",
    "ingest_wal_fsync_seconds": "Time of each sync of appended write-ahead-log records to stable storage",
    "ingest_checkpoint_commit_seconds": "Time to write a batch's state files and commit record",
}


def render_metrics(ssc: "StreamingContext") -> tuple[bytes, str]:
    """The body of a `/metrics` answer for `ssc` and its content type."""
    return generate_latest(registry_for(ssc)), CONTENT_TYPE


def registry_for(ssc: "StreamingContext") -> CollectorRegistry:
    """A registry holding only `ssc`'s collector (for `generate_latest`, a push
    gateway, or an application's own exporter)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ContextCollector(ssc))
    return registry


class ContextCollector(Collector):
    def __init__(self, ssc: "StreamingContext") -> None:
        self._ssc = ssc

    def collect(self) -> Iterator[Metric]:
        ssc = self._ssc
        status = ssc.status()
        state = GaugeMetricFamily("ingest_state", METRICS["ingest_state"], labels=["state"])
        for name in STATES:
            state.add_metric([name], 1.0 if status["state"] == name else 0.0)
        yield state
        yield GaugeMetricFamily("ingest_failed", METRICS["ingest_failed"], value=1.0 if status["error"] else 0.0)

        batches = CounterMetricFamily("ingest_batches", METRICS["ingest_batches"], labels=["status"])
        failed = status["batches_failed"]
        batches.add_metric(["completed"], status["batches_completed"] - failed)
        batches.add_metric(["failed"], failed)
        yield batches
        committed = ssc._scheduler.last_completed_ms
        if committed is not None:
            yield GaugeMetricFamily("ingest_last_completed_batch_time_seconds",
                                    METRICS["ingest_last_completed_batch_time_seconds"], value=committed / 1000.0)

        stats = ssc.batch_stats.snapshot()
        records = CounterMetricFamily("ingest_input_records", METRICS["ingest_input_records"], labels=["input"])
        inputs = list(ssc._graph.inputs)
        for inp in inputs:
            records.add_metric([inp.name], stats.records_by_input.get(inp.name, 0))
        yield records
        for name, snap in (("ingest_batch_scheduling_delay_seconds", stats.scheduling_delay),
                           ("ingest_batch_processing_time_seconds", stats.processing_time),
                           ("ingest_batch_total_delay_seconds", stats.total_delay)):
            yield _histogram(name, [], [([], snap)])

        yield from self._lag(inputs)
        yield from self._receivers(status)
        yield from self._wal(inputs)
        commit = ssc._log.commit_latency
        if commit is not None:
            yield _histogram("ingest_checkpoint_commit_seconds", [], [([], commit.snapshot())])

    def _lag(self, inputs: list[Any]) -> Iterator[Metric]:
        labels = ["input", "topic", "partition"]
        lag = GaugeMetricFamily("ingest_input_lag_records", METRICS["ingest_input_lag_records"], labels=labels)
        latest = GaugeMetricFamily("ingest_input_latest_offset", METRICS["ingest_input_latest_offset"], labels=labels)
        until = GaugeMetricFamily("ingest_input_until_offset", METRICS["ingest_input_until_offset"], labels=labels)
        for inp in inputs:
            for p in inp.lag():
                values = [inp.name, p.topic, str(p.partition)]
                lag.add_metric(values, p.lag)
                latest.add_metric(values, p.latest_offset)
                until.add_metric(values, p.until_offset)
        yield from (lag, latest, until)

    def _receivers(self, status: dict[str, Any]) -> Iterator[Metric]:
        active = GaugeMetricFamily("ingest_receiver_active", METRICS["ingest_receiver_active"], labels=["input"])
        restarts = CounterMetricFamily("ingest_receiver_restarts", METRICS["ingest_receiver_restarts"],
                                       labels=["input"])
        for name, receiver in sorted(status["receivers"].items()):
            active.add_metric([name], 1.0 if receiver["active"] else 0.0)
            restarts.add_metric([name], receiver["restarts"])
        yield from (active, restarts)

    def _wal(self, inputs: list[Any]) -> Iterator[Metric]:
        written = CounterMetricFamily("ingest_wal_written_bytes", METRICS["ingest_wal_written_bytes"],
                                      labels=["input"])
        records = CounterMetricFamily("ingest_wal_records", METRICS["ingest_wal_records"], labels=["input"])
        disk = GaugeMetricFamily("ingest_wal_disk_bytes", METRICS["ingest_wal_disk_bytes"], labels=["input"])
        segments = GaugeMetricFamily("ingest_wal_segments", METRICS["ingest_wal_segments"], labels=["input"])
        fsyncs: list[tuple[list[str], LatencySnapshot]] = []
        for inp in inputs:
            wal = inp.wal_stats()
            if wal is None:
                continue
            written.add_metric([inp.name], wal.bytes_written)
            records.add_metric([inp.name], wal.records_written)
            disk.add_metric([inp.name], wal.disk_bytes)
            segments.add_metric([inp.name], wal.segments)
            fsyncs.append(([inp.name], wal.fsync_latency))
        yield from (written, records, disk, segments)
        yield _histogram("ingest_wal_fsync_seconds", ["input"], fsyncs)


def _histogram(name: str, labels: list[str], series: list[tuple[list[str], LatencySnapshot]]) -> Metric:
    family = HistogramMetricFamily(name, METRICS[name], labels=labels)
    for values, snap in series:
        buckets = [("+Inf" if bound == float("inf") else repr(bound), count) for bound, count in snap.buckets]
        family.add_metric(values, buckets, snap.sum)
    return family
