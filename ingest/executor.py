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
from typing import Any, Callable, Sequence, TypeVar

import cloudpickle

from ingest.errors import ConfigError
from ingest.install_hint import install_hint

T = TypeVar("T")
R = TypeVar("R")


class TaskExecutor:
    """Runs `fn(item)` for each item and returns the results in order."""

    name = "executor"
    parallelism = 1

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release workers. Idempotent."""


class InlineExecutor(TaskExecutor):
    name = "inline"

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]


class ThreadExecutor(TaskExecutor):
    name = "threads"

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self._pool = cf.ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="ingest-task")

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
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
    fn, item = cloudpickle.loads(blob)
    return cloudpickle.dumps(fn(item))


class ProcessExecutor(TaskExecutor):
    name = "processes"

    def __init__(self, parallelism: int) -> None:
        self.parallelism = parallelism
        self._pool = cf.ProcessPoolExecutor(max_workers=parallelism)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        blobs = [cloudpickle.dumps((fn, item)) for item in items]
        # Results made by our own worker from our own task; never data read
        # from a checkpoint, WAL or socket.
        return [cloudpickle.loads(result) for result in self._pool.map(_run_pickled, blobs)]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(TaskExecutor):
    """Runs partition tasks on a Dask cluster through `distributed.Client`.

    Pass a connected client, or a scheduler address (the executor then owns the
    client and closes it on shutdown)."""

    name = "dask"

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

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        futures = self._client.map(fn, list(items), pure=False)
        return self._client.gather(futures)

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
