"""A receiver running on a Dask worker: the task the driver submits for it.

`run_receiver(run)` is a long-running Dask task. It secedes from the worker's
thread pool at once (so the worker keeps all its threads for partition tasks),
runs the receiver under the same `ReceiverSupervisor` as in a local job (block
generator, rate limit, restarts with backoff), and returns when the driver
asks it to stop. Why a seceded task rather than a Dask actor or a worker
plugin: a task has a future the driver can watch and cancel, is placed on a
worker of the driver's choice with `workers=`, and ends with the worker
(actors are marked experimental and fail obscurely when their worker dies;
plugins run on every worker, with nothing to say which one hosts what).

What is stored goes into this worker's block store (`receivers.worker_blocks`)
and, before `store_batch` returns, into `replication - 1` other workers'
stores, sent to them directly (`receivers.block_comms`); then the block's
reference (id, record count, metadata, locations: never the records) is put
on the run's `distributed.Queue`, which lives in the scheduler, so it reaches
the driver even if this worker dies the next instant. Events (started, error,
stopped) and a fatal error take the same queue, in order with the blocks.
With the write-ahead log on, the driver fetches the records from a location
to log them, and tells this worker (directly too) when they are logged.

The driver stops a run with `request_stop`, sent to the worker with
`Client.run` (no polling of the scheduler). The run also stops when the
scheduler cancelled its task (the driver's client went away), so a receiver
never outlives its job.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from ingest.affinity import preferred_worker
from ingest.clock import SystemClock
from ingest.errors import StorageError
from ingest.listener import ReceiverError, ReceiverStarted, ReceiverStopped
from receivers import block_comms, worker_blocks
from receivers.block import Block, BlockInfo
from receivers.shipping import unpack_receiver
from receivers.worker_backpressure import Backpressure, UnprocessedGate

log = logging.getLogger("receivers.worker_receiver")

POLL_S = 0.25
WAL_ACK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ReceiverRun:
    """Everything a worker needs to run one receiver (sent with the task)."""

    stream: str
    receiver: bytes
    """The receiver, packed by `receivers.shipping` (unstarted)."""
    run_id: str
    queue: str
    block_interval_ms: int
    replication: int
    write_ahead_log: bool = False
    """The driver writes each block to the write-ahead log: the records go to it
    with the reference, and store_batch waits for its acknowledgement."""
    recovered_metadata: tuple[Any, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    """ReceiverSupervisor's keyword options (max_rate, restart delays...)."""
    backpressure: Backpressure | None = None
    """None: the run stores without waiting for batches."""


class _Bus:
    """The supervisor's listener bus, on a worker: events go to the driver."""

    def __init__(self, host: "WorkerReceiverHost") -> None:
        self._host = host

    def post(self, event: Any) -> None:
        kind = {ReceiverStarted: "started", ReceiverError: "error", ReceiverStopped: "stopped"}.get(type(event))
        if kind is None:
            return
        info = event.info
        self._host.send(["event", kind, info.receiver, info.active, info.last_error_message, info.last_error,
                         info.last_error_time, info.restarts])


class _Owner:
    reliable = False

    def __init__(self, recovered: tuple[Any, ...]) -> None:
        self._recovered = list(recovered)

    def recovered_metadata(self) -> list[Any]:
        return list(self._recovered)


