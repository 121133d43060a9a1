"""A warning when an input falls further behind its source batch after batch.

A batch log line shows the lag (records left in the source when the batch was
planned), but a job slowly falling behind looks normal line by line. This
listener warns once the lag of an input grew in `growing_batches` batches in a
row, naming the input, the lag and how it grew; then not again until the input
caught up (its lag fell back to where it was before it started growing; an INFO
line says so) or `repeat_s` seconds of batch time passed. Batch times, not the
wall clock, drive it, so a `ManualClock` makes it deterministic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ingest.errors import ConfigError
from ingest.listener import BatchCompleted, StreamingListener, format_batch_time

log = logging.getLogger("ingest.lag")


@dataclass
class _Trend:
    last: int
    growing: int = 0  # batches in a row whose lag was above the one before
    base: int = 0  # the lag before the current run of growth began
    warned_at_ms: int | None = None  # batch time of the last warning of this episode
    warned_lag: int = 0


class LagWatch(StreamingListener):
    def __init__(self, growing_batches: int = 5, repeat_s: float = 300.0) -> None:
        if not isinstance(growing_batches, int) or growing_batches < 2:
            raise ConfigError(f"growing_batches must be an integer >= 2, got {growing_batches!r}")
        if not repeat_s > 0:
            raise ConfigError(f"repeat_s must be a positive number of seconds, got {repeat_s!r}")
        self.growing_batches = growing_batches
        self.repeat_ms = int(repeat_s * 1000)
        self._trends: dict[str, _Trend] = {}  # only the scheduler's thread posts batch events

    def on_batch_completed(self, event: BatchCompleted) -> None:
        info = event.info
        for name, inp in info.inputs.items():
            if inp.lag is not None:
                self._observe(name, inp.lag, info.batch_time_ms)

    def _observe(self, name: str, lag: int, time_ms: int) -> None:
        trend = self._trends.get(name)
        if trend is None:
            self._trends[name] = _Trend(last=lag, base=lag)
            return
        if lag > trend.last:
            if trend.growing == 0 and trend.warned_at_ms is None:
                trend.base = trend.last
            trend.growing += 1
        else:
            trend.growing = 0
        trend.last = lag
        if trend.warned_at_ms is not None:
            if lag <= trend.base:
                log.info("input '%s' caught up: lag %d record(s) at batch %s", name, lag, format_batch_time(time_ms))
                trend.warned_at_ms = None
                trend.growing = 0
                trend.base = lag
            elif time_ms - trend.warned_at_ms >= self.repeat_ms:
                self._warn(name, trend, lag, time_ms,
                           f"{lag - trend.warned_lag:+d} since the last warning at "
                           f"{format_batch_time(trend.warned_at_ms)}")
            return
        if trend.growing >= self.growing_batches:
            self._warn(name, trend, lag, time_ms,
                       f"grew in each of the last {trend.growing} batches, from {trend.base} "
                       f"({(lag - trend.base) / trend.growing:+.0f} per batch)")

    def _warn(self, name: str, trend: _Trend, lag: int, time_ms: int, how: str) -> None:
        log.warning("input '%s' is falling behind its source: lag %d record(s) at batch %s, %s; the job reads "
                    "less than arrives (raise max_rate_per_partition / max_records_per_batch, or speed up the "
                    "batch)", name, lag, format_batch_time(time_ms), how)
        trend.warned_at_ms = time_ms
        trend.warned_lag = lag
