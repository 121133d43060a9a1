"""Fixtures shared by the unit and integration tests of the core.

`make_context` builds contexts on a `ManualClock` (batches run only on
`ssc.step()`) and stops every one it built, whatever the test did; `collect`
keeps each batch's records of a stream; `wait_until` polls a condition with a
deadline, for the few places where a real socket or thread must be waited for.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from ingest import DStream, ManualClock, StreamingContext


@pytest.fixture
def make_context() -> Any:
    made: list[StreamingContext] = []

    def make(**options: Any) -> StreamingContext:
        options.setdefault("batch_interval", 1.0)
        options.setdefault("clock", ManualClock())
        options.setdefault("stop_on_signal", False)
        ssc = StreamingContext(**options)
        made.append(ssc)
        return ssc

    yield make
    for ssc in made:
        ssc.stop(graceful=False, timeout=10)


@pytest.fixture
def collect() -> Callable[[DStream[Any]], list[list[Any]]]:
    """`collect(stream)` registers an output operation and returns the list it
    fills with one list of records per batch."""

    def register(stream: DStream[Any]) -> list[list[Any]]:
        batches: list[list[Any]] = []
        stream.foreach_batch(lambda batch: batches.append(batch.collect()), name="collect")
        return batches

    return register


@pytest.fixture
def wait_until() -> Callable[..., None]:
    def wait(condition: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.01)

    return wait
