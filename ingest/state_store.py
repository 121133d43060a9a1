"""Keyed state partitions kept in a cluster worker's memory between batches.

On a Dask cluster with a durable checkpoint, a keyed stateful operator does
not ship each state partition to its task and back every batch: partition
`i` of operator `token` is pinned to one worker (rendezvous hashing, as
`ingest.affinity` places Kafka partitions) and lives in that worker process,
in the module-level `STORE` below. The driver names, per task, the version of
the state the batch starts from (`base`) and the version the batch makes
(`new`, unique per batch attempt: "<batch time>-<nonce>"); the worker finds
the partition under `(token, i)`.

A partition entry holds the committed state (a version and its dict) and the
pending changes of the batch attempts run on it since. A batch attempt's
changes become committed lazily: the next batch names that attempt's version
as its base, and only then are the changes applied in place (the order of
keys, oldest update last, is the one the driver-side commit makes). So a
commit costs no round trip, and a failed attempt (never named as a base)
leaves the committed state untouched for its retry.

When the worker cannot produce the named base (it never had the partition,
or it restarted, or the partition came to it from a dead worker), the task
returns `MISSING` instead of running: the driver then sends the base itself
(`seed`, restored from the checkpoint's last commit) and runs the task again.
Nothing here is durable: the checkpoint's state files are.

Data in the store came with tasks from the driver (cloudpickle, like every
task); nothing is read from disk or a socket here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

MISSING = "ingest.state_store.MISSING"
"""A task's answer when its worker does not hold the base state it was told to start from."""


@dataclass(frozen=True)
class ResidentTask:
    """What the driver sends for one state partition of one batch attempt."""

    token: str
    """The operator instance: its lineage, '#', and a nonce of the running context."""
    partition: int
    base: str | None
    """The committed version to start from (None: the state the driver seeds)."""
    seed: dict[Any, Any] | None
    """The base state itself, when the driver has to provide it."""
    records: list[Any]
    time_ms: int
    new: str
    """The version this attempt's result is kept under."""


def lineage_of(token: str) -> str:
    """The part of a token that runs of one job share (state id and
    checkpoint): a driver restarted from the checkpoint is a new run of the
    same lineage, and the checkpoint's single-writer lock makes the old run
    dead, so its partitions can go."""
    return token.rsplit("#", 1)[0]


@dataclass
class _Partition:
    version: str
    state: dict[Any, Any]
    pending: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """Attempt version -> (its base version, its changes)."""


class ResidentStore:
    """The state partitions of one worker process."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._lock = threading.Lock()  # tasks of a multi-threaded worker run concurrently

    def base(self, token: str, partition: int, version: str | None,
             apply: Callable[[dict[Any, Any], Any], None]) -> dict[Any, Any] | None:
        """The state at `version`, committing a pending attempt lazily when
        `version` names one; None when this worker cannot produce it."""
        version = version or ""
        with self._lock:
            part = self._parts.get((token, partition))
            if part is None:
                return None
            if part.version == version:
                return part.state
            attempt = part.pending.get(version)
            if attempt is None or attempt[0] != part.version:
                return None
            apply(part.state, attempt[1])
            part.version = version
            part.pending.clear()  # other attempts of that batch failed: never a base again
            return part.state

    def install(self, token: str, partition: int, version: str | None, state: dict[Any, Any]) -> None:
        """Keep `state` as the partition's base; drop what earlier runs of
        the same lineage left on this worker (a driver killed before it could
        say so)."""
        lineage = lineage_of(token)
        with self._lock:
            for stale in [k for k in self._parts if k[0] != token and lineage_of(k[0]) == lineage]:
                del self._parts[stale]
            # A copy: commits change it in place, and an in-process worker
            # would otherwise change the driver's own copy of the base.
            self._parts[(token, partition)] = _Partition(version or "", dict(state))

    def add_pending(self, token: str, partition: int, base: str, new: str, changes: Any) -> None:
        with self._lock:
            part = self._parts[(token, partition)]
            part.pending[new] = (base, changes)

    def pending(self, token: str, partition: int, base: str, new: str) -> Any:
        """The changes of attempt `new` on top of `base`, or MISSING."""
        with self._lock:
            part = self._parts.get((token, partition))
            attempt = None if part is None else part.pending.get(new)
            return MISSING if attempt is None or attempt[0] != base else attempt[1]

    def forget(self, token: str) -> int:
        """Drop every partition of operator `token`; how many there were."""
        with self._lock:
            gone = [k for k in self._parts if k[0] == token]
            for k in gone:
                del self._parts[k]
            return len(gone)
    def held(self, tokens: Iterable[str]) -> list[tuple[str, int]]:
        """The partitions of operators `tokens` this worker holds (for inspection)."""
        wanted = set(tokens)
        with self._lock:
            return sorted(k for k in self._parts if k[0] in wanted)


STORE = ResidentStore()


def held_partitions(tokens: Iterable[str]) -> list[tuple[str, int]]:
    """What `client.run(held_partitions, tokens)` reports per worker."""
    return STORE.held(tokens)


def forget(token: str) -> int:
    """Drop an operator's partitions from this worker (its context stopped)."""
    return STORE.forget(token)


def run_resident(inner: Callable[[tuple[int, dict[Any, Any], list[Any], int]], Any],
                 apply: Callable[[dict[Any, Any], Any], None], task: ResidentTask) -> Any:
    """One state partition's batch on the worker that keeps it: `inner` is the
    operator's partition function (the same one the local path runs); its
    result goes back, and its changes stay here as the pending attempt."""
    state = STORE.base(task.token, task.partition, task.base, apply)
    if state is None:
        if task.seed is None:
            return MISSING
        STORE.install(task.token, task.partition, task.base, task.seed)
        state = STORE.base(task.token, task.partition, task.base, apply)
        assert state is not None
    result = inner((task.partition, state, task.records, task.time_ms))  # (changes, ...)
    STORE.add_pending(task.token, task.partition, task.base or "", task.new, result[0])
    return result


@dataclass(frozen=True)
class ReadTask:
    """A request for a partition's state as of `base` plus the attempt `new`."""

    token: str
    partition: int
    base: str | None
    new: str | None


def read_resident(apply: Callable[[dict[Any, Any], Any], None],
                  overlay: Callable[[dict[Any, Any], Any], Iterable[tuple[Any, Any]]], task: ReadTask) -> Any:
    """A partition's items (for a snapshot), or MISSING. Reading does not
    commit the attempt: it may still fail on the driver."""
    state = STORE.base(task.token, task.partition, task.base, apply)
    if state is None:
        return MISSING
    if task.new is None:
        return list(state.items())
    changes = STORE.pending(task.token, task.partition, task.base or "", task.new)
    if changes is MISSING:
        return MISSING
    return list(overlay(state, changes))
