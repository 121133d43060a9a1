"""The durable batch log: intents, commits and state snapshots in a checkpoint
directory. Plain data only, never pickle.

Layout (every file is one framed record, see below):

    <dir>/metadata                  format version, batch interval, zero time, inputs, stateful
                                    operators, the epoch of the context that last started
    <dir>/lock                      the single writer's lock (see `ingest.checkpoint_lock`)
    <dir>/offsets/<time_ms>         intent: every input's position for the batch, written before it runs
    <dir>/commits/<time_ms>         commit: written after every output succeeded; lists the state
                                    files and every input's next position (its resume point)
    <dir>/state/<op>/<time_ms>.full full snapshot of a stateful operator after that batch
    <dir>/state/<op>/<time_ms>.delta changes of a stateful operator in that batch

Times are zero-padded to 20 digits so names sort in time order.

Records: see `offsets.records` (header with format, kind, batch time and
operator, then the body, with a CRC32C over both). Every record is checked
against its file's name when read, so a record copied or swapped to another
name is corrupt, and the error names the file and the byte offset. Intents and
commits are JSON with the serde's encoding of tuples and non-string keys, so a
re-run batch sees exactly the values its first run saw.

Durability: each record is written with `Storage.write_atomic` (temp file,
fsync, rename, fsync of the directory; a plain PUT on S3); intents and commits
with `Storage.write_new` (create-only: rename without overwrite on HDFS, a PUT
with If-None-Match on S3): an existing intent or commit is an error, never
overwritten, so of two writers that got past the lock (a lease taken over
while its holder was only paused, or the lock bypassed) exactly one commits a
batch and the other stops with a CheckpointError. The one commit that is
replaced is a corrupt one that recovery fell back from (that batch re-runs). One context
at a time writes a directory: see `ingest.checkpoint_lock`. A commit is written
after the state files it lists, so a commit never points at a missing file.

Clean-up is a step of its own, after the commit and after every input
acknowledged its source (`clean_up(retain_from_ms)`, see `offsets.retention`):
it follows commits, never the wall clock. The newest `retain_batches` commits,
their intents, the intents of pending batches and the state files the retained
commits reference are kept; everything older is deleted.

Recovery: the newest readable commit is the last committed batch (a corrupt
newest commit falls back to the one before, with a warning naming the file:
that batch is then re-run). Inputs resume from the next positions stored with
it, moved past the batches that are re-run: intents newer than it are re-run
with exactly their positions. An unreadable intent of a committed batch
changes no input's position. State comes from the newest commit's files; if
one is corrupt, the newest older commit whose files are all readable is used
and the batches after it are replayed through the stateful operators only,
from their intents (inputs keep their data of those batches, behind the
retention point), so outputs are not repeated.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ingest.batch_log import BatchLog, LogSummary, Recovery
from ingest.checkpoint_lock import DEFAULT_LEASE_SECONDS, CheckpointLock
from ingest.errors import CheckpointError, CorruptRecordError
from ingest.latency import LatencyHistogram
from ingest.listener import format_batch_time
from ingest.serde import decode_hook, encode
from ingest.storage import Storage, storage_for
from offsets import Position, position_to_data
from offsets.records import (
    FORMAT_VERSION,
    CommitRecord,
    IntentRecord,
    RecordCodec,
    StateRecord,
    parse_state_file,
    state_file_name,
)
from offsets.retention import retain_from_ms

if TYPE_CHECKING:
    from ingest.state import StatefulDStream

log = logging.getLogger("ingest.checkpoint")

CODEC = RecordCodec(encode, decode_hook)


def _tname(time_ms: int) -> str:
    return f"{time_ms:020d}"


def _parse_time(name: str) -> int | None:
    base = name.split(".", 1)[0]
    return int(base) if base.isdigit() else None


# -- the log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRecovery(Recovery):
    next_positions: dict[str, Position] = field(default_factory=dict)
    """Where every input resumes after the last committed batch (from its commit)."""
    last_plans: dict[str, Position] = field(default_factory=dict)
    """The newest readable position of every input (for inputs without a resume point)."""
    state_files: dict[str, list[str]] = field(default_factory=dict)
    replay: list[tuple[int, Mapping[str, Any]]] = field(default_factory=list)
    """Committed batches to run through the stateful operators only (state fallback)."""
    metadata: dict[str, Any] = field(default_factory=dict)


class CheckpointLog(BatchLog):
    durable = True

    def __init__(self, location: str | Storage, *, retain_batches: int = 10, full_snapshot_every: int = 10,
                 allow_changes: bool = False, storage_options: Mapping[str, Any] | None = None,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.storage = location if isinstance(location, Storage) else storage_for(location, storage_options)
        self.lock = CheckpointLock(self.storage, lease_seconds)
        if retain_batches < 1:
            raise CheckpointError(f"retain_batches must be >= 1, got {retain_batches}")
        self.retain_batches = retain_batches
        self.full_snapshot_every = max(1, full_snapshot_every)
        self.allow_changes = allow_changes
        self.metadata: dict[str, Any] | None = None
        self._commits: deque[tuple[int, dict[str, list[str]]]] = deque()
        self._deltas_since_full: dict[str, int] = {}
        # Files under offsets/, commits/ and state/ as this log knows them: listed
        # once at the first clean-up (which catches leftovers of earlier runs),
        # then kept up to date by the writes, so a commit lists no directory.
        self._files: set[str] | None = None
        self.commit_latency = LatencyHistogram()  # state files and commit record of each batch
        self._last_state_files: dict[str, list[str]] = {}
        self._next_positions: dict[str, Position] = {}
        self._pending: set[int] = set()
        """Batches with an intent and no commit yet."""
        self._corrupt_commits: set[int] = set()
        """Commits recovery could not read: their batches re-run and replace them."""
        self._state_file_bytes: dict[str, int] = {}  # sizes of the state files the last commits list
        self._summary = LogSummary(durable=True, location=self.storage.url)

    def summary(self) -> LogSummary:
        return self._summary

    def _publish(self, **changes: Any) -> None:
        """Replace the monitoring snapshot (one assignment: readers never see half of it)."""
        self._summary = replace(self._summary, pending=tuple(sorted(self._pending)), **changes)

    @property
    def location(self) -> str:
        return self.storage.url

    def _where(self, path: str) -> str:
        return self.storage.describe(path)

    def _read_bytes(self, path: str) -> bytes:
        where = self._where(path)
        try:
            return self.storage.read(path)
        except FileNotFoundError:
            raise CorruptRecordError(f"{where} is missing", where, 0) from None
        except IsADirectoryError:
            raise CorruptRecordError(f"{where} is a directory, not a checkpoint record; remove it or restore "
                                     "the file", where, 0) from None
        except OSError as exc:
            raise CheckpointError(f"{where} cannot be read: {exc.strerror or exc}") from None

    def read_intent(self, time_ms: int) -> IntentRecord:
        path = f"offsets/{_tname(time_ms)}"
        return CODEC.decode_intent(self._read_bytes(path), self._where(path), time_ms)

    def read_commit(self, time_ms: int) -> CommitRecord:
        path = f"commits/{_tname(time_ms)}"
        return CODEC.decode_commit(self._read_bytes(path), self._where(path), time_ms)

    def read_state(self, path: str) -> StateRecord:
        rid = parse_state_file(path)
        if rid is None or rid.time_ms is None:
            raise CorruptRecordError(f"{self._where(path)} is not the name of a state file", self._where(path), 0)
        return CODEC.decode_state(self._read_bytes(path), self._where(path), rid.time_ms, rid.operator,
                                  rid.kind == "full")

    def _write(self, path: str, record: bytes) -> None:
        self.storage.write_atomic(path, record)
        if self._files is not None and path != "metadata":
            self._files.add(path)

    def _write_new(self, path: str, record: bytes, *, exists: str) -> None:
        """Create `path` and never overwrite it: a file already there means another
        writer (or an earlier run) got there first, which `exists` explains."""
        try:
            self.storage.write_new(path, record)
        except FileExistsError:
            raise CheckpointError(f"{self._where(path)} already exists: {exists}") from None
        if self._files is not None:
            self._files.add(path)

    # -- metadata -----------------------------------------------------------------

    def read_metadata(self) -> dict[str, Any] | None:
        if not self.storage.exists("metadata"):
            return None
        where = self._where("metadata")
        meta = CODEC.decode_meta(self._read_bytes("metadata"), where)
        if meta.get("format") != "ingest-checkpoint":
            raise CheckpointError(f"{where} is not an ingest checkpoint")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"{where}: checkpoint format {meta.get('format_version')!r}, this release "
                                  f"reads format {FORMAT_VERSION}; use a new checkpoint directory")
        for key in ("batch_interval_ms", "zero_time_ms"):
            if key in meta and (not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 0):
                raise CorruptRecordError(f"{where}: {key} is {meta[key]!r}, not a number of milliseconds; "
                                         "restore the file", where, 0)
        for key in ("inputs", "stateful"):
            if not isinstance(meta.get(key, []), list) or not all(isinstance(n, str) for n in meta.get(key, [])):
                raise CorruptRecordError(f"{where}: {key} is not a list of names; restore the file", where, 0)
        return meta

    def write_metadata(self, meta: dict[str, Any]) -> None:
        if self.lock.owner is not None:
            meta = {**meta, "epoch": self.lock.owner.epoch}
        self._write("metadata", CODEC.encode_meta(meta))
        self.metadata = meta

    # -- single writer ---------------------------------------------------------------

    def acquire(self) -> None:
        """Take the directory's lock (see `ingest.checkpoint_lock`)."""
        try:
            meta = self.read_metadata() or {}
        except (CorruptRecordError, CheckpointError):
            meta = {}  # recover() reports it, with the lock held
        epoch = meta.get("epoch", 0)
        self.lock.acquire(epoch if isinstance(epoch, int) else 0)

    def close(self) -> None:
        self.lock.release()

    # -- BatchLog ---------------------------------------------------------------------

    def start(self, zero_time_ms: int, batch_interval_ms: int) -> None:
        assert self.metadata is not None, "describe_app() must run before start()"
        self.metadata.update({"zero_time_ms": zero_time_ms, "batch_interval_ms": batch_interval_ms})
        self.write_metadata(self.metadata)

    def describe_app(self, inputs: list[str], stateful: list[str], batch_interval_ms: int) -> dict[str, Any]:
        """The application's shape as the metadata records it."""
        self.metadata = {
            "format": "ingest-checkpoint", "format_version": FORMAT_VERSION,
            "batch_interval_ms": batch_interval_ms, "inputs": inputs, "stateful": stateful,
            "created_at": time.time(),
        }
        return self.metadata

    def write_intent(self, time_ms: int, plans: Mapping[str, Position]) -> None:
        self.lock.check()
        try:
            record = CODEC.encode_intent(IntentRecord(time_ms, dict(plans)))
        except (TypeError, ValueError) as exc:
            bad = [name for name, plan in plans.items() if not _json_ok(plan)]
            raise CheckpointError(
                f"the plan of input(s) {bad or list(plans)} for batch {format_batch_time(time_ms)} cannot be "
                f"written to the checkpoint ({exc}); with a checkpoint, queue_stream records and custom plans "
                "must be JSON values") from None
        # Create-only: an intent is never overwritten.
        self._write_new(f"offsets/{_tname(time_ms)}", record, exists=(
            f"batch {format_batch_time(time_ms)} was planned before, by this job before a restart or by "
            "another writer of this checkpoint. Its intent is not overwritten; check that no other job uses "
            "the directory"))
        self._pending.add(time_ms)
        self._publish()

    def write_commit(self, time_ms: int, summary: Mapping[str, Any],
                     stateful: Iterable["StatefulDStream[Any]"] = (),
                     next_positions: Mapping[str, Position] | None = None) -> None:
        started = time.perf_counter()
        self.lock.check()
        state_files: dict[str, list[str]] = {}
        for op in stateful:
            sid = op.state_id
            since = self._deltas_since_full.get(sid)
            delta = None
            if since is not None and since + 1 < self.full_snapshot_every and self._last_state_files.get(sid):
                delta = _state_bytes(op, op.pending_delta)
            if delta is not None:
                files = self._last_state_files[sid] + [self._write_state(sid, time_ms, delta, full=False)]
                self._deltas_since_full[sid] = since + 1  # type: ignore[operator]
            else:
                files = [self._write_state(sid, time_ms, _state_bytes(op, op.pending_snapshot), full=True)]
                self._deltas_since_full[sid] = 0
            state_files[sid] = files
            self._last_state_files[sid] = files
        # Every commit carries every input's resume point: those of inputs that
        # read nothing in this batch carry over from the commits before it.
        if next_positions:
            self._next_positions = {**self._next_positions, **next_positions}
        path = f"commits/{_tname(time_ms)}"
        committed_at = time.time()
        record = CODEC.encode_commit(
            CommitRecord(time_ms, dict(summary), {sid: tuple(f) for sid, f in state_files.items()},
                         self._next_positions, committed_at=committed_at))
        if time_ms in self._corrupt_commits:
            self._write(path, record)
            self._corrupt_commits.discard(time_ms)
        else:
            # Create-only: one writer commits a batch.
            self._write_new(path, record, exists=(
                f"batch {format_batch_time(time_ms)} was committed by another writer of this checkpoint while "
                "this one ran it. This context stops without committing; check that no other job uses the "
                "directory"))
        self._commits.append((time_ms, state_files))
        self._pending.discard(time_ms)
        while len(self._commits) > self.retain_batches:
            self._commits.popleft()
        live = {f for _, files in self._commits for fs in files.values() for f in fs}
        for path in [p for p in self._state_file_bytes if p not in live]:
            del self._state_file_bytes[path]
        self._publish(last_commit_ms=time_ms, last_commit_at=committed_at,
                      state_bytes={sid: sum(self._state_file_bytes.get(f, 0) for f in files)
                                   for sid, files in self._last_state_files.items()})
        self.commit_latency.observe(time.perf_counter() - started)

    def _write_state(self, sid: str, time_ms: int, data: bytes, *, full: bool) -> str:
        """Write one state file of a commit (a full snapshot or a delta) and keep its
        size for the state_bytes gauge; returns its path."""
        path = state_file_name(sid, time_ms, full=full)
        record = CODEC.encode_state(StateRecord(time_ms, sid, full, data))
        self._write(path, record)
        self._state_file_bytes[path] = len(record)
        return path

    def retain_from_ms(self, committed_ms: int) -> int:
        return retain_from_ms(committed_ms, (t for t, _ in self._commits), self._pending, durable=True)

    def clean_up(self, retain_from_ms: int) -> None:
        """Delete intents, commits and state files of batches before the oldest
        retained commit (and before `retain_from_ms`), except state files a
        retained commit still lists. A separate step after the commit: a crash
        before or during it leaves only extra files, which the next clean-up
        deletes."""
        if not self._commits:
            return
        if self._files is None:
            self._files = {f"{d}/{n}" for d in ("commits", "offsets") for n in self.storage.list(d)}
            self._files.update(f"state/{sid}/{n}" for sid in self.storage.list("state")
                               for n in self.storage.list(f"state/{sid}"))
        oldest = min(self._commits[0][0], retain_from_ms)
        live = {f for _, files in self._commits for fs in files.values() for f in fs}
        for path in sorted(self._files):
            t = _parse_time(path.rsplit("/", 1)[1])
            if t is not None and t < oldest and path not in live:
                self.storage.delete(path)
                self._files.discard(path)

    # -- recovery ----------------------------------------------------------------------

    def _times(self, directory: str) -> list[int]:
        return sorted(t for t in (_parse_time(n) for n in self.storage.list(directory)) if t is not None)

    def recover(self, batch_interval_ms: int) -> CheckpointRecovery | None:
        meta = self.read_metadata()
        intents = self._times("offsets")
        commits = self._times("commits")
        if meta is None:
            if intents or commits:
                raise CheckpointError(
                    f"{self._where('metadata')} is missing but the directory holds batches: it is damaged or "
                    "not an ingest checkpoint; restore the file or use a new checkpoint directory")
            return None
        if "zero_time_ms" not in meta:
            return None  # created but never started

        # The newest commit that can be read; corrupt newer ones mean those batches re-run.
        committed: list[tuple[int, CommitRecord]] = []
        for t in reversed(commits):
            try:
                record = self.read_commit(t)
            except (CorruptRecordError, CheckpointError) as exc:
                self._corrupt_commits.add(t)
                if not committed:
                    log.warning("%s; falling back to the commit before it, so batch %s is re-run "
                                "(idempotent and transactional sinks are not affected)", exc, format_batch_time(t))
                    continue
                log.warning("%s (an older commit; ignored)", exc)
                continue
            committed.append((t, record))
        committed.reverse()
        last_committed = committed[-1][0] if committed else None

        pending: list[tuple[int, Mapping[str, Position]]] = []
        last_plans: dict[str, Position] = {}
        for t in intents:
            path = f"offsets/{_tname(t)}"
            needed = last_committed is None or t > last_committed
            try:
                plans = self.read_intent(t).positions
            except (CorruptRecordError, CheckpointError) as exc:
                if needed:
                    raise CheckpointError(
                        f"{exc}. Batch {format_batch_time(t)} has no commit, so it must be re-run with the "
                        "inputs recorded in this file, which cannot be read. Restore the file from a backup, "
                        "or delete it to re-plan that batch from the source positions of the batches before "
                        "it (replayable sources then read the same data again).") from exc
                log.warning("%s. Batch %s is committed: %s", exc, format_batch_time(t),
                            self._committed_intent_loss(committed, meta))
                continue
            for name, plan in plans.items():
                last_plans[name] = plan
            if needed:
                pending.append((t, plans))

        state_files, replay = self._recover_state(committed, intents)
        self.metadata = meta
        self._commits = deque((t, {sid: list(f) for sid, f in rec.state_files.items()})
                              for t, rec in committed[-self.retain_batches:])
        self._last_state_files = dict(state_files)
        self._deltas_since_full = {sid: sum(1 for f in files if f.endswith(".delta"))
                                   for sid, files in state_files.items()}
        next_positions = dict(committed[-1][1].next_positions) if committed else {}
        self._next_positions = dict(next_positions)
        self._pending = {t for t, _ in pending}
        return CheckpointRecovery(
            zero_time_ms=int(meta["zero_time_ms"]), last_committed_ms=last_committed, pending=pending,
            next_positions=next_positions, last_plans=last_plans, state_files=state_files, replay=replay,
            metadata=meta)

    @staticmethod
    def _committed_intent_loss(committed: list[tuple[int, CommitRecord]], meta: Mapping[str, Any]) -> str:
        """What an unreadable intent of a committed batch really affects."""
        resumable = set(committed[-1][1].next_positions) if committed else set()
        without = sorted(set(meta.get("inputs", [])) - resumable)
        out = ("inputs " + (f"{sorted(resumable)} " if resumable else "") + "resume from the next positions "
               "stored with the newest commit, so no data is read twice")
        if without:
            out += (f"; input(s) {without} have no resume point in the commit and resume after their newest "
                    "readable position instead (receivers resume from their write-ahead log)")
        return out + ("; the intent would be needed again only to replay the batch into state if newer state "
                      "files were unreadable, and a restart then fails naming it")

    def _state_readable(self, files: Iterable[str], unreadable: list[str] | None = None) -> bool:
        for f in files:
            try:
                self.read_state(f)
            except (CorruptRecordError, CheckpointError) as exc:
                log.warning("%s", exc)
                if unreadable is not None:
                    unreadable.append(self._where(f))
                return False
        return True

    def _recover_state(self, committed: list[tuple[int, CommitRecord]], intents: list[int]
                       ) -> tuple[dict[str, list[str]], list[tuple[int, Mapping[str, Position]]]]:
        if not committed:
            return {}, []
        newest_state = {sid: list(f) for sid, f in committed[-1][1].state_files.items()}
        unreadable: list[str] = []
        if all(self._state_readable(files, unreadable) for files in newest_state.values()):
            return newest_state, []
        for t, record in reversed(committed[:-1]):
            files = {sid: list(f) for sid, f in record.state_files.items()}
            if set(files) >= set(newest_state) and all(self._state_readable(fs, unreadable)
                                                       for fs in files.values()):
                replay_times = [c for c, _ in committed if c > t]
                replay = []
                for c in replay_times:
                    try:
                        replay.append((c, self.read_intent(c).positions))
                    except (CorruptRecordError, CheckpointError) as exc:
                        raise CheckpointError(f"state of the newest commit is unreadable and {exc}, so it "
                                              "cannot be rebuilt; use a new checkpoint directory") from exc
                log.warning("state of the newest commit is unreadable; using the state of batch %s and "
                            "replaying %d committed batch(es) through the stateful operators",
                            format_batch_time(t), len(replay))
                return files, replay
        raise CheckpointError(
            f"no readable state snapshot in {self.storage.describe('state')} for the retained commits "
            f"(unreadable: {', '.join(dict.fromkeys(unreadable))}); restore the files or start from a new "
            "checkpoint directory")

    def force_full_snapshots(self) -> None:
        """The next commit writes full snapshots (state changed outside the delta chain)."""
        self._deltas_since_full.clear()

    def committed_state(self, state_id: str) -> tuple[bytes | None, list[bytes]] | None:
        files = self._last_state_files.get(state_id)
        return None if not files else self.load_state(files)

    def load_state(self, files: list[str]) -> tuple[bytes | None, list[bytes]]:
        full = None
        deltas = []
        for f in files:
            record = self.read_state(f)
            if record.full:
                full, deltas = record.data, []
            else:
                deltas.append(record.data)
        return full, deltas


def _state_bytes(op: Any, produce: Any) -> Any:
    try:
        return produce()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the state of {op.describe()} cannot be written to the checkpoint with its serde "
                              f"({type(op.serde).__name__}): {exc}") from exc


def _json_ok(position: Position) -> bool:
    try:
        json.dumps(encode(position_to_data(position)), allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
