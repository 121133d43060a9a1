"""The batch scheduler: the one path all data takes.

One thread, owned by the `StreamingContext`, runs batches strictly in order:

1. wait for the clock to reach `zero_time + k * batch_interval`;
2. ask every input to plan batch `t` (a typed `offsets.Position` each);
3. write the positions to the intent log, then tell every input that the
   intent is durable (`on_intent_written`, also for batches re-run from the
   intent log);
4. run every output operation over the batch's datasets;
5. when all succeeded, write the commit record (with every input's next
   position, where it resumes after a restart), then let the inputs
   acknowledge their sources (`on_batch_committed`);
6. compute the retention point (`offsets.retention`), delete the checkpoint's
   files behind it, then let every input delete its data behind it
   (`clean_up`).

A batch whose output operation fails is retried from the same positions up to
`max_batch_retries` times; after that the context stops with a
`BatchFailedError` and the batch stays uncommitted (with a checkpoint it is
re-run on restart, with exactly the same inputs).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping

from offsets import Position

from ingest.batch import Batch
from ingest.dstream import as_position
from ingest.errors import BatchFailedError, IngestError
from ingest.faults import crash_point
from ingest.listener import (
    BatchCompleted,
    BatchInfo,
    BatchStarted,
    BatchSubmitted,
    InputInfo,
    OutputOperationCompleted,
    OutputOperationInfo,
    OutputOperationStarted,
    format_batch_time,
)

if TYPE_CHECKING:
    from ingest.context import StreamingContext

log = logging.getLogger("ingest.scheduler")


class BatchScheduler:
    def __init__(self, ssc: "StreamingContext") -> None:
        self._ssc = ssc
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._stop_mode: str | None = None  # None, "graceful" or "now"
        self._drain_deadline: float | None = None
        self.next_time_ms: int | None = None
        self.last_completed_ms: int | None = None
        self.done = threading.Event()

    # -- control, from other threads ------------------------------------------

    def start(self, first_time_ms: int, pending: list[tuple[int, Mapping[str, Position]]]) -> None:
        self.next_time_ms = first_time_ms
        self._thread = threading.Thread(
            target=self._run, args=(pending,), name="ingest-batch-scheduler", daemon=False)
        self._thread.start()

    def request_stop(self, graceful: bool, timeout: float | None) -> None:
        with self._cond:
            if self._stop_mode != "now":
                self._stop_mode = "graceful" if graceful else "now"
            self._drain_deadline = None if timeout is None else time.monotonic() + timeout
            self._cond.notify_all()
        self._ssc.clock.wake()

    def join(self, timeout: float | None) -> bool:
        if self._thread is None or self._thread is threading.current_thread():
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def wait_for_batch(self, time_ms: int, timeout: float) -> bool:
        """Block until batch `time_ms` completed or the scheduler ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self.last_completed_ms is None or self.last_completed_ms < time_ms) and not self.done.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return self.last_completed_ms is not None and self.last_completed_ms >= time_ms

    # -- the scheduler thread -------------------------------------------------------

    def _stopping(self) -> bool:
        return self._stop_mode is not None

    def _run(self, pending: list[tuple[int, Mapping[str, Position]]]) -> None:
        ssc = self._ssc
        try:
            for t, plans in pending:
                if self._stop_mode == "now":
                    return
                log.info("re-running batch %s from the intent log (it has no commit)", format_batch_time(t))
                self.run_batch(t, plans, recovered=True)
            assert self.next_time_ms is not None
            while True:
                t = self.next_time_ms
                if self._stop_mode == "now":
                    return
                if self._stop_mode == "graceful":
                    left = [i.name for i in ssc._graph.inputs if i.has_unplanned_data()]
                    if not left:
                        return
                    if self._drain_deadline is not None and time.monotonic() > self._drain_deadline:
                        log.warning("graceful stop timed out with unprocessed data left in inputs %s", left)
                        return
                elif not ssc.clock.wait_until(t, self._stopping):
                    continue  # woken by a stop request: re-evaluate the mode
                self.run_batch(t)  # moves next_time_ms on to t + interval
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the context
            ssc._on_fatal(exc)
        finally:
            with self._cond:
                self.done.set()
                self._cond.notify_all()

    def run_batch(self, t: int, plans: Mapping[str, Position] | None = None, recovered: bool = False) -> BatchInfo:
        ssc = self._ssc
        graph = ssc._graph
        bus = ssc._bus
        info = BatchInfo(batch_time_ms=t, submission_time=time.time(), recovered=recovered)
        if plans is None:
            new_plans: dict[str, Position] = {}
            for inp in graph.inputs:
                try:
                    new_plans[inp.name] = as_position(inp.plan(t))
                except IngestError:
                    raise
                except Exception as exc:
                    raise BatchFailedError(
                        f"planning batch {format_batch_time(t)} failed in {inp.describe()}: "
                        f"{type(exc).__name__}: {exc}", t) from exc
            crash_point("before_intent")
            ssc._log.write_intent(t, new_plans)
            crash_point("after_intent")
            plans = new_plans
        for inp in graph.inputs:
            position = plans.get(inp.name)
            if position is not None:
                inp.on_intent_written(t, position)
        crash_point("after_intent_written")
        for inp in graph.inputs:
            inp.set_plan(t, plans.get(inp.name))
        info = info.with_(inputs={inp.name: InputInfo.of(inp.name, plans.get(inp.name), _total_lag(inp))
                                  for inp in graph.inputs})
        bus.post(BatchSubmitted(info))
        info = info.with_(processing_start_time=time.time(),
                          scheduling_delay_ms=float(max(0, ssc.clock.now_ms() - t)))
        bus.post(BatchStarted(info))

        ssc.executor.take_placements()  # forget tasks run outside a batch (an output's own Dataset work)
        attempts = ssc.max_batch_retries + 1
        for attempt in range(1, attempts + 1):
            failure = self._update_state(t)
            op_infos: list[OutputOperationInfo] = []
            if failure is None:
                op_infos, failure = self._run_outputs(t, plans, attempt, recovered)
            info = info.with_(output_operations=tuple(op_infos), attempts=attempt)
            if failure is None:
                break
            where, exc = failure
            for s in graph.stateful:
                s.abort_batch(t)
            graph.discard(t)  # the next attempt computes everything again from the same plans
            if attempt < attempts:
                log.warning("batch %s attempt %d/%d failed in %s: %s: %s; retrying with the same inputs",
                            format_batch_time(t), attempt, attempts, where, type(exc).__name__, exc)
                continue
            message = (
                f"batch {format_batch_time(t)} ({t}) failed in {where}: {type(exc).__name__}: {exc}. "
                "The batch was not committed"
                + (f" after {attempts} attempts" if attempts > 1 else "")
                + "; fix the cause and restart (with a checkpoint the batch is re-run with the same inputs), "
                  "or allow retries with StreamingContext(max_batch_retries=N).")
            info = info.with_(processing_end_time=time.time(), failure=f"{type(exc).__name__}: {exc}",
                              workers=ssc.executor.take_placements())
            bus.post(BatchCompleted(info))
            raise BatchFailedError(message, t) from exc

        crash_point("after_outputs")
        next_positions = {}
        for inp in graph.inputs:
            position = plans.get(inp.name)
            resume = None if position is None else inp.next_position(position)
            if resume is not None:
                next_positions[inp.name] = resume
        ssc._log.write_commit(t, {"records": info.num_records, "attempts": info.attempts}, graph.stateful,
                              next_positions)
        crash_point("after_commit")
        for s in graph.stateful:
            s.commit_batch(t)
        for inp in graph.inputs:
            position = plans.get(inp.name)
            if position is not None:
                inp.on_batch_committed(t, position)
        # Forgetting is its own step, behind the commit and the acknowledgements:
        # one retention point for the checkpoint's files and every input's data.
        retain_from = ssc._log.retain_from_ms(t)
        ssc._log.clean_up(retain_from)
        for inp in graph.inputs:
            inp.clean_up(retain_from)
        graph.forget(t + 1)
        info = info.with_(processing_end_time=time.time(), workers=ssc.executor.take_placements())
        bus.post(BatchCompleted(info))
        with self._cond:
            if self.next_time_ms is not None and self.next_time_ms <= t:
                self.next_time_ms = t + ssc.batch_interval_ms
            self.last_completed_ms = t
            self._cond.notify_all()
        return info

    def _update_state(self, t: int) -> tuple[str, BaseException] | None:
        """Every stateful operator computes its pending state for batch `t`, in
        graph order, whether or not an output reads it now."""
        for s in self._ssc._graph.stateful:
            try:
                s.update(t)
            except Exception as exc:  # noqa: BLE001 - reported with its batch and operator
                return f"stateful operation {s.describe()}", exc
        return None

    def replay_state(self, t: int, plans: Mapping[str, Position]) -> None:
        """Run a committed batch through the stateful operators only (used when
        recovery had to fall back to an older state snapshot)."""
        graph = self._ssc._graph
        for inp in graph.inputs:
            inp.set_plan(t, plans.get(inp.name))
        failure = self._update_state(t)
        if failure is not None:
            raise BatchFailedError(f"replaying batch {format_batch_time(t)} into {failure[0]} failed: "
                                   f"{type(failure[1]).__name__}: {failure[1]}", t) from failure[1]
        for s in graph.stateful:
            s.commit_batch(t)
        graph.forget(t + 1)

    def _run_outputs(self, t: int, plans: Mapping[str, Position], attempt: int, recovered: bool
                     ) -> tuple[list[OutputOperationInfo], Any]:
        ssc = self._ssc
        infos: list[OutputOperationInfo] = []
        for op in ssc._graph.outputs:
            if not op.stream.is_time_valid(t):
                continue
            op_info = OutputOperationInfo(t, op.id, op.name, op.describe(), start_time=time.time())
            ssc._bus.post(OutputOperationStarted(op_info))
            try:
                op.fn(Batch(t, op.stream.get_or_compute(t), plans, attempt, recovered))
            except Exception as exc:  # noqa: BLE001 - reported with its batch and operation
                op_info = replace(op_info, end_time=time.time(), failure=f"{type(exc).__name__}: {exc}",
                                  traceback=traceback.format_exc())
                infos.append(op_info)
                ssc._bus.post(OutputOperationCompleted(op_info))
                return infos, (f"output operation #{op.id} {op.describe()} over {op.stream.describe()}", exc)
            op_info = replace(op_info, end_time=time.time())
            infos.append(op_info)
            ssc._bus.post(OutputOperationCompleted(op_info))
        return infos, None


def _total_lag(inp: Any) -> int | None:
    """The input's lag in records summed over its partitions, as its newest
    plan saw it; None for an input that cannot tell."""
    lags = inp.lag()
    return sum(p.lag for p in lags) if lags else None
