"""`ingest run --cluster/--workers` imposes its executor on every context the
application constructs, whatever `executor=` the application passed."""

from __future__ import annotations

import logging

import pytest

from ingest import InlineExecutor, ManualClock, StreamingContext, ThreadExecutor
from ingest.cluster import ClusterOverride, ClusterSession, set_process_default
from ingest.errors import ConfigError


class CountingExecutor(InlineExecutor):
    name = "counting"

    def __init__(self) -> None:
        self.tasks = 0
        self.shutdowns = 0

    def map(self, fn, items, affinity=None):
        self.tasks += len(items)
        return super().map(fn, items)

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def override():
    imposed = ClusterOverride(CountingExecutor(), "--cluster tcp://scheduler:8786")
    set_process_default(imposed)
    yield imposed
    set_process_default(None)


def test_the_command_line_executor_wins_over_the_apps_and_the_log_says_so(override, caplog) -> None:
    apps_own = ThreadExecutor(2)
    with caplog.at_level(logging.INFO, logger="ingest.context"):
        ssc = StreamingContext(1.0, clock=ManualClock(), executor=apps_own, stop_on_signal=False,
                               log_batches=False)
    assert ssc.executor is override.executor
    assert any("--cluster tcp://scheduler:8786" in r.getMessage() and "ThreadExecutor" in r.getMessage()
               for r in caplog.records)
    out = []
    ssc.queue_stream([[1, 2, 3, 4]], num_partitions=2).map(lambda x: x * 2).foreach_batch(
        lambda b: out.extend(b.collect()))
    ssc.start()
    ssc.step()
    ssc.stop(graceful=False)
    assert sorted(out) == [2, 4, 6, 8]
    assert override.executor.tasks >= 2
    # The command owns the cluster's executor: the context never shuts it down.
    assert override.executor.shutdowns == 0


def test_without_the_option_the_apps_executor_is_used() -> None:
    ssc = StreamingContext(1.0, clock=ManualClock(), executor="threads", parallelism=2, stop_on_signal=False)
    assert isinstance(ssc.executor, ThreadExecutor)
    ssc.stop(graceful=False)


@pytest.mark.parametrize("kwargs", [{}, {"address": "tcp://a:1", "workers": 2}, {"workers": 0}])
def test_a_session_needs_exactly_one_of_an_address_and_a_positive_worker_count(kwargs) -> None:
    with pytest.raises(ConfigError):
        ClusterSession(**kwargs)


def test_a_scheduler_that_does_not_answer_is_not_a_configuration_error() -> None:
    """`ingest run --supervise` gives up on configuration errors (exit 2) but
    restarts after others (exit 1): a scheduler that is restarting answers
    again soon."""
    pytest.importorskip("distributed")
    import socket

    from ingest.cluster import ClusterUnreachableError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    with pytest.raises(ClusterUnreachableError) as unreachable:
        with ClusterSession(address=f"tcp://127.0.0.1:{port}", connect_timeout=1.0):
            pass
    assert not isinstance(unreachable.value, ConfigError)
    assert f"--cluster tcp://127.0.0.1:{port}: cannot reach the Dask scheduler within 1 s" in str(unreachable.value)
