"""The intent and commit logs of the batch lifecycle, behind one interface.

For every batch the scheduler writes the intent (each input's position) before any
work runs, and the commit after every output operation succeeded. Without a
checkpoint directory the log lives in memory and a restart starts afresh; with
one (`ssc.checkpoint(dir)`) the durable implementation in `ingest.checkpoint`
is used and `recover()` tells the scheduler what to re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ingest.latency import LatencyHistogram
from offsets import Position
from offsets.retention import retain_from_ms


@dataclass(frozen=True)
class Recovery:
    """What a restart resumes from."""

    zero_time_ms: int
    last_committed_ms: int | None
    pending: list[tuple[int, Mapping[str, Position]]] = field(default_factory=list)
    """Batches with an intent and no commit, oldest first, with their positions."""


@dataclass(frozen=True)
class LogSummary:
    """What the log holds now, for the web UI and the API: replaced whole (never
    mutated) by the scheduler's thread, so a reader takes no lock."""

    durable: bool = False
    location: str | None = None
    last_commit_ms: int | None = None
    last_commit_at: float | None = None
    """Wall-clock time (time.time()) the last commit was written."""
    pending: tuple[int, ...] = ()
    """Batches with an intent and no commit, oldest first."""
    state_bytes: Mapping[str, int] = field(default_factory=dict)
    """Bytes of the state files the last commit lists, per stateful operator."""


class BatchLog:
    """In-memory log: the default when no checkpoint directory is set."""

    durable = False
    commit_latency: LatencyHistogram | None = None
    """How long writing commit records took (durable logs only)."""

    def summary(self) -> LogSummary:
        """A snapshot for monitoring; the in-memory log keeps nothing to show."""
        return LogSummary()

    def acquire(self) -> None:
        """Become the only writer of the log (before `recover`); `close` releases it."""

    def recover(self, batch_interval_ms: int) -> Recovery | None:
        return None

    def start(self, zero_time_ms: int, batch_interval_ms: int) -> None:
        """Called once before the first batch of a fresh (not recovered) run."""

    def write_intent(self, time_ms: int, plans: Mapping[str, Position]) -> None:
        pass

    def write_commit(self, time_ms: int, summary: Mapping[str, Any], stateful: Iterable[Any] = (),
                     next_positions: Mapping[str, Position] | None = None) -> None:
        """Make batch `time_ms` committed. `stateful` are the stateful
        operators whose pending state must be stored with the commit;
        `next_positions` where the inputs that read something resume after it."""

    def committed_state(self, state_id: str) -> tuple[bytes | None, list[bytes]] | None:
        """The state files of operator `state_id` that the last commit lists
        (full snapshot, deltas), or None: the in-memory log stores no state."""
        return None

    def retain_from_ms(self, committed_ms: int) -> int:
        """The retention point after batch `committed_ms` committed: nothing is
        replayed without a checkpoint, so only newer batches keep their data."""
        return retain_from_ms(committed_ms, (), (), durable=False)

    def clean_up(self, retain_from_ms: int) -> None:
        """Delete the log's own files that no retained commit or pending batch needs."""

    def close(self) -> None:
        pass
