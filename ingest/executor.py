"""Where partition tasks run.

A batch's work is split into partition tasks; a `TaskExecutor` runs a list of
them and returns their results in order. Inline (the default) runs them in the
scheduler's thread; `threads` and `processes` use local pools; `DaskExecutor`
sends them to a `distributed` cluster. Batches stay strictly ordered whatever
the executor: parallelism is only inside a batch.

Tasks sent to another process are serialized with cloudpickle (they carry user
functions), and so are their results (they may be instances of classes that
came with a task). That is code and in-memory data of this process and its
workers; nothing read from a checkpoint, WAL or socket is ever unpickled.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections import Counter
from typing import Any, Callable, Sequence, TypeVar

from ingest.affinity import preferred_worker
from ingest.errors import ConfigError, IngestError
from ingest.install_hint import install_hint

T = TypeVar("T")
R = TypeVar("R")


class TaskExecutor:
    """Runs `fn(item)` for each item and returns the results in order.

    `affinity`, when given, has one key per item (or None): items with the same
    key should run on the same worker batch after batch, where a cache of that
    key lives (a Kafka partition's consumer). A preference only: executors
    without workers ignore it, and a task whose worker is gone runs elsewhere."""

    name = "executor"
    parallelism = 1
    keeps_state = False
    """Whether keyed state partitions may stay in workers between batches
    (ingest.state_store): only where workers are long-lived processes that
    `affinity` can address."""
    in_process = False
    """True when tasks run in this process (and see its caches, such as the
    Kafka consumers a batch's reads may warm up before they start)."""

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            affinity: Sequence[str | None] | None = None) -> list[R]:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release workers. Idempotent."""

    def take_placements(self) -> dict[str, int]:
        """Tasks run per worker since the last call (the scheduler calls it per
        batch), then forgets them. Empty for executors whose tasks run in this
        process: there is no worker to name."""
        return {}

    def run_on_every_worker(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` once in every live worker process (to free what
        tasks left there). Nothing for executors without long-lived workers."""


class InlineExecutor(TaskExecutor):
    name = "inline"
    in_process = True

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            affinity: Sequence[str | None] | None = None) -> list[R]:
        return [fn(item) for item in items]


class ThreadExecutor(TaskExecutor):
    name = "threads"
    in_process = True

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self._pool = cf.ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="ingest-task")

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            affinity: Sequence[str | None] | None = None) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _run_pickled(blob: bytes) -> bytes:
    """Run one task in a worker. The result goes back with cloudpickle too: it
    may be an instance of a class that came with the task by value (one defined
    in the job file or inside its main function), which plain pickle cannot
    find by name in the worker."""
    import cloudpickle  # here and in ProcessExecutor.map: only process pools pay for loading it

    fn, item = cloudpickle.loads(blob)
    return cloudpickle.dumps(fn(item))


class ProcessExecutor(TaskExecutor):
    name = "processes"

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self._pool = cf.ProcessPoolExecutor(max_workers=parallelism)

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            affinity: Sequence[str | None] | None = None) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        import cloudpickle

        blobs = [cloudpickle.dumps((fn, item)) for item in items]
        # Results made by our own worker from our own task; never data read
        # from a checkpoint, WAL or socket.
        return [cloudpickle.loads(result) for result in self._pool.map(_run_pickled, blobs)]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class TaskFailedError(IngestError):
    """A partition task raised on a cluster worker; the message names the worker."""

    def __init__(self, message: str, worker: str) -> None:
        super().__init__(message)
        self.worker = worker


_WORKER_NOTE = "ingest: raised on Dask worker "


def _run_on_worker(fn: Callable[[T], R], item: T) -> tuple[str, R]:
    """A partition task on a Dask worker: its result with the worker's address,
    so the driver can tell which worker ran what. An exception leaves with a
    note naming the worker (notes travel with a pickled exception)."""
    from distributed import get_worker

    address = get_worker().address
    try:
        return address, fn(item)
    except BaseException as exc:
        # exc.add_note() from Python 3.11 on; the same attribute by hand on 3.10.
        exc.__notes__ = [*getattr(exc, "__notes__", ()), _WORKER_NOTE + address]
        raise


def _worker_of(exc: BaseException) -> str | None:
    for note in getattr(exc, "__notes__", ()):
        if isinstance(note, str) and note.startswith(_WORKER_NOTE):
            return note[len(_WORKER_NOTE):]
    return None


