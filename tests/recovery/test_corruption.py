"""Corruption suite: every file of a checkpoint, damaged every way, on restart.

A deterministic job (manual clock; a queue stream and a receiver stream with
the write-ahead log; a running count per key with `update_state_by_key`, which
writes full snapshots, and one with `map_with_state`, which writes deltas;
outputs appending JSON lines keyed by batch time and operation) runs three
times to build a checkpoint: batches 1-4; batches 5-7 and a stop with block 8
stored; batch 8, whose output fails after the receiver stored one more block.
So the checkpoint holds commits, an intent without a commit, full and delta
state files, WAL segments of two runs (one holding a block of the pending
batch, one a block in no batch yet), the WAL's bounds and lock files, and
whatever else the current release writes.

Then every file found in that directory (walked, so new record kinds are
covered without touching this file) is damaged, one case at a time, on a copy:
a flipped bit (several seeds), truncated (to 0, to half, by one byte), deleted,
replaced by a directory, swapped with each file of the same kind, and
overwritten by each file of the same kind and by one file of every other kind.
For each case, `ingest checkpoint fsck` runs on the copy, then the job
restarts from it and runs three more batches. Allowed outcomes:

  exact   the final output equals a plain-Python model of the job's output (and
          a batch written twice was written the same both times);
  error   an `IngestError` whose message names the damaged file;
  torn tail (logged)
          a WAL segment cut short, whose incomplete tail recovery dropped
          with a warning naming the file, the offset and the bytes dropped:
          indistinguishable from a crash mid-write (see `logged_torn_tail`).

Anything else fails: different output (silently wrong data), another
exception (KeyError, IsADirectoryError, ...), an `IngestError` that does not
say which file, or a restart that does not finish within 30 s. fsck must exit
non-zero whenever the restart raised; where it is stricter (non-zero, and the
restart recovered exactly by falling back) the case is counted, not failed,
since reporting damage that recovery worked around is fsck's job.

The counts per outcome are printed (run with -s to see them).
INGEST_CORRUPTION_SEEDS sets the number of bit flips per file (default 100).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ingest import ManualClock, StreamingContext
from ingest.checkpoint_cli import run_checkpoint_command
from ingest.errors import ConfigError, IngestError
from receivers import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FLIP_SEEDS = int(os.environ.get("INGEST_CORRUPTION_SEEDS", "100"))
CASE_TIMEOUT_S = 30.0
STREAM = "events"
KEYS = 4
BATCHES = 11  # batch times 1 s .. 11 s
FAILING_BATCH_MS = 8000  # the third run's output fails here: its intent stays without a commit
IN_FLIGHT = "in-flight"  # the block stored while batch 8 runs: in the WAL, in no batch yet


# -- the job ------------------------------------------------------------------------------------


def queue_records(k: int) -> list[str]:
    return [f"k{(k + i) % KEYS}:q{k}.{i}" for i in range(3)]


def block_records(label: Any) -> list[str]:
    n = 2 if label == IN_FLIGHT else 1 + int(label) % 3
    return [f"k{(len(str(label)) + i) % KEYS}:r{label}.{i}" for i in range(n)]


class FedReceiver(Receiver[str]):
    """A receiver the test feeds directly: `feed(label)` stores one block and
    returns once it is in the WAL and tracked."""

    def __init__(self) -> None:
        super().__init__("fed receiver")

    def on_start(self) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def feed(self, label: Any) -> None:
        self.store_batch(block_records(label))


def add_counts(new: list[int], old: int | None) -> int:
    return (old or 0) + sum(new)


def count_seen(key: str, one: int, state: Any) -> list[Any]:
    seen = state.get_option(0) + one
    state.update(seen)
    return [key, seen]


@dataclass
class Job:
    ssc: StreamingContext
    receiver: FedReceiver


def build_job(checkpoint: Path, output: Path, *, fail_at_ms: int | None = None) -> Job:
    receiver = FedReceiver()

    def append(op: str) -> Callable[[Any], None]:
        def write(batch: Any) -> None:
            line = json.dumps({"t": batch.time, "op": op, "value": sorted(batch.collect())})
            with open(output, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        return write

    def fail(batch: Any) -> None:
        if batch.time == fail_at_ms:
            receiver.feed(IN_FLIGHT)
            raise RuntimeError(f"output fails on purpose at batch {batch.time}")

    def factory() -> StreamingContext:
        ssc = StreamingContext(1.0, clock=ManualClock(), write_ahead_log=True, stop_on_signal=False,
                               log_batches=False)
        ssc.checkpoint(str(checkpoint), retain_batches=3, full_snapshot_every=3)
        queued = ssc.queue_stream([queue_records(k) for k in range(1, BATCHES + 1)], name="queue")
        received = ssc.receiver_stream(receiver, name=STREAM)
        records = queued.union(received)
        records.foreach_batch(append("records"), name="records")
        counts = records.map(lambda r: (r.split(":")[0], 1)).update_state_by_key(add_counts, name="counts")
        counts.foreach_batch(append("counts"), name="counts-out")
        seen = records.map(lambda r: (r.split(":")[0], 1)).map_with_state(count_seen, name="seen")
        seen.foreach_batch(append("seen"), name="seen-out")
        records.foreach_batch(fail, name="fail")
        return ssc

    return Job(StreamingContext.get_or_create(str(checkpoint), factory), receiver)


def run_batches(job: Job, labels: list[Any]) -> None:
    """One batch per label: store its block, then run the batch."""
    for label in labels:
        job.receiver.feed(label)
        job.ssc.step(timeout=CASE_TIMEOUT_S)


def build_checkpoint(checkpoint: Path, output: Path) -> None:
    first = build_job(checkpoint, output)
    first.ssc.start()
    run_batches(first, [1, 2, 3, 4])
    first.ssc.stop(graceful=False, timeout=20)  # graceful would drain the queue stream
    second = build_job(checkpoint, output)
    second.ssc.start()
    run_batches(second, [5, 6, 7])
    second.receiver.feed(8)  # in the second run's segment; batch 8 of the third run takes it
    second.ssc.stop(graceful=False, timeout=20)
    third = build_job(checkpoint, output, fail_at_ms=FAILING_BATCH_MS)
    third.ssc.start()
    with pytest.raises(IngestError, match="fails on purpose"):
        third.ssc.step(timeout=CASE_TIMEOUT_S)
    with pytest.raises(IngestError, match="fails on purpose"):  # wait until it released its files
        third.ssc.await_termination(20)


def restart(checkpoint: Path, output: Path, holder: dict[str, Any]) -> None:
    """The restart every case is judged by: recover (re-running batch 8), run
    batches 9 to 11, stop."""
    job = build_job(checkpoint, output)
    holder["ssc"] = job.ssc
    job.ssc.start()
    run_batches(job, [101, 102, 103])
    job.ssc.stop(graceful=True, timeout=20)
    if job.ssc.error is not None:
        raise job.ssc.error


def model_output() -> dict[tuple[int, str], list[Any]]:
    """What the job writes, computed without it: batch k holds queue list k and
    the block(s) stored before it ran (the in-flight block joins batch 9)."""
    blocks: dict[int, list[Any]] = {k: [k] for k in range(1, 9)}
    blocks[9] = [IN_FLIGHT, 101]
    blocks[10] = [102]
    blocks[11] = [103]
    out: dict[tuple[int, str], list[Any]] = {}
    counts: Counter[str] = Counter()
    for k in range(1, BATCHES + 1):
        records = queue_records(k) + [r for label in blocks[k] for r in block_records(label)]
        seen = []
        for key in sorted(r.split(":")[0] for r in records):
            counts[key] += 1
            seen.append([key, counts[key]])
        out[(k * 1000, "records")] = sorted(records)
        out[(k * 1000, "counts")] = sorted([key, n] for key, n in counts.items())
        out[(k * 1000, "seen")] = sorted(seen)
    return out


def read_output(output: Path) -> tuple[dict[tuple[int, str], list[Any]], list[str]]:
    """The output keyed by (batch time, operation), and every (batch, operation)
    written twice with different values (a re-run must write the same)."""
    found: dict[tuple[int, str], list[Any]] = {}
    conflicts = []
    for line in output.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        key = (item["t"], item["op"])
        if key in found and found[key] != item["value"]:
            conflicts.append(f"batch {key[0]} {key[1]}: {found[key]} then {item['value']}")
        found[key] = item["value"]
    return found, conflicts


# -- corruptions ---------------------------------------------------------------------------------


def kind_of(rel: str) -> str:
    """Files of one kind differ only in their numbers (batch times, segment numbers)."""
    return re.sub(r"[0-9]+", "#", rel)


@dataclass(frozen=True)
class Corruption:
    rel: str
    how: str
    other: str | None = None
    seed: int | None = None

    @property
    def touched(self) -> tuple[str, ...]:
        """The files a correct error may name."""
        return (self.rel, self.other) if self.how == "swap" and self.other else (self.rel,)

    def __str__(self) -> str:
        extra = f" {self.other}" if self.other else ""
        seed = f" seed={self.seed}" if self.seed is not None else ""
        return f"{self.how}{extra}{seed} on {self.rel}"

    def apply(self, root: Path) -> bool:
        """Damage the copy under `root`; False when the result equals the original (nothing to test)."""
        path = root / self.rel
        data = path.read_bytes()
        if self.how == "flip":
            rng = random.Random(f"{self.rel}/{self.seed}")
            bit = rng.randrange(len(data) * 8)
            damaged = bytearray(data)
            damaged[bit // 8] ^= 1 << (bit % 8)
            path.write_bytes(bytes(damaged))
        elif self.how == "truncate-0":
            path.write_bytes(b"")
        elif self.how == "truncate-half":
            path.write_bytes(data[: len(data) // 2])
        elif self.how == "truncate-1":
            path.write_bytes(data[:-1])
        elif self.how == "delete":
            path.unlink()
        elif self.how == "directory":
            path.unlink()
            path.mkdir()
        elif self.how == "swap":
            assert self.other is not None
            other = root / self.other
            theirs = other.read_bytes()
            if theirs == data:
                return False
            path.write_bytes(theirs)
            other.write_bytes(data)
        elif self.how == "copy":
            assert self.other is not None
            theirs = (root / self.other).read_bytes()
            if theirs == data:
                return False
            path.write_bytes(theirs)
        else:
            raise AssertionError(self.how)
        return True


def corruptions(root: Path) -> list[Corruption]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    by_kind: dict[str, list[str]] = defaultdict(list)
    for rel in files:
        by_kind[kind_of(rel)].append(rel)
    cases = []
    for rel in files:
        size = (root / rel).stat().st_size
        if size:
            cases += [Corruption(rel, "flip", seed=s) for s in range(FLIP_SEEDS)]
            cases += [Corruption(rel, "truncate-0"), Corruption(rel, "truncate-1")]
            if size > 1:
                cases.append(Corruption(rel, "truncate-half"))
        cases += [Corruption(rel, "delete"), Corruption(rel, "directory")]
        siblings = [o for o in by_kind[kind_of(rel)] if o != rel]
        cases += [Corruption(rel, "swap", other) for other in siblings if other > rel]  # each pair once
        cases += [Corruption(rel, "copy", other) for other in siblings]
        cases += [Corruption(rel, "copy", others[len(others) // 2]) for kind, others in sorted(by_kind.items())
                  if kind != kind_of(rel)]
    return cases


# -- running and judging a case --------------------------------------------------------------------


@dataclass
class Outcome:
    case: Corruption
    restart: str  # "exact", "error", or a failure class
    detail: str = ""
    fsck_code: int | None = None
    fsck: str = ""  # "agree", "stricter", or a failure class
    fsck_detail: str = ""

    @property
    def raised(self) -> bool:
        return self.restart not in ("exact", "wrong output", "torn tail (logged)")


def run_fsck(checkpoint: Path) -> tuple[int | None, str]:
    """`ingest checkpoint fsck DIR` in-process: its exit code (a project error
    maps to 1 or 2 as the command does) and the end of what it printed; None
    when it crashed with another exception."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = run_checkpoint_command("fsck", str(checkpoint))
    except ConfigError as exc:
        return 2, str(exc)[-400:]
    except IngestError as exc:
        return 1, f"{type(exc).__name__}: {exc}"[-400:]
    except Exception as exc:  # noqa: BLE001 - judged: fsck must never crash
        return None, f"{type(exc).__name__}: {exc}"
    return code, out.getvalue()[-400:]


