"""Listener events: what happened to batches, output operations and receivers.

Events are frozen dataclasses posted on the context's `ListenerBus`. Delivery is
synchronous, in the thread that posts (the scheduler for batch events, a
receiver's thread for receiver events); a listener that raises is logged and
does not disturb the job. Keep listeners quick: a slow one delays batches.
"""

from __future__ import annotations

import datetime as _dt
import logging
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from offsets import Position

log = logging.getLogger("ingest.listener")
batch_log = logging.getLogger("ingest.batches")


def format_batch_time(time_ms: int) -> str:
    """Batch time as a readable local timestamp (what `pprint` prints)."""
    ts = _dt.datetime.fromtimestamp(time_ms / 1000.0)
    return ts.strftime("%Y-%m-%d %H:%M:%S") + (f".{time_ms % 1000:03d}" if time_ms % 1000 else "")


@dataclass(frozen=True)
class InputInfo:
    """What one input contributed to a batch."""

    name: str
    num_records: int | None
    description: str = ""
    lag: int | None = None
    """Records the source held beyond this batch when it was planned (None:
    the input cannot tell; see `InputDStream.lag`)."""
    position: Position | None = None
    """The typed position the input read (what the web UI's batch page shows)."""

    @classmethod
    def of(cls, name: str, position: Position | None, lag: int | None = None) -> "InputInfo":
        """What a batch's position says about the input (no position: nothing read)."""
        if position is None:
            return cls(name, None, "", lag)
        return cls(name, position.records, position.describe(), lag, position)


@dataclass(frozen=True)
class OutputOperationInfo:
    batch_time_ms: int
    id: int
    name: str
    description: str
    start_time: float | None = None
    end_time: float | None = None
    failure: str | None = None
    traceback: str | None = None
    """The failure's formatted traceback (None when it succeeded)."""

    @property
    def duration_ms(self) -> float | None:
        if self.start_time is None or self.end_time is None:
            return None
        return (self.end_time - self.start_time) * 1000.0


@dataclass(frozen=True)
class BatchInfo:
    """A batch's timing and sizes. Times are wall-clock seconds (time.time())."""

    batch_time_ms: int
    submission_time: float
    inputs: Mapping[str, InputInfo] = field(default_factory=dict)
    processing_start_time: float | None = None
    processing_end_time: float | None = None
    output_operations: tuple[OutputOperationInfo, ...] = ()
    attempts: int = 1
    recovered: bool = False
    failure: str | None = None
    scheduling_delay_ms: float | None = None
    """From the batch's tick (on the batch clock) to the start of its processing."""
    workers: Mapping[str, int] = field(default_factory=dict)
    """Partition tasks per worker address, over all the batch's attempts; empty
    when tasks run in the driver process (inline, threads, processes)."""

    @property
    def num_records(self) -> int:
        return sum(i.num_records or 0 for i in self.inputs.values())

    @property
    def processing_delay_ms(self) -> float | None:
        if self.processing_start_time is None or self.processing_end_time is None:
            return None
        return (self.processing_end_time - self.processing_start_time) * 1000.0

    @property
    def total_delay_ms(self) -> float | None:
        """From the batch's tick to the end of its processing."""
        if self.scheduling_delay_ms is None or self.processing_delay_ms is None:
            return None
        return self.scheduling_delay_ms + self.processing_delay_ms

    def with_(self, **changes: Any) -> "BatchInfo":
        return replace(self, **changes)

    def without_positions(self) -> "BatchInfo":
        """The same without the inputs' positions: what a listener that keeps
        many batches should keep (a queue stream's position holds its records)."""
        if all(i.position is None for i in self.inputs.values()):
            return self
        return replace(self, inputs={k: replace(i, position=None) for k, i in self.inputs.items()})


@dataclass(frozen=True)
class ReceiverInfo:
    stream: str
    receiver: str
    active: bool
    last_error_message: str | None = None
    last_error: str | None = None
    last_error_time: float | None = None
    restarts: int = 0
    worker: str | None = None
    """The Dask worker running the receiver; None when it runs in the driver."""


# -- events ------------------------------------------------------------------


@dataclass(frozen=True)
class StreamingStarted:
    time: float


@dataclass(frozen=True)
class StreamingStopped:
    time: float
    error: str | None = None


@dataclass(frozen=True)
class BatchSubmitted:
    info: BatchInfo


@dataclass(frozen=True)
class BatchStarted:
    info: BatchInfo


@dataclass(frozen=True)
class BatchCompleted:
    info: BatchInfo


@dataclass(frozen=True)
class OutputOperationStarted:
    info: OutputOperationInfo


@dataclass(frozen=True)
class OutputOperationCompleted:
    info: OutputOperationInfo


@dataclass(frozen=True)
class ReceiverStarted:
    info: ReceiverInfo


@dataclass(frozen=True)
class ReceiverError:
    info: ReceiverInfo


@dataclass(frozen=True)
class ReceiverStopped:
    info: ReceiverInfo