class DaskExecutor(TaskExecutor):
    """Runs partition tasks on a Dask cluster through `distributed.Client`.

    Pass a connected client, or a scheduler address (the executor then owns the
    client and closes it on shutdown).

    A worker that dies while running a task (killed, out of memory) is Dask's
    to handle: its scheduler runs the task again on a live worker, up to its
    `distributed.scheduler.allowed-failures` times, and the batch goes on with
    the same result. A task that raises fails its batch attempt with a
    `TaskFailedError` naming the worker; `StreamingContext(max_batch_retries=N)`
    runs the batch again. Which worker ran how many tasks is reported per batch
    (`take_placements`)."""

    name = "dask"
    keeps_state = True

    def __init__(self, client: Any) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(
                f"executor='dask' needs the 'distributed' package: {install_hint('dask')}"
            ) from exc
        self._owned = not isinstance(client, Client)
        self._client = Client(client) if self._owned else client
        self.parallelism = max(1, sum(self._client.nthreads().values()))
        self._placements: Counter[str] = Counter()
        self._lock = threading.Lock()  # map() may run from several threads of one batch

    @property
    def client(self) -> Any:
        return self._client

    def map(self, fn: Callable[[T], R], items: Sequence[T],
            affinity: Sequence[str | tuple[str, ...] | None] | None = None) -> list[R]:
        keys = list(affinity) if affinity is not None else [None] * len(items)
        live = self._live_workers() if any(k is not None for k in keys) else []
        futures = [self._client.submit(_run_on_worker, fn, item, pure=False, **self._placement(key, live))
                   for item, key in zip(items, keys)]
        try:
            placed = self._client.gather(futures)
        except Exception as exc:
            with self._lock:  # the tasks that did finish ran somewhere too
                self._placements.update(f.result()[0] for f in futures if f.status == "finished")
            worker = _worker_of(exc)
            if worker is None:
                raise  # not raised by the task itself (e.g. KilledWorker): Dask's message says what
            index = next((i for i, f in enumerate(futures) if f.status == "error"), None)
            which = "a partition task" if index is None else f"partition task {index} of {len(futures)}"
            raise TaskFailedError(f"{which} failed on Dask worker {worker}: {type(exc).__name__}: {exc}",
                                  worker) from exc
        finally:
            for f in futures:
                f.release()
        with self._lock:
            self._placements.update(address for address, _ in placed)
        return [result for _, result in placed]

    @staticmethod
    def _placement(key: str | tuple[str, ...] | None, live: Sequence[str]) -> dict[str, Any]:
        """Dask's placement for a task with affinity `key`: its preferred live
        worker, loosely (a busy worker, or one that died since, does not block
        the task: Dask runs it elsewhere). A tuple of worker addresses names the
        workers holding the task's data (a received block and its replica):
        any live one of them."""
        if isinstance(key, tuple):
            workers = [w for w in key if w in live]
            return {"workers": workers, "allow_other_workers": True} if workers else {}
        worker = None if key is None else preferred_worker(key, live)
        return {} if worker is None else {"workers": [worker], "allow_other_workers": True}

    def _live_workers(self) -> list[str]:
        """The workers the scheduler knows alive now (asked once per map: a dead
        worker's keys move to the live ones from the next batch on)."""
        return sorted(self._client.nthreads())  # every worker (scheduler_info lists only the first few)

    def run_on_every_worker(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._client.status != "running":
            return  # not connected (the scheduler is away): waiting here would hold up a stop
        self._client.run(fn, *args, on_error="ignore")  # a worker dying meanwhile keeps nothing anyway

    def take_placements(self) -> dict[str, int]:
        with self._lock:
            taken = dict(sorted(self._placements.items()))
            self._placements.clear()
        return taken

    def shutdown(self) -> None:
        if self._owned:
            self._client.close()


def make_executor(spec: str | TaskExecutor | None, parallelism: int | None) -> TaskExecutor:
    """Build an executor from the `executor=` option of `StreamingContext`."""
    if isinstance(spec, TaskExecutor):
        return spec
    if parallelism is not None and (isinstance(parallelism, bool) or not isinstance(parallelism, int)
                                    or parallelism < 1):
        raise ConfigError(f"parallelism must be a positive integer (or None for one per CPU), got {parallelism!r}")
    n = parallelism or os.cpu_count() or 1
    if spec in (None, "inline"):
        return InlineExecutor()
    if spec == "threads":
        return ThreadExecutor(n)
    if spec == "processes":
        return ProcessExecutor(n)
    raise ConfigError(
        f"unknown executor {spec!r}: use 'inline', 'threads', 'processes', "
        "or pass a TaskExecutor instance such as DaskExecutor(client)"
    )
