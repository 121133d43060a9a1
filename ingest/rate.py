"""Backpressure: estimate how many records per second the job can process.

`PIDRateEstimator` follows Spark Streaming's formula and defaults
(proportional 1.0, integral 0.2, derivative 0.0, minimum 100 records/s): after
each completed batch it compares the rate the batch was processed at with the
rate it was fed at, and adds the backlog (scheduling delay) as the integral
term. `RateController` feeds it from batch-completed events and hands the
latest rate to its input: the direct Kafka stream caps its offset ranges with
it. Receivers are not driven by it: they are limited by `max_rate` and slowed
down by their bounded buffers and `max_unprocessed_records`.

Unlike Spark, an input with backpressure on uses `initial_rate` from its very
first batch (including the catch-up batch after downtime) until the estimator
has an opinion, so a restart never starts with an unbounded batch.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from ingest.errors import ConfigError
from ingest.listener import BatchCompleted, StreamingListener

log = logging.getLogger("ingest.rate")


class PIDRateEstimator:
    def __init__(self, batch_interval_ms: int, proportional: float = 1.0, integral: float = 0.2,
                 derivative: float = 0.0, min_rate: float = 100.0) -> None:
        if batch_interval_ms <= 0:
            raise ConfigError(f"batch interval must be positive, got {batch_interval_ms} ms")
        for name, value in (("proportional", proportional), ("integral", integral), ("derivative", derivative)):
            if value < 0:
                raise ConfigError(f"PID {name} gain must be >= 0, got {value}")
        if min_rate <= 0:
            raise ConfigError(f"PID min_rate must be > 0, got {min_rate}")
        self.batch_interval_ms = batch_interval_ms
        self.kp, self.ki, self.kd = proportional, integral, derivative
        self.min_rate = min_rate
        self._first = True
        self._latest_time = -1
        self._latest_rate = -1.0
        self._latest_error = -1.0

    def compute(self, time_ms: int, num_records: int, processing_delay_ms: float,
                scheduling_delay_ms: float) -> float | None:
        """The new rate in records/s, or None when there is nothing to learn
        from this batch (no records, or an old batch)."""
        if not (time_ms > self._latest_time and num_records > 0 and processing_delay_ms > 0):
            return None
        delay_since_update = (time_ms - self._latest_time) / 1000.0
        processing_rate = num_records / processing_delay_ms * 1000.0
        error = self._latest_rate - processing_rate
        historical_error = scheduling_delay_ms * processing_rate / self.batch_interval_ms
        d_error = (error - self._latest_error) / delay_since_update
        new_rate = max(self._latest_rate - self.kp * error - self.ki * historical_error - self.kd * d_error,
                       self.min_rate)
        self._latest_time = time_ms
        if self._first:
            self._latest_rate = processing_rate
            self._latest_error = 0.0
            self._first = False
            return None
        self._latest_rate = new_rate
        self._latest_error = error
        return new_rate


class RateController(StreamingListener):
    """Listens to completed batches and keeps the latest estimated rate of one input."""

    def __init__(self, input_name: str, estimator: PIDRateEstimator,
                 publish: Callable[[float], None] | None = None) -> None:
        self.input_name = input_name
        self.estimator = estimator
        self._publish = publish
        self._lock = threading.Lock()
        self._rate: float | None = None

    @property
    def latest_rate(self) -> float | None:
        with self._lock:
            return self._rate

    def on_batch_completed(self, event: BatchCompleted) -> None:
        info = event.info
        if info.failure is not None or info.recovered:
            return
        mine = info.inputs.get(self.input_name)
        if mine is None or not mine.num_records:
            return
        rate = self.estimator.compute(info.batch_time_ms, mine.num_records, info.processing_delay_ms or 0.0,
                                      info.scheduling_delay_ms or 0.0)
        if rate is None:
            return
        with self._lock:
            self._rate = rate
        log.debug("input %s: estimated rate %.0f records/s", self.input_name, rate)
        if self._publish is not None:
            self._publish(rate)
