"""`UIHistory`: the listener the web UI reads, a bounded history of batches.

Listener events arrive on the scheduler's thread; the UI's request threads
read `snapshot()`. The two meet only at this object's own short lock (held to
copy a few references, never while rendering or writing to a socket), so a
slow or stalled browser never holds up a batch, and the UI never takes a lock
of the scheduler.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Mapping

from ingest.listener import (
    BatchCompleted,
    BatchInfo,
    BatchStarted,
    BatchSubmitted,
    OutputOperationCompleted,
    OutputOperationInfo,
    OutputOperationStarted,
    ReceiverError,
    ReceiverInfo,
    ReceiverStarted,
    ReceiverStopped,
    StreamingListener,
    StreamingStarted,
    StreamingStopped,
)
from ingest.ui.positions import position_view


@dataclass(frozen=True)
class HistorySnapshot:
    """Everything the pages show of batches, at one instant."""

    started_at: float | None
    stopped_at: float | None
    stop_error: str | None
    active: tuple[BatchInfo, ...]
    """Submitted or running batches, oldest first."""
    completed: tuple[BatchInfo, ...]
    """The newest finished batches (succeeded or failed), oldest first."""
    failed: tuple[BatchInfo, ...]
    """The newest failed batches, oldest first (kept apart so they outlive the completed window)."""
    total_completed: int
    total_failed: int
    total_records: int
    receivers: tuple[ReceiverInfo, ...]


PositionViews = Mapping[str, Mapping[str, Any]]


class UIHistory(StreamingListener):
    def __init__(self, retained_batches: int = 1000, retained_failed: int = 100) -> None:
        self._lock = threading.Lock()
        self._active: OrderedDict[int, BatchInfo] = OrderedDict()
        self._ops: dict[int, dict[int, OutputOperationInfo]] = {}  # running batches' output operations so far
        self._completed: deque[BatchInfo] = deque(maxlen=retained_batches)
        self._failed: deque[BatchInfo] = deque(maxlen=retained_failed)
        self._receivers: dict[str, ReceiverInfo] = {}
        self._total_completed = self._total_failed = self._total_records = 0
        self._positions: dict[int, PositionViews] = {}  # by batch time, for the batches kept above
        self._retained = retained_batches + retained_failed
        self._started_at: float | None = None
        self._stopped_at: float | None = None
        self._stop_error: str | None = None

    # -- events (scheduler and receiver threads) ------------------------------------------

    def on_streaming_started(self, event: StreamingStarted) -> None:
        self._started_at = event.time

    def on_streaming_stopped(self, event: StreamingStopped) -> None:
        with self._lock:
            self._stopped_at, self._stop_error = event.time, event.error
            self._active.clear()
            self._ops.clear()

    def on_batch_submitted(self, event: BatchSubmitted) -> None:
        info = event.info
        views = {name: position_view(i.position) for name, i in info.inputs.items() if i.position is not None}
        with self._lock:
            self._active[info.batch_time_ms] = info.without_positions()
            self._positions[info.batch_time_ms] = views

    def on_batch_started(self, event: BatchStarted) -> None:
        with self._lock:
            self._active[event.info.batch_time_ms] = event.info.without_positions()

    def on_output_operation_started(self, event: OutputOperationStarted) -> None:
        self._op(event.info)

    def on_output_operation_completed(self, event: OutputOperationCompleted) -> None:
        self._op(event.info)

    def _op(self, info: OutputOperationInfo) -> None:
        with self._lock:
            if info.batch_time_ms in self._active:
                self._ops.setdefault(info.batch_time_ms, {})[info.id] = info

    def on_batch_completed(self, event: BatchCompleted) -> None:
        info = event.info.without_positions()
        with self._lock:
            self._active.pop(info.batch_time_ms, None)
            self._ops.pop(info.batch_time_ms, None)
            self._completed.append(info)
            self._total_completed += 1
            self._total_records += info.num_records
            if info.failure is not None:
                self._failed.append(info)
                self._total_failed += 1
            if len(self._positions) > self._retained + self._retained // 4 + len(self._active):
                # Now and then (not every batch): forget the views of batches no longer kept.
                kept = {b.batch_time_ms for b in (*self._completed, *self._failed)} | set(self._active)
                self._positions = {t: v for t, v in self._positions.items() if t in kept}

    def on_receiver_started(self, event: ReceiverStarted) -> None:
        self._receiver(event.info)

    def on_receiver_error(self, event: ReceiverError) -> None:
        self._receiver(event.info)

    def on_receiver_stopped(self, event: ReceiverStopped) -> None:
        self._receiver(event.info)

    def _receiver(self, info: ReceiverInfo) -> None:
        with self._lock:
            self._receivers[info.stream] = info

    # -- reading (request threads) -----------------------------------------------------------

    def snapshot(self) -> HistorySnapshot:
        with self._lock:
            active = tuple(
                b.with_(output_operations=tuple(self._ops[t][k] for k in sorted(self._ops[t])))
                if t in self._ops else b for t, b in self._active.items())
            return HistorySnapshot(
                self._started_at, self._stopped_at, self._stop_error, active, tuple(self._completed),
                tuple(self._failed), self._total_completed, self._total_failed, self._total_records,
                tuple(self._receivers.values()))

    def batch(self, time_ms: int) -> tuple[BatchInfo, PositionViews] | None:
        """A batch by its time (active, recently completed or failed) with its
        inputs' position views; None when not (or no longer) kept."""
        snap = self.snapshot()
        for b in (*snap.active, *reversed(snap.completed), *reversed(snap.failed)):
            if b.batch_time_ms == time_ms:
                with self._lock:
                    return b, self._positions.get(time_ms, {})
        return None