class StreamingListener:
    """Override the methods you need; each gets one event."""

    def on_streaming_started(self, event: StreamingStarted) -> None: ...
    def on_streaming_stopped(self, event: StreamingStopped) -> None: ...
    def on_batch_submitted(self, event: BatchSubmitted) -> None: ...
    def on_batch_started(self, event: BatchStarted) -> None: ...
    def on_batch_completed(self, event: BatchCompleted) -> None: ...
    def on_output_operation_started(self, event: OutputOperationStarted) -> None: ...
    def on_output_operation_completed(self, event: OutputOperationCompleted) -> None: ...
    def on_receiver_started(self, event: ReceiverStarted) -> None: ...
    def on_receiver_error(self, event: ReceiverError) -> None: ...
    def on_receiver_stopped(self, event: ReceiverStopped) -> None: ...


_DISPATCH = {
    StreamingStarted: "on_streaming_started",
    StreamingStopped: "on_streaming_stopped",
    BatchSubmitted: "on_batch_submitted",
    BatchStarted: "on_batch_started",
    BatchCompleted: "on_batch_completed",
    OutputOperationStarted: "on_output_operation_started",
    OutputOperationCompleted: "on_output_operation_completed",
    ReceiverStarted: "on_receiver_started",
    ReceiverError: "on_receiver_error",
    ReceiverStopped: "on_receiver_stopped",
}


class ListenerBus:
    def __init__(self) -> None:
        self._listeners: list[StreamingListener] = []
        self._lock = threading.RLock()

    def add(self, listener: StreamingListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove(self, listener: StreamingListener) -> None:
        with self._lock:
            self._listeners.remove(listener)

    def post(self, event: Any) -> None:
        method = _DISPATCH[type(event)]
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                getattr(listener, method)(event)
            except Exception:  # a broken listener must not stop the job
                log.exception("listener %r failed on %s", listener, type(event).__name__)


class LoggingListener(StreamingListener):
    """One readable log line per batch, and one per receiver event."""

    def on_batch_completed(self, event: BatchCompleted) -> None:
        info = event.info
        ops = info.output_operations
        ok = sum(1 for op in ops if op.failure is None)
        status = "ok" if info.failure is None else f"FAILED: {info.failure}"
        inputs = ", ".join(f"{i.name}={i.num_records if i.num_records is not None else '?'}"
                           + (f" lag {i.lag}" if i.lag is not None else "")
                           for i in info.inputs.values())
        batch_log.info(
            "batch %s: %d records (%s), scheduling delay %.0f ms, processing %.0f ms, outputs %d/%d %s%s%s%s",
            format_batch_time(info.batch_time_ms), info.num_records, inputs or "no inputs",
            info.scheduling_delay_ms or 0.0, info.processing_delay_ms or 0.0, ok, len(ops), status,
            f", attempt {info.attempts}" if info.attempts > 1 else "",
            ", recovered" if info.recovered else "",
            (", tasks on " + ", ".join(f"{w} x{n}" for w, n in info.workers.items())) if info.workers else "",
        )

    def on_receiver_started(self, event: ReceiverStarted) -> None:
        log.info("receiver %s of stream %s started%s", event.info.receiver, event.info.stream,
                 "" if event.info.worker is None else f" on Dask worker {event.info.worker}")

    def on_receiver_error(self, event: ReceiverError) -> None:
        log.warning("receiver %s of stream %s: %s", event.info.receiver, event.info.stream,
                    event.info.last_error_message)

    def on_receiver_stopped(self, event: ReceiverStopped) -> None:
        log.info("receiver %s of stream %s stopped", event.info.receiver, event.info.stream)


class ProgressTracker(StreamingListener):
    """Keeps the last batches and receiver states for `StreamingContext.status()`."""

    def __init__(self, retained_batches: int = 1000) -> None:
        self.completed: deque[BatchInfo] = deque(maxlen=retained_batches)
        self.receivers: dict[str, ReceiverInfo] = {}
        self.total_batches = 0
        self.total_records = 0
        self.failed_batches = 0
        self._lock = threading.Lock()

    def on_batch_completed(self, event: BatchCompleted) -> None:
        with self._lock:
            self.completed.append(event.info.without_positions())
            self.total_batches += 1
            self.total_records += event.info.num_records
            if event.info.failure is not None:
                self.failed_batches += 1

    def _receiver(self, info: ReceiverInfo) -> None:
        with self._lock:
            self.receivers[info.stream] = info

    def on_receiver_started(self, event: ReceiverStarted) -> None:
        self._receiver(event.info)

    def on_receiver_error(self, event: ReceiverError) -> None:
        self._receiver(event.info)

    def on_receiver_stopped(self, event: ReceiverStopped) -> None:
        self._receiver(event.info)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            last = self.completed[-1] if self.completed else None
            return {
                "batches_completed": self.total_batches,
                "batches_failed": self.failed_batches,
                "records_processed": self.total_records,
                "last_batch": None if last is None else {
                    "time": format_batch_time(last.batch_time_ms),
                    "time_ms": last.batch_time_ms,
                    "records": last.num_records,
                    "scheduling_delay_ms": last.scheduling_delay_ms,
                    "processing_ms": last.processing_delay_ms,
                    "failure": last.failure,
                    "workers": dict(last.workers),
                },
                "receivers": {
                    name: {"active": r.active, "restarts": r.restarts, "last_error": r.last_error_message,
                           "worker": r.worker}
                    for name, r in self.receivers.items()
                },
            }
