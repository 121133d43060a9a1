"""What the web UI and its JSON API show: plain JSON-able dicts built from
snapshots (the UI history, the checkpoint log's summary, the inputs' lag and
health), so the HTML pages and `/api/v1/` can never disagree.

Nothing here takes a lock of the scheduler, reads a file or calls a broker.
Source packages are not imported (layering): an input shows Kafka lag when it
has a `lag()` method and a write-ahead log when `wal_stats()` says so.
Secrets stay out: no input's client parameters are shown, and URLs lose any
user name, password and query string.
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Mapping

from ingest.listener import BatchInfo, format_batch_time
from ingest.ui.history import HistorySnapshot, UIHistory

if TYPE_CHECKING:
    from ingest.context import StreamingContext

TIMELINE_BATCHES = 300
"""Batches the overview's charts cover."""


def redact_url(url: str | None) -> str | None:
    """A location without credentials: user info and query strings are dropped."""
    if url is None or "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def batch_status(info: BatchInfo, active: bool) -> str:
    if info.failure is not None:
        return "failed"
    if active:
        return "processing" if info.processing_start_time is not None else "queued"
    return "completed"


def batch_summary(info: BatchInfo, interval_s: float, active: bool = False) -> dict[str, Any]:
    return {
        "id": info.batch_time_ms,
        "time": format_batch_time(info.batch_time_ms),
        "status": batch_status(info, active),
        "records": info.num_records,
        "input_rate": round(info.num_records / interval_s, 3),
        "scheduling_delay_ms": _ms(info.scheduling_delay_ms),
        "processing_ms": _ms(info.processing_delay_ms),
        "total_delay_ms": _ms(info.total_delay_ms),
        "output_operations": len(info.output_operations),
        "failed_output_operations": sum(1 for op in info.output_operations if op.failure is not None),
        "attempts": info.attempts,
        "recovered": info.recovered,
        "failure": info.failure,
    }


def batch_detail(info: BatchInfo, positions: Mapping[str, dict[str, Any]], interval_s: float,
                 active: bool = False) -> dict[str, Any]:
    out = batch_summary(info, interval_s, active)
    out["workers"] = dict(info.workers)  # partition tasks per cluster worker; {} when they ran in the job
    out["output_operations"] = [{
        "id": op.id, "name": op.name, "description": op.description,
        "status": "failed" if op.failure else ("running" if op.end_time is None else "succeeded"),
        "duration_ms": _ms(op.duration_ms), "failure": op.failure, "traceback": op.traceback,
    } for op in info.output_operations]
    out["inputs"] = [{
        "name": i.name, "records": i.num_records, "summary": i.description,
        "position": positions.get(i.name),
    } for i in info.inputs.values()]
    return out


