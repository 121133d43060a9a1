"""The lag warning: one WARNING when an input's lag grew in 5 batches in a
row, naming the input, the lag and the trend; no repeat until the input caught
up or 5 minutes of batch time passed. Batches run on a ManualClock and the
lag is scripted, so every line is deterministic."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ingest import ConfigError
from ingest.input_stats import PartitionLag
from ingest.lag_watch import LagWatch
from ingest.queue_stream import QueueInputDStream


class ScriptedLag(QueueInputDStream[int]):
    """A queue stream that reports the next scripted lag each time it plans."""

    def __init__(self, ssc: Any, lags: list[int]) -> None:
        super().__init__(ssc, name="orders")
        self._script = list(lags)
        self._lag: tuple[PartitionLag, ...] = ()

    def plan(self, time_ms: int) -> Any:
        lag = self._script.pop(0)
        self._lag = (PartitionLag.of("orders", 0, 1000, 1000 + lag),)
        return super().plan(time_ms)

    def lag(self) -> tuple[PartitionLag, ...]:
        return self._lag


def run(make_context: Any, caplog: Any, lags: list[int], batch_interval: float = 1.0) -> list[str]:
    ssc = make_context(batch_interval=batch_interval)
    ScriptedLag(ssc, lags).foreach_batch(lambda batch: None)
    ssc.start()
    with caplog.at_level(logging.INFO, logger="ingest.lag"):
        ssc.step(len(lags))
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "ingest.lag"]


def test_five_growing_batches_give_one_warning_naming_the_input_the_lag_and_the_trend(make_context, caplog):
    lines = run(make_context, caplog, [100, 110, 130, 160, 200, 250, 300, 301])
    assert len(lines) == 1
    assert lines[0].startswith("WARNING input 'orders' is falling behind its source: lag 250 record(s) at batch ")
    assert "grew in each of the last 5 batches, from 100 (+30 per batch)" in lines[0]


def test_four_growing_batches_or_a_pause_in_growth_give_no_warning(make_context, caplog):
    assert run(make_context, caplog, [0, 10, 20, 30, 40, 40, 50, 60, 70, 80]) == []


def test_the_warning_repeats_after_five_minutes_of_batch_time_while_the_lag_still_grows(make_context, caplog):
    # 30 s batches: the first warning at the 6th batch, the next 10 batches (300 s) later.
    lags = [10 * i for i in range(17)]
    lines = run(make_context, caplog, lags, batch_interval=30.0)
    assert [line.split(":")[0] for line in lines] == ["WARNING input 'orders' is falling behind its source"] * 2
    assert "lag 50 record(s)" in lines[0]
    assert "lag 150 record(s)" in lines[1] and "+100 since the last warning" in lines[1]


def test_after_catching_up_a_new_run_of_growth_warns_again(make_context, caplog):
    lines = run(make_context, caplog, [5, 10, 20, 30, 40, 50, 20, 5, 10, 20, 30, 40, 50])
    assert [line.split(" ")[0] for line in lines] == ["WARNING", "INFO", "WARNING"]
    assert "lag 50 record(s)" in lines[0]
    assert lines[1].startswith("INFO input 'orders' caught up: lag 5 record(s)")
    assert "lag 50 record(s)" in lines[2] and "from 5 (+9 per batch)" in lines[2]


@pytest.mark.parametrize("options", [{"growing_batches": 1}, {"repeat_s": 0}])
def test_bad_options_are_refused(options):
    with pytest.raises(ConfigError):
        LagWatch(**options)


def test_the_batch_log_line_shows_each_inputs_lag(make_context, caplog):
    ssc = make_context()
    ScriptedLag(ssc, [100, 90]).foreach_batch(lambda batch: None)
    ssc.queue_stream([[1, 2]], name="plain").foreach_batch(lambda batch: None)
    ssc.start()
    with caplog.at_level(logging.INFO, logger="ingest.batches"):
        ssc.step(2)
    lines = [r.getMessage() for r in caplog.records if r.name == "ingest.batches"]
    assert "(orders=0 lag 100, plain=2)" in lines[0]
    assert "(orders=0 lag 90, plain=0)" in lines[1]
