"""Totals of a context's batches since it started, for `ingest.metrics`.

A listener the context always installs: the three delays of every batch as
latency histograms and the records each input contributed to successful
batches. Plain Python, so jobs that never export metrics load no metrics library.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Mapping

from ingest.latency import LatencyHistogram, LatencySnapshot
from ingest.listener import BatchCompleted, StreamingListener


@dataclass(frozen=True)
class BatchStatsSnapshot:
    scheduling_delay: LatencySnapshot
    processing_time: LatencySnapshot
    total_delay: LatencySnapshot
    records_by_input: Mapping[str, int]


class BatchStats(StreamingListener):
    def __init__(self) -> None:
        self.scheduling_delay = LatencyHistogram()
        self.processing_time = LatencyHistogram()
        self.total_delay = LatencyHistogram()
        self._records: dict[str, int] = {}
        self._lock = threading.Lock()

    def on_batch_completed(self, event: BatchCompleted) -> None:
        info = event.info
        # Failed batches count too: their delays are what an operator is alerted on.
        for histogram, ms in ((self.scheduling_delay, info.scheduling_delay_ms),
                              (self.processing_time, info.processing_delay_ms),
                              (self.total_delay, info.total_delay_ms)):
            if ms is not None:
                histogram.observe(ms / 1000.0)
        if info.failure is not None:
            return  # its records were not processed (a restart runs the batch again)
        with self._lock:
            for name, inp in info.inputs.items():
                self._records[name] = self._records.get(name, 0) + (inp.num_records or 0)

    def snapshot(self) -> BatchStatsSnapshot:
        with self._lock:
            records = dict(self._records)
        return BatchStatsSnapshot(self.scheduling_delay.snapshot(), self.processing_time.snapshot(),
                                  self.total_delay.snapshot(), records)