def partition_view(p: Any) -> dict[str, Any]:
    """One partition of an input's `lag()`: the fields every lag report has
    (topic, partition, until_offset, latest_offset, lag), and the batch's first
    offset and the lag in time where the input knows them."""
    return {"topic": p.topic, "partition": p.partition, "batch_from": getattr(p, "from_offset", None),
            "batch_until": p.until_offset, "next_offset": p.until_offset, "latest_offset": p.latest_offset,
            "lag_records": p.lag, "lag_seconds": getattr(p, "lag_seconds", None)}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class Views:
    """The data of every page, for one context."""

    def __init__(self, ssc: "StreamingContext", history: UIHistory) -> None:
        self.ssc = ssc
        self.history = history

    @property
    def interval_s(self) -> float:
        return self.ssc.batch_interval

    def state(self, snap: HistorySnapshot) -> str:
        state = self.ssc.state
        if self.ssc.error is not None or (snap.stopped_at is not None and snap.stop_error):
            return "failed"
        return {"active": "running", "initialized": "not started"}.get(state, state)

    def status(self) -> dict[str, Any]:
        snap = self.history.snapshot()
        interval = self.interval_s
        timeline = [b for b in snap.completed[-TIMELINE_BATCHES:]]
        last = snap.completed[-1] if snap.completed else None
        err = self.ssc.error
        return {
            "state": self.state(snap),
            "error": (f"{type(err).__name__}: {err}" if err is not None else snap.stop_error),
            "started_at": snap.started_at,
            "stopped_at": snap.stopped_at,
            "uptime_s": None if snap.started_at is None else round((snap.stopped_at or time.time())
                                                                   - snap.started_at, 1),
            "batch_interval_s": interval,
            "batches_completed": snap.total_completed - snap.total_failed,
            "batches_failed": snap.total_failed,
            "batches_active": len(snap.active),
            "records_processed": snap.total_records,
            "inputs": len(self.ssc._graph.inputs),
            "receivers": len(snap.receivers),
            "last_batch": None if last is None else batch_summary(last, interval),
            "timeline": {
                "batch_time_ms": [b.batch_time_ms for b in timeline],
                "input_rate": [round(b.num_records / interval, 3) for b in timeline],
                "scheduling_delay_ms": [_ms(b.scheduling_delay_ms) for b in timeline],
                "processing_ms": [_ms(b.processing_delay_ms) for b in timeline],
                "total_delay_ms": [_ms(b.total_delay_ms) for b in timeline],
            },
        }

    def batches(self) -> dict[str, Any]:
        snap = self.history.snapshot()
        interval = self.interval_s
        return {
            "active": [batch_summary(b, interval, True) for b in reversed(snap.active)],
            "recent": [batch_summary(b, interval) for b in reversed(snap.completed[-10:])],
            "completed": [batch_summary(b, interval) for b in reversed(snap.completed) if b.failure is None][:100],
            "failed": [batch_summary(b, interval) for b in reversed(snap.failed)],
        }

    def batch(self, batch_id: int) -> dict[str, Any] | None:
        snap = self.history.snapshot()
        active = {b.batch_time_ms for b in snap.active}
        found = self.history.batch(batch_id)
        return None if found is None else batch_detail(found[0], found[1], self.interval_s, batch_id in active)

    def inputs(self) -> list[dict[str, Any]]:
        snap = self.history.snapshot()
        last = snap.completed[-1] if snap.completed else None
        receivers = {r.stream: r for r in snap.receivers}
        out = []
        for inp in list(self.ssc._graph.inputs):
            last_info = None if last is None else last.inputs.get(inp.name)
            item: dict[str, Any] = {
                "name": inp.name,
                "kind": getattr(inp, "kind", type(inp).__name__),
                "description": inp.describe(),
                "last_batch_records": None if last_info is None else last_info.num_records,
                "rate": None if last_info is None or last_info.num_records is None
                else round(last_info.num_records / self.interval_s, 3),
            }
            lag = getattr(inp, "lag", None)
            if callable(lag):
                parts = [partition_view(p) for p in lag()]
                item["partitions"] = parts
                item["lag_records"] = sum(p["lag_records"] for p in parts)
                ages = [p["lag_seconds"] for p in parts if p["lag_seconds"] is not None]
                item["lag_seconds"] = max(ages) if ages else None
            health = getattr(inp, "health", None)
            if callable(health):
                item["health"] = health()
            if inp.name in receivers or inp.wal_stats() is not None:
                item["receiver"] = self._receiver(inp, receivers.get(inp.name))
            out.append(item)
        return out

    def receivers(self) -> list[dict[str, Any]]:
        return [dict(i["receiver"], stream=i["name"], rate=i["rate"]) for i in self.inputs() if "receiver" in i]

    def _receiver(self, inp: Any, info: Any) -> dict[str, Any]:
        wal = inp.wal_stats()
        return {
            "name": None if info is None else info.receiver,
            "state": "not started" if info is None else ("active" if info.active else "inactive"),
            "restarts": 0 if info is None else info.restarts,
            "worker": None if info is None else info.worker,
            "last_error": None if info is None else info.last_error_message,
            "last_error_time": None if info is None else info.last_error_time,
            "wal_segments": None if wal is None else wal.segments,
            "wal_bytes": None if wal is None else wal.disk_bytes,
        }

    def checkpoint(self) -> dict[str, Any]:
        summary = self.ssc._log.summary()
        snap = self.history.snapshot()
        committed = [b for b in snap.completed if b.failure is None]
        last = summary.last_commit_ms if summary.durable else (committed[-1].batch_time_ms if committed else None)
        return {
            "durable": summary.durable,
            "directory": redact_url(summary.location),
            "last_commit": last,
            "last_commit_time": None if last is None else format_batch_time(last),
            "last_commit_at": summary.last_commit_at,
            "pending_intents": list(summary.pending),
            "state_bytes": dict(summary.state_bytes),
            "write_ahead_log": self.ssc.write_ahead_log,
        }