def judge_restart(case: Corruption, workdir: Path, expected: dict[tuple[int, str], list[Any]]) -> tuple[str, str]:
    checkpoint, output = workdir / "checkpoint", workdir / "output.jsonl"
    holder: dict[str, Any] = {}
    result: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            restart(checkpoint, output, holder)
            result["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the judge below
            result["error"] = exc

    # A daemon thread on purpose: a restart that hangs is reported as a failure
    # and must not keep the test process alive after the suite ends.
    thread = threading.Thread(target=target, name=f"corruption-case-{case.how}", daemon=True)
    with wal_warnings() as warnings:
        thread.start()
        thread.join(CASE_TIMEOUT_S)
    ssc = holder.get("ssc")
    if thread.is_alive():
        if ssc is not None:
            ssc.stop(graceful=False, timeout=5)
        return "hang", f"the restart did not finish within {CASE_TIMEOUT_S:.0f} s"
    if ssc is not None:
        ssc.stop(graceful=False, timeout=10)  # after a failure: release its files before the next case
    error = result.get("error")
    if error is None:
        found, conflicts = read_output(output)
        if conflicts:
            return "wrong output", "re-run wrote different values: " + "; ".join(conflicts[:2])
        if found != expected:
            missing = sorted(set(expected) - set(found))
            differs = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
            extra = sorted(set(found) - set(expected))
            detail = f"missing {missing[:4]}, different {differs[:4]}, unexpected {extra[:4]}"
            if logged_torn_tail(case, warnings):
                return "torn tail (logged)", detail
            return "wrong output", detail
        return "exact", ""
    message = f"{type(error).__name__}: {error}"
    if not isinstance(error, IngestError):
        return f"foreign exception {type(error).__name__}", message[:400]
    if not any(rel in str(error) for rel in case.touched):
        return "error not naming the file", message[:400]
    return "error", message[:400]


def run_case(case: Corruption, base: Path, base_output: Path, scratch: Path,
             expected: dict[tuple[int, str], list[Any]]) -> Outcome | None:
    workdir = Path(tempfile.mkdtemp(dir=scratch))
    try:
        shutil.copytree(base, workdir / "checkpoint", symlinks=True)
        shutil.copyfile(base_output, workdir / "output.jsonl")
        if not case.apply(workdir / "checkpoint"):
            return None
        code, fsck_text = run_fsck(workdir / "checkpoint")
        restart_class, detail = judge_restart(case, workdir, expected)
        outcome = Outcome(case, restart_class, detail, code, fsck_detail=fsck_text)
        if code is None:
            outcome.fsck = "fsck crashed"
        elif outcome.raised and code == 0:
            outcome.fsck = "fsck passed, restart raised"
        elif not outcome.raised and code != 0 and outcome.restart == "exact":
            outcome.fsck = "stricter"
        elif outcome.restart == "wrong output" and code == 0:
            outcome.fsck = "agree (both missed the damage)"  # the restart test reports it
        else:
            outcome.fsck = "agree"
        return outcome
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def wal_warnings() -> Iterator[list[str]]:
    """The write-ahead log's warnings during one restart (the other loggers stay quiet)."""
    wal_logger = logging.getLogger("receivers.wal")
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    handler = Collect(logging.WARNING)
    level, propagate = wal_logger.level, wal_logger.propagate
    wal_logger.setLevel(logging.WARNING)
    wal_logger.propagate = False
    wal_logger.addHandler(handler)
    try:
        yield found
    finally:
        wal_logger.removeHandler(handler)
        wal_logger.setLevel(level)
        wal_logger.propagate = propagate


def logged_torn_tail(case: Corruption, warnings: list[str]) -> bool:
    """A WAL segment cut short looks exactly like a crash in the middle of a
    write: recovery drops the incomplete tail and says so, naming the file,
    the offset and the bytes dropped (README, "Receivers and the write-ahead
    log"). After a real crash only the record being written is lost, and it
    was never acknowledged; a truncation by hand can remove acknowledged
    records, which no reader can tell apart without a second fsync per block.
    So a truncated segment whose tail was dropped with that warning is its own
    documented outcome, not silently wrong data."""
    name = Path(case.rel).name
    return case.how.startswith("truncate") and name.endswith(".wal") and any(
        name in w and "torn tail" in w for w in warnings)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Thousands of recoveries warn about the damage they see; keep the captured log small."""
    names = ("ingest", "receivers", "direct", "offsets")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    # On tmpfs when there is one: thousands of restarts each fsync their writes.
    parent = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="ingest-corruption-", dir=parent))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Suite:
    base: Path
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0


@pytest.fixture(scope="module")
def suite(scratch: Path) -> Suite:
    base, base_output = scratch / "base", scratch / "base-output.jsonl"
    expected = model_output()
    with quiet_logs():
        build_checkpoint(base, base_output)
        result = Suite(base)
        started = time.monotonic()
        for case in corruptions(base):
            outcome = run_case(case, base, base_output, scratch, expected)
            if outcome is not None:
                result.outcomes.append(outcome)
        result.seconds = time.monotonic() - started
    print_report(result)
    return result


def print_report(suite: Suite) -> None:
    outcomes = suite.outcomes
    print(f"\ncorruption suite: {len(outcomes)} cases in {suite.seconds:.0f} s, "
          f"{FLIP_SEEDS} bit flips per file")
    print("restart outcome by corruption:")
    table = Counter((o.case.how, o.restart) for o in outcomes)
    for (how, restart_class), n in sorted(table.items()):
        print(f"  {how:<14} {restart_class:<36} {n:>6}")
    print("restart outcome by file kind:")
    for (kind, restart_class), n in sorted(Counter((kind_of(o.case.rel), o.restart) for o in outcomes).items()):
        print(f"  {kind:<44} {restart_class:<36} {n:>6}")
    print("restart outcomes:", dict(Counter(o.restart for o in outcomes)))
    print("fsck:", dict(Counter(o.fsck for o in outcomes)))


def examples(outcomes: list[Outcome], label: Callable[[Outcome], str], detail: Callable[[Outcome], str],
             per_class: int = 4) -> str:
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[label(o)].append(o)
    lines = []
    for name, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{name}: {len(members)} case(s), e.g.")
        lines += [f"    {o.case}: {detail(o)}" for o in members[:per_class]]
    return "\n".join(lines)


# -- the specification -----------------------------------------------------------------------------------


def test_the_uncorrupted_checkpoint_restarts_to_exactly_the_model_output(suite: Suite, scratch: Path) -> None:
    workdir = Path(tempfile.mkdtemp(dir=scratch))
    shutil.copytree(suite.base, workdir / "checkpoint")
    shutil.copyfile(scratch / "base-output.jsonl", workdir / "output.jsonl")
    with quiet_logs():
        assert judge_restart(Corruption("metadata", "none"), workdir, model_output()) == ("exact", "")
        code, text = run_fsck(workdir / "checkpoint")
    assert code == 0, text


def test_the_checkpoint_holds_every_kind_of_file_the_suite_is_meant_to_damage(suite: Suite) -> None:
    kinds = {kind_of(p.relative_to(suite.base).as_posix()) for p in suite.base.rglob("*") if p.is_file()}
    assert {"metadata", "offsets/#", "commits/#", "state/counts/#.full", "state/seen/#.full",
            "state/seen/#.delta", f"receivers/{STREAM}/blocks-#.wal"} <= kinds, kinds
    assert len([k for k in kinds if k.startswith(f"receivers/{STREAM}/")]) >= 3, kinds  # segments, bounds, lock
    assert len(suite.outcomes) >= 1000


def test_every_corruption_restarts_to_the_exact_output_or_an_error_naming_the_file(suite: Suite) -> None:
    bad = [o for o in suite.outcomes if o.restart not in ("exact", "error", "torn tail (logged)")]
    assert not bad, (f"{len(bad)} of {len(suite.outcomes)} corrupted checkpoints restarted wrongly:\n"
                     + examples(bad, lambda o: f"{o.restart} ({kind_of(o.case.rel)}, {o.case.how})",
                                lambda o: o.detail))


def test_fsck_fails_whenever_a_restart_would_raise_and_never_crashes(suite: Suite) -> None:
    bad = [o for o in suite.outcomes if o.fsck not in ("agree", "stricter", "agree (both missed the damage)")]
    assert not bad, (f"{len(bad)} of {len(suite.outcomes)} cases where fsck disagrees with the restart:\n"
                     + examples(bad, lambda o: f"{o.fsck} ({kind_of(o.case.rel)}, {o.case.how})",
                                lambda o: f"fsck exit {o.fsck_code}: {o.fsck_detail.strip()[-200:]!r}; "
                                          f"restart: {o.restart}: {o.detail[:200]}"))
