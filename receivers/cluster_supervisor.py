"""The driver's side of a receiver that runs on a Dask worker.

`ClusterReceiverSupervisor` stands where `ReceiverSupervisor` stands in a
local job (the input stream starts and stops it the same way) but runs the
receiver as a long-running task on a worker (`receivers.worker_receiver`):

- placement: `receivers.placement` picks the worker (the receiver's
  `preferred_location`, else the least loaded live worker);
- supervision: a thread of this object (started in `start`, joined in
  `stop`) drains the run's queue (block references to track, receiver
  events to post to the context's listeners, a fatal error to stop the job)
  and watches the worker: when it leaves the cluster, the receiver is started
  again on another live worker, and the input stream is told which workers are
  left so it can count the blocks that died with it;
- the scheduler's restart: its workers close with it (`distributed` does not
  reconnect them) and the run's queue, which lived in it, is gone. The watch
  thread waits for the driver's client to reconnect and for a worker to join
  (`SCHEDULER_RETURN_S`), makes the queue again and starts the receiver on a
  new worker; with the write-ahead log on, the blocks that died with the old
  workers are read from it, and the source resends what was not acknowledged;
- the worker-side supervisor does the rest as in a local job (restarts with
  backoff after the receiver's own failures, `max_consecutive_failures`).

A receiver is pickled once, before it starts, to go to its worker
(`receivers.shipping`); every run, the first and each restart, starts from
that same unstarted copy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ReceiverError
from ingest.listener import ReceiverError as ReceiverErrorEvent
from ingest.listener import ReceiverInfo, ReceiverStarted, ReceiverStopped
from receivers import block_comms
from receivers.block import BlockInfo
from receivers.placement import place_receiver
from receivers.shipping import pack_receiver
from receivers.supervision import ReceiverSupervision
from receivers.worker_backpressure import Backpressure, UnprocessedCount
from receivers.worker_receiver import ReceiverRun, request_stop, run_receiver

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.executor import DaskExecutor
    from receivers.receiver import Receiver

log = logging.getLogger("receivers.cluster_supervisor")

WATCH_S = 0.05
LIVENESS_S = 0.25
SCHEDULER_RETURN_S = 60.0
"""How long the supervision waits for a lost scheduler (or one restarted with
no workers yet) before it stops the job."""

_EVENTS = {"started": ReceiverStarted, "error": ReceiverErrorEvent, "stopped": ReceiverStopped}


class ClusterReceiverSupervisor(ReceiverSupervision):
    def __init__(self, ssc: "StreamingContext", stream: str, receiver: "Receiver[Any]", executor: "DaskExecutor", *,
                 replication: int, on_block: Callable[[BlockInfo, list[Any] | None], None],
                 on_workers_left: Callable[[str, set[str]], None], hosting: Callable[[], list[str]],
                 recovered: Callable[[], list[Any]], options: Mapping[str, Any], wal: bool = False,
                 max_unprocessed_records: int, counts: Callable[[], tuple[int, int]]) -> None:
        super().__init__(ssc, stream, receiver)
        self._executor = executor
        self.replication = replication
        self._on_block = on_block
        self._on_workers_left = on_workers_left
        self._hosting = hosting
        self._recovered = recovered
        self._options = dict(options)
        self._wal = wal
        self._max_unprocessed = max_unprocessed_records
        self._counts = counts  # the stream's (stored, processed) records, for the run's backpressure
        self._processed: UnprocessedCount | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()  # the watch thread should end
        self._thread: threading.Thread | None = None
        self._future: Any = None
        self._run_id: str | None = None
        self._queue: Any = None
        self._tag = uuid.uuid4().hex[:12]
        self._scheduler_id: str | None = None
        self._packed = b""
        self._runs = 0
        self.worker: str | None = None
        """The worker running the receiver now (None before start)."""
        # self.restarts: restarts on another worker after a worker died (the
        # worker-side supervisor counts the receiver's own restarts).
        self.records_dropped = 0

    # -- what the input stream reads --------------------------------------------------

    @property
    def client(self) -> Any:
        return self._executor.client

    def live_workers(self) -> set[str]:
        return set(self.client.nthreads())

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        from distributed import Queue

        self._packed = pack_receiver(self.receiver, self.stream)
        self._scheduler_id = self._scheduler()
        block_comms.register(self.client)  # replicas and the log's reads go worker to worker
        self._queue = Queue(f"ingest-receiver-{self.stream}-{self._tag}", client=self.client)
        self._processed = UnprocessedCount(f"ingest-receiver-{self.stream}-{self._tag}-processed", self.client)
        self._launch(first=True)
        self._thread = threading.Thread(target=self._watch, name=f"receiver-cluster-{self.stream}")
        self._thread.start()

    def _launch(self, *, first: bool) -> None:
        live = sorted(self.client.nthreads())
        worker = place_receiver(self.stream, live, self._hosting(),
                                getattr(self.receiver, "preferred_location", None))
        if worker is None:
            raise ReceiverError(f"receiver {self.receiver.name} of stream {self.stream}: no live Dask worker to "
                                "run it on; start workers (dask worker SCHEDULER) or check the cluster")
        self._runs += 1
        run_id = f"{self.stream}-{self._tag}-{self._runs}"
        stored, processed = self._counts()
        assert self._processed is not None
        self._processed.publish(processed)  # before the run can read it
        run = ReceiverRun(self.stream, self._packed, run_id, self._queue.name, self._ssc.block_interval_ms,
                          self.replication, self._wal, tuple(self._recovered()), self._options,
                          Backpressure(self._max_unprocessed, stored, processed, self._processed.name))
        future = self.client.submit(run_receiver, run, workers=[worker], allow_other_workers=False, pure=False,
                                    key=f"ingest-receiver-{run_id}")
        with self._lock:
            self._future, self._run_id, self.worker = future, run_id, worker
        log.info("stream %s: receiver %s %s on Dask worker %s", self.stream, self.receiver.name,
                 "placed" if first else "restarted", worker)

    def stop(self, graceful: bool, timeout: float | None = 10.0) -> None:
        """Stop the receiver on its worker (graceful: everything it buffered is
        stored first) and track every block it stored before that."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            future, worker, run_id = self._future, self.worker, self._run_id
        if future is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if worker not in self.live_workers():
                # Gone with its worker (or the scheduler): asking it would only
                # wait for the connection to time out.
                raise ReceiverError(f"Dask worker {worker} is no longer in the cluster")
            self.client.run(request_stop, run_id, graceful, timeout, workers=[worker])
            result = future.result(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()) + 5)
            self.records_dropped += int(result.get("records_dropped", 0))
        except Exception as exc:  # noqa: BLE001 - the worker died or the stop timed out: said, not raised
            log.warning("stream %s: receiver %s on Dask worker %s did not stop cleanly: %s: %s", self.stream,
                        self.receiver.name, self.worker, type(exc).__name__, exc)
            future.cancel()
        finally:
            self._drain()
            self.receiver_running = False
            future.release()
            if self._processed is not None:
                self._processed.delete()

    # -- the watch thread ---------------------------------------------------------------

    def _watch(self) -> None:
        next_check = 0.0
        failing_since: float | None = None  # calls through the scheduler fail since then
        while not self._done.is_set():
            try:
                self._drain()
                if self._processed is not None:  # batches committed since: the run may store more
                    self._processed.publish(self._counts()[1])
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + LIVENESS_S
                    self._check()
                failing_since = None
            except Exception as exc:  # noqa: BLE001 - the supervision must not die unnoticed
                if self._done.is_set():
                    return
                failing_since = time.monotonic() if failing_since is None else failing_since
                try:
                    going_on = self._outlived_scheduler(exc)
                except Exception as again:  # noqa: BLE001 - restarting it failed: said below
                    going_on, exc = False, again
                if going_on and time.monotonic() - failing_since < SCHEDULER_RETURN_S:
                    self._done.wait(LIVENESS_S)
                    continue
                self._ssc._on_fatal(ReceiverError(
                    f"receiver {self.receiver.name} of stream {self.stream}: supervising it on Dask worker "
                    f"{self.worker} failed: {type(exc).__name__}: {exc}"))
                return
            self._done.wait(WATCH_S)

    def _check(self) -> None:
        with self._lock:
            future, worker = self._future, self.worker
        live = self.live_workers()
        if worker in live and future.status == "error":
            exc = future.exception()
            self._ssc._on_fatal(ReceiverError(
                f"receiver {self.receiver.name} of stream {self.stream} failed on Dask worker {worker}: "
                f"{type(exc).__name__}: {exc}"))
            self._done.set()
            return
        if worker in live:
            return
        # The worker left the cluster (killed, out of memory, scaled down): start the receiver elsewhere.
        self.restarts += 1
        self.receiver_running = False
        self.report_error(f"Dask worker {worker} running the receiver left the cluster; restarting it on another "
                          "worker")
        future.cancel()
        self._on_workers_left(worker, live)
        self._launch(first=False)

    def _scheduler(self) -> str | None:
        """The scheduler's id (a restarted one has a new id), None while unreachable."""
        try:
            return str(self.client.scheduler_info()["id"])
        except Exception:  # noqa: BLE001 - unreachable, whatever the cause
            return None

    def _any_live_worker(self) -> bool:
        try:
            return bool(self.live_workers())
        except Exception:  # noqa: BLE001 - the client is still reconnecting
            return False

    def _outlived_scheduler(self, exc: Exception) -> bool:
        """After `exc` from a call through the scheduler: True when the
        supervision can go on. A scheduler that is unreachable is waited for;
        a new scheduler (restarted: the run's queue and worker are gone) gets a
        new queue and the receiver on one of its workers once one joined.
        False when `exc` is not about the scheduler or it stays away longer
        than `SCHEDULER_RETURN_S`."""
        if not isinstance(exc, (KeyError, OSError, TimeoutError)):
            return False
        deadline = time.monotonic() + SCHEDULER_RETURN_S
        while not self._done.is_set():
            now = self._scheduler()
            if now is not None and now == self._scheduler_id:
                return isinstance(exc, (OSError, TimeoutError))  # a lost call; a KeyError is a bug here
            if now is not None and self._any_live_worker():
                self._restart_on_new_scheduler(now)
                return True
            if time.monotonic() > deadline:
                return False
            self._done.wait(LIVENESS_S)
        return True

    def _restart_on_new_scheduler(self, scheduler_id: str) -> None:
        from distributed import Queue

        with self._lock:
            future, worker = self._future, self.worker
        log.warning("stream %s: the Dask scheduler was restarted, and receiver %s with it; starting it again "
                    "on a worker of the new scheduler", self.stream, self.receiver.name)
        self._scheduler_id = scheduler_id
        # The queue, the processed-count variable and the workers' block handlers
        # (a worker plugin) lived in the old scheduler: make them again.
        self._queue = Queue(self._queue.name, client=self.client)
        block_comms.register(self.client)
        if self._processed is not None:
            self._processed = UnprocessedCount(self._processed.name, self.client)
        self.restarts += 1
        self.receiver_running = False
        self.report_error(f"the Dask scheduler was restarted while the receiver ran on {worker}; restarting "
                          "it on another worker")
        try:
            future.cancel()
        except Exception as exc:  # noqa: BLE001 - the old scheduler's task is gone anyway
            log.debug("stream %s: cancelling the old run failed: %s", self.stream, exc)
        self._on_workers_left(str(worker), self.live_workers())
        self._launch(first=False)

    def _drain(self) -> None:
        if self._queue is None:
            return
        items = self._queue.get(batch=True)
        durable: list[str] = []
        for item in items:
            kind = item[0]
            if kind == "block":
                _, block_id, count, metadata, locations, *logged = item
                info = BlockInfo(block_id, self.stream, int(count), metadata, locations=tuple(locations))
                if not logged:
                    self._on_block(info, None)
                    continue
                records = self._fetch_for_log(info)
                if records is not None:
                    self._on_block(info, records)
                    durable.append(block_id)
            elif kind == "event":
                _, event, _name, active, message, error, at, restarts = item
                self.receiver_running = bool(active)
                if message is not None:
                    self._last_error = (message, error, at)
                info = ReceiverInfo(self.stream, self.receiver.name, bool(active), message, error, at,
                                    self.restarts + int(restarts), worker=self.worker)
                self._ssc._bus.post(_EVENTS[event](info))
            elif kind == "fatal":
                self._ssc._on_fatal(ReceiverError(
                    f"receiver {self.receiver.name} of stream {self.stream} on Dask worker {self.worker}: "
                    f"{item[1]}"))
        if durable:  # in the write-ahead log now: the receiver's store_batch calls may return
            with self._lock:
                run_id, worker = self._run_id, self.worker
            try:
                block_comms.confirm_logged(self.client, worker, run_id, durable)
            except Exception as exc:  # noqa: BLE001 - that worker died: its receiver restarts elsewhere
                log.warning("stream %s: confirming %d logged block(s) to %s failed: %s", self.stream,
                            len(durable), worker, exc)

    def _fetch_for_log(self, info: BlockInfo) -> list[Any] | None:
        """The records of a block to write to the log, fetched from a worker
        holding it (directly, not through the scheduler). None when every
        holder died first: its store_batch never returned, so the source
        delivers it again to the restarted receiver."""
        try:
            records = block_comms.fetch(self.client, info.locations, info.block_id)
        except Exception as exc:  # noqa: BLE001 - the cluster went away: the block is not logged
            log.debug("stream %s: fetching block %s failed: %s", self.stream, info.block_id, exc)
            records = None
        if records is not None:
            return records
        log.warning("stream %s: block %s died with its worker(s) %s before it was in the write-ahead log; its "
                    "store_batch did not return, so the source delivers it again", self.stream, info.block_id,
                    ", ".join(info.locations))
        return None
