"""The executor `ingest run --cluster ADDRESS` or `--workers N` imposes.

The application builds its own `StreamingContext`, so the command line cannot
pass it an argument: `ingest run` connects to the cluster (or starts a
`LocalCluster` of N worker processes), sets a `DaskExecutor` over it as the
process default, and every context constructed afterwards uses it instead of
its own `executor=`, saying so in the log. The command-line option wins
because it is the operator's decision where the job runs; the application's
choice is a development default.

The command owns the client and the local cluster and closes them when the
application returns; contexts never shut the process default down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ingest.errors import ConfigError, IngestError
from ingest.install_hint import install_hint
from ingest.executor import DaskExecutor, TaskExecutor

log = logging.getLogger(__name__)


class ClusterUnreachableError(IngestError):
    """The scheduler did not answer. Not a configuration error (exit status 1,
    not 2): a scheduler that is restarting answers again soon, so `ingest run
    --supervise` starts the job again rather than giving up."""


@dataclass(frozen=True)
class ClusterOverride:
    executor: TaskExecutor
    description: str
    """Where the work runs, for the log: the option as given on the command line."""


_process_default: ClusterOverride | None = None


def set_process_default(override: ClusterOverride | None) -> None:
    """The executor contexts constructed from now on use (set by `ingest run`)."""
    global _process_default
    _process_default = override


def process_default() -> ClusterOverride | None:
    return _process_default


class ClusterSession:
    """A Dask client for `ingest run`: connected to `address`, or to a
    LocalCluster of `workers` worker processes this session starts. Use as a
    context manager; leaving it closes the client and the cluster it started."""

    def __init__(self, *, address: str | None = None, workers: int | None = None,
                 memory_limit: str | None = None, connect_timeout: float = 30.0) -> None:
        if (address is None) == (workers is None):
            raise ConfigError("give exactly one of --cluster ADDRESS and --workers N")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"--workers must be a positive number of worker processes, got {workers!r}")
        self.address = address
        self.workers = workers
        self.memory_limit = memory_limit
        self.connect_timeout = connect_timeout
        self._cluster: Any = None
        self._client: Any = None

    def __enter__(self) -> ClusterOverride:
        try:
            import distributed
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError("--cluster and --workers need the 'distributed' package: "
                              f"{install_hint('dask')}") from exc
        if self.workers is not None:
            self._cluster = distributed.LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                host="127.0.0.1", memory_limit=self.memory_limit or "auto")
            self._client = distributed.Client(self._cluster)
            description = f"--workers {self.workers} (a local cluster at {self._cluster.scheduler_address})"
        else:
            try:
                # The timeout is also how long the client keeps reconnecting
                # when the scheduler restarts (in-flight tasks then fail their
                # batch attempt; max_batch_retries runs it again).
                self._client = distributed.Client(self.address, timeout=self.connect_timeout)
            except OSError as exc:
                raise ClusterUnreachableError(
                    f"--cluster {self.address}: cannot reach the Dask scheduler within {self.connect_timeout:g} s ({exc}); start it "
                    "with `dask scheduler` or fix the address (under --supervise the job is started again, "
                    "with backoff)") from exc
            description = f"--cluster {self.address}"
        executor = DaskExecutor(self._client)
        log.info("partition tasks run on %s: %d worker(s), %d thread(s)", description,
                 len(self._client.scheduler_info()["workers"]), executor.parallelism)
        return ClusterOverride(executor, description)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._client is not None:
                self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()