class WorkerReceiverHost:
    """The context a `ReceiverSupervisor` needs, on a worker (the attributes it
    reads from a `StreamingContext`), and the store it writes to."""

    def __init__(self, run: ReceiverRun, client: Any, address: str) -> None:
        from distributed import Queue

        self.run = run
        self.address = address
        self.client = client
        self.block_interval_ms = run.block_interval_ms
        self.clock = SystemClock()
        self.state = "active"
        self._bus = _Bus(self)
        self._queue = Queue(run.queue, client=client)
        self._send_lock = threading.Lock()  # keeps blocks and events in the order they happened
        self.fatal = threading.Event()
        self._durable: dict[str, threading.Event] = {}  # blocks waiting for the driver's WAL write
        # Its own lock, never the send lock: `acknowledge` runs on the worker's event
        # loop, and a send holds the send lock until that loop delivers the queue's
        # reply; sharing the lock froze the worker when an acknowledgement came first.
        self._durable_lock = threading.Lock()
        self.stop_requested = threading.Event()
        self.stop_order: tuple[bool, float | None] = (False, 10.0)  # (graceful, timeout) once asked
        self._warned_replicas = False
        self._gate = None if run.backpressure is None else UnprocessedGate(
            run.stream, run.backpressure, client, self.stop_requested)

    def send(self, item: list[Any]) -> None:
        with self._send_lock:
            self._queue.put(item)

    def _on_fatal(self, exc: BaseException) -> None:
        self.send(["fatal", f"{type(exc).__name__}: {exc}"])
        self.fatal.set()

    # -- the store -----------------------------------------------------------------------

    def store_block(self, block: Block) -> BlockInfo:
        if self._gate is not None:
            # Backpressure: wait while the driver holds max_unprocessed_records unprocessed records.
            self._gate.admit(len(block.records))
        worker_blocks.put(self.address, block.block_id, block.records)
        locations = [self.address, *self._replicate(block)]
        metadata = dict(block.metadata) if block.metadata else None
        if not self.run.write_ahead_log:
            self.send(["block", block.block_id, len(block.records), metadata, locations])
        else:
            # The log has one writer, the driver: it fetches the records from here
            # (`receivers.block_comms`, not through the scheduler), and the block is
            # durable only once it says so (`acknowledge`).
            durable = threading.Event()
            with self._durable_lock:
                self._durable[block.block_id] = durable
            self.send(["block", block.block_id, len(block.records), metadata, locations, "logged"])
            if not durable.wait(WAL_ACK_TIMEOUT_S):
                with self._durable_lock:
                    self._durable.pop(block.block_id, None)
                raise StorageError(f"stream {self.run.stream}: the driver did not confirm within "
                                   f"{WAL_ACK_TIMEOUT_S:.0f} s that block {block.block_id} is in the write-ahead "
                                   "log; the receiver must not acknowledge its source")
        return BlockInfo(block.block_id, self.run.stream, len(block.records), block.metadata,
                         locations=tuple(locations))

    def _replicate(self, block: Block) -> list[str]:
        """Copy the block to `replication - 1` other live workers, each chosen by
        rendezvous hashing of the block id (replicas spread over the cluster);
        a worker that fails the copy is skipped for the next one."""
        wanted = self.run.replication - 1
        if wanted <= 0:
            return []
        candidates = [w for w in self.client.nthreads() if w != self.address]
        placed: list[str] = []
        while len(placed) < wanted and candidates:
            target = preferred_worker(block.block_id, candidates)
            assert target is not None
            candidates.remove(target)
            try:
                # Straight to the target worker, not through the scheduler.
                copied = block_comms.put_copy(self.client, target, block.block_id, block.records)
            except Exception as exc:  # noqa: BLE001 - that worker is gone: the next candidate
                log.warning("stream %s: copying block %s to %s failed (%s); trying another worker",
                            self.run.stream, block.block_id, target, exc)
                continue
            if copied:
                placed.append(target)
        if len(placed) < wanted and not self._warned_replicas:
            self._warned_replicas = True
            log.warning("stream %s: block %s is on %d worker(s), not the %d asked for (replication=%d): not "
                        "enough live workers", self.run.stream, block.block_id, 1 + len(placed),
                        self.run.replication, self.run.replication)
        return placed


_runs_lock = threading.Lock()
_runs: dict[str, "WorkerReceiverHost"] = {}  # run id -> host, in this worker process


def request_stop(run_id: str, graceful: bool, timeout: float | None) -> bool:
    """Sent by the driver with `Client.run` to the receiver's worker: ask the
    run to stop (it returns from its task once stopped). False when no such
    run is here (it ended already)."""
    with _runs_lock:
        host = _runs.get(run_id)
    if host is None:
        return False
    host.stop_order = (graceful, timeout)
    host.stop_requested.set()
    return True


def acknowledge(run_id: str, block_ids: list[str]) -> int:
    """Sent by the driver once blocks are in the write-ahead log: their
    store_batch calls return. Returns how many were waiting here."""
    with _runs_lock:
        host = _runs.get(run_id)
    if host is None:
        return 0
    with host._durable_lock:
        waiting = [host._durable.pop(b, None) for b in block_ids]
    for event in waiting:
        if event is not None:
            event.set()
    return sum(e is not None for e in waiting)


def run_receiver(run: ReceiverRun) -> dict[str, Any]:
    """The long-running task: run the receiver here until the driver says stop."""
    from distributed import get_client, get_worker, secede

    from receivers.supervisor import ReceiverSupervisor

    worker = get_worker()
    key = worker.get_current_task()
    secede()  # this thread no longer counts as one of the worker's task threads
    client = get_client()
    host = WorkerReceiverHost(run, client, worker.address)
    with _runs_lock:
        _runs[run.run_id] = host
    supervisor = ReceiverSupervisor(host, run.stream, unpack_receiver(run.receiver), host.store_block,  # type: ignore[arg-type]
                                    owner=_Owner(run.recovered_metadata), **dict(run.options))
    started = time.monotonic()
    try:
        supervisor.start()
        while not host.fatal.is_set() and not host.stop_requested.wait(POLL_S):
            task = worker.state.tasks.get(key)
            if task is None or task.state in ("cancelled", "released", "forgotten"):
                log.warning("stream %s: the driver no longer wants receiver run %s; stopping it", run.stream,
                            run.run_id)
                break
    finally:
        host.state = "stopping"
        started = time.monotonic()
        graceful, timeout = host.stop_order
        supervisor.stop(graceful, timeout)
        host.state = "stopped"
        with _runs_lock:
            _runs.pop(run.run_id, None)
    return {"worker": worker.address, "records_dropped": supervisor.records_dropped,
            "stop_seconds": round(time.monotonic() - started, 3)}
