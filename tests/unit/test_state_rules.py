"""The rules of `State`, the per-key state a `map_with_state` function sees
(Spark's `State`): what a call may do with it, and the error, naming the key,
when it breaks a rule. A broken rule fails the batch, so a function cannot
half-apply a change that Spark would have refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest import BatchFailedError, ManualClock, StreamingContext
from ingest.errors import IngestError, StateError
from ingest.state import State


def test_get_of_a_key_without_state_raises_naming_the_key():
    with pytest.raises(StateError, match="'sensor-7'.*get_option"):
        State(False, key="sensor-7").get()


def test_get_after_remove_raises_naming_the_key():
    state = State(True, 5, key="k")
    state.remove()
    with pytest.raises(StateError, match="'k'"):
        state.get()


def test_get_option_of_a_key_without_state_returns_the_default():
    assert State(False, key="k").get_option("none") == "none"


def test_remove_twice_in_one_call_raises_naming_the_key():
    state = State(True, 5, key=("user", 3))
    state.remove()
    with pytest.raises(StateError, match=r"remove\(\).*\('user', 3\).*already removed"):
        state.remove()


def test_update_after_remove_raises_naming_the_key():
    state = State(True, 5, key="k")
    state.remove()
    with pytest.raises(StateError, match=r"update\(\).*'k'.*removed"):
        state.update(6)


def test_update_or_remove_of_a_key_that_is_timing_out_raises_naming_the_key():
    with pytest.raises(StateError, match=r"update\(\).*'idle'.*timing out"):
        State(True, 1, timing_out=True, key="idle").update(2)
    with pytest.raises(StateError, match=r"remove\(\).*'idle'.*timing out"):
        State(True, 1, timing_out=True, key="idle").remove()


def test_remove_after_update_removes_the_state():
    state = State(True, 5, key="k")
    state.update(6)
    state.remove()
    assert not state.exists() and state.get_option() is None


def test_update_twice_keeps_the_last_value():
    state = State(False, key="k")
    state.update(1)
    state.update(2)
    assert state.exists() and state.get() == 2


def test_remove_of_a_key_without_state_is_allowed():
    state = State(False, key="k")
    state.remove()
    assert not state.exists()


def test_a_function_removing_a_key_twice_fails_the_batch_with_the_key_in_the_cause():
    def remove_twice(key: str, value: Any, state: State[Any]) -> Any:
        state.remove()
        state.remove()
        return None

    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.queue_stream([[("door-3", 1)]]).map_with_state(remove_twice).foreach_batch(lambda b: None)
    ssc.start()
    try:
        with pytest.raises(BatchFailedError) as failed:
            ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    cause = failed.value.__cause__
    assert isinstance(cause, StateError) and isinstance(cause, IngestError)
    assert "'door-3'" in str(cause)
