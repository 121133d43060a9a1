"""`ingest checkpoint ls|show|fsck DIRECTORY`: read a checkpoint without running the job.

ls    one line per batch: time, intent, commit, records
show  the metadata, every batch's plans and its inputs' resume points (summarized) and
      the state files with sizes
fsck  check the metadata and every record with the rules a restart uses (framing,
      checksum, the record's batch time, operator and kind against its file
      name, the fields), then recover the directory as a restart would without
      writing anything, and say what the restart would do; exit code 1 if
      anything is wrong, in particular whenever a restart would fail

Source packages add their own checks of what they keep under the checkpoint
directory (the receivers' write-ahead logs) with `register_fsck_check`
(`ingest.fsck_checks`, re-exported here); their plugin modules are loaded
through `ingest.sources` before a check runs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

from ingest.checkpoint import CheckpointLog, _parse_time, _tname
from ingest.checkpoint_lock import LOCK
from ingest.errors import CheckpointError, ConfigError, CorruptRecordError, IngestError
# FsckCheck and register_fsck_check: re-exported, where source packages and their tests found them.
from ingest.fsck_checks import FsckCheck as FsckCheck, register_fsck_check as register_fsck_check, run_fsck_checks
from ingest.listener import format_batch_time
from offsets import Position, position_to_data
from offsets.records import CommitRecord, IntentRecord

def _summarize(position: Position) -> str:
    """One line about a stored position, from the position itself."""
    records, text = position.records, position.describe()
    if records is None:
        return text
    return f"{records} records" + (f", {text}" if text and text != f"{records} record(s)" else "")


def _intent_entry(record: IntentRecord) -> dict[str, Any]:
    return {"time_ms": record.time_ms,
            "plans": {name: position_to_data(p) for name, p in record.positions.items()},
            "summary": {name: _summarize(p) for name, p in record.positions.items()}}


def _commit_entry(record: CommitRecord) -> dict[str, Any]:
    return {"time_ms": record.time_ms, "summary": dict(record.summary),
            "state": {sid: list(files) for sid, files in record.state_files.items()},
            "next": {name: position_to_data(p) for name, p in record.next_positions.items()},
            "resume": {name: p.describe() for name, p in record.next_positions.items()}}


# What a job writes into its checkpoint directory when it starts and runs: a directory
# with none of them was never a checkpoint (and one with some is a damaged checkpoint).
_CHECKPOINT_ENTRIES = ("metadata", "offsets", "commits", "state", "receivers")


def inspect(directory: str) -> dict[str, Any]:
    """Everything `ls`/`show`/`fsck` print, as plain data."""
    if "://" not in directory:
        if os.path.isfile(directory):
            raise ConfigError(f"{directory!r} is a file, not a directory: name the checkpoint directory "
                              "(the one given to ssc.checkpoint() or StreamingContext.get_or_create())")
        if not os.path.isdir(directory):
            raise ConfigError(f"checkpoint directory {directory!r} does not exist")
    ckpt = CheckpointLog(directory)
    if not any(ckpt.storage.exists(name) for name in _CHECKPOINT_ENTRIES):
        raise CheckpointError(f"{directory!r} is not a checkpoint directory: it has none of "
                              f"{', '.join(_CHECKPOINT_ENTRIES)}; name the directory given to ssc.checkpoint() "
                              "or StreamingContext.get_or_create() (a job writes them when it starts)")
    problems: list[str] = []
    try:
        meta = ckpt.read_metadata()
    except (CorruptRecordError, CheckpointError) as exc:
        meta = None
        problems.append(str(exc))
    batches: dict[int, dict[str, Any]] = {}
    readers = (("intent", "offsets", ckpt.read_intent, _intent_entry),
               ("commit", "commits", ckpt.read_commit, _commit_entry))
    for kind, directory_name, read, entry_of in readers:
        for name in ckpt.storage.list(directory_name):
            t = _parse_time(name)
            if t is None or name != _tname(t):
                problems.append(f"{ckpt.storage.describe(directory_name + '/' + name)} is not a batch file")
                continue
            entry = batches.setdefault(t, {"time_ms": t, "intent": None, "commit": None})
            try:
                entry[kind] = entry_of(read(t))  # type: ignore[operator]
            except (CorruptRecordError, CheckpointError) as exc:
                entry[kind] = {"error": str(exc)}
                problems.append(str(exc))
    state: dict[str, list[dict[str, Any]]] = {}
    for sid in ckpt.storage.list("state"):
        for name in ckpt.storage.list(f"state/{sid}"):
            path = f"state/{sid}/{name}"
            item: dict[str, Any] = {"file": name, "bytes": _size(ckpt, path)}
            try:
                ckpt.read_state(path)
                item["ok"] = True
            except (CorruptRecordError, CheckpointError) as exc:
                item["ok"] = False
                problems.append(str(exc))
            state.setdefault(sid, []).append(item)
    times = sorted(batches)
    committed = [t for t in times if isinstance(batches[t]["commit"], dict) and "error" not in batches[t]["commit"]]
    last_commit = committed[-1] if committed else None
    for t in times:
        entry = batches[t]
        if entry["commit"] is not None and entry["intent"] is None:
            problems.append(f"batch {t} has a commit but no intent ({ckpt.storage.describe('offsets/' + _tname(t))})")
        commit = entry["commit"]
        for sid, files in (commit.get("state", {}).items() if isinstance(commit, dict) else ()):
            for f in files:
                if not ckpt.storage.exists(f):
                    problems.append(f"commit of batch {t} lists {ckpt.storage.describe(f)}, which is missing")
    pending = [t for t in times if last_commit is None or t > last_commit]
    problems.extend(_lock_problems(ckpt))
    if "://" not in directory:
        problems.extend(run_fsck_checks(directory))
    restart = _dry_restart(directory)
    if not restart["ok"]:
        problems.append(f"a restart would fail: {restart['error']}")
    return {"directory": ckpt.location, "metadata": meta, "batches": [batches[t] for t in times],
            "last_committed_ms": last_commit, "pending": pending, "state": state, "restart": restart,
            "problems": problems}


def _lock_problems(ckpt: CheckpointLog) -> list[str]:
    if not ckpt.storage.exists(LOCK):
        return []
    try:
        ckpt.lock.read()
    except CheckpointError as exc:
        return [str(exc)]
    return []


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _dry_restart(directory: str) -> dict[str, Any]:
    """What a restart would do: the same recovery, reading only."""
    ckpt = CheckpointLog(directory)
    logger = logging.getLogger("ingest.checkpoint")
    warnings = _Warnings()
    logger.addHandler(warnings)
    try:
        meta = ckpt.read_metadata()
        recovery = ckpt.recover(int((meta or {}).get("batch_interval_ms", 1000)))
    except (CorruptRecordError, CheckpointError) as exc:
        return {"ok": False, "error": str(exc), "warnings": warnings.messages}
    finally:
        logger.removeHandler(warnings)
    if recovery is None:
        return {"ok": True, "fresh": True, "warnings": warnings.messages}
    return {"ok": True, "fresh": False, "last_committed_ms": recovery.last_committed_ms,
            "rerun": [t for t, _ in recovery.pending], "replay": [t for t, _ in recovery.replay],
            "warnings": warnings.messages}


def _describe_restart(restart: dict[str, Any]) -> str:
    if not restart["ok"]:
        return f"a restart would fail: {restart['error']}"
    if restart.get("fresh"):
        return "a restart would start afresh (no batch has run)"
    last = restart["last_committed_ms"]
    out = (f"a restart would resume after batch {format_batch_time(last) if last is not None else 'none'}"
           f" and re-run {len(restart['rerun'])} batch(es)")
    if restart["replay"]:
        out += f", replaying {len(restart['replay'])} committed batch(es) into state (older state is used)"
    return out


def _size(ckpt: CheckpointLog, path: str) -> int:
    try:
        return ckpt.storage.size(path)
    except OSError:
        return 0


def run_checkpoint_command(action: str, directory: str, as_json: bool = False) -> int:
    info = inspect(directory)
    out = sys.stdout
    if as_json:
        json.dump(info if action != "ls" else {k: info[k] for k in ("directory", "last_committed_ms", "pending",
                                                                     "problems")} | {
            "batches": [{"time_ms": b["time_ms"], "intent": b["intent"] is not None,
                         "commit": b["commit"] is not None} for b in info["batches"]]}, out, indent=2, default=str)
        out.write("\n")
        return 1 if action == "fsck" and info["problems"] else 0
    meta = info["metadata"] or {}
    if action in ("ls", "show"):
        out.write(f"checkpoint {info['directory']}\n")
        if meta:
            out.write(f"  batch interval {meta.get('batch_interval_ms', 0) / 1000:g} s, "
                      f"zero time {meta.get('zero_time_ms')}, inputs {meta.get('inputs')}, "
                      f"stateful {meta.get('stateful')}\n")
        out.write(f"  last committed batch: "
                  f"{format_batch_time(info['last_committed_ms']) if info['last_committed_ms'] else 'none'}; "
                  f"to re-run on restart: {len(info['pending'])}\n\n")
        out.write(f"  {'batch time':<26} {'time_ms':>15}  {'intent':<8} {'commit':<8} records\n")
        for b in info["batches"]:
            intent, commit = b["intent"], b["commit"]
            istat = "-" if intent is None else ("CORRUPT" if "error" in intent else "ok")
            cstat = "-" if commit is None else ("CORRUPT" if "error" in commit else "ok")
            records = (commit or {}).get("summary", {}).get("records", "")
            out.write(f"  {format_batch_time(b['time_ms']):<26} {b['time_ms']:>15}  {istat:<8} {cstat:<8} {records}\n")
            if action == "show" and intent and "summary" in intent:
                for name, text in intent["summary"].items():
                    out.write(f"      {name}: {text}\n")
            if action == "show" and commit and "resume" in commit:
                for name, text in commit["resume"].items():
                    out.write(f"      {name} resume point: {text}\n")
        if action == "show":
            out.write("\n  state:\n")
            for sid, files in sorted(info["state"].items()):
                total = sum(f["bytes"] for f in files)
                out.write(f"    {sid}: {len(files)} file(s), {total} bytes\n")
                for f in files:
                    out.write(f"      {f['file']:<34} {f['bytes']:>10} bytes {'ok' if f['ok'] else 'CORRUPT'}\n")
    if action == "fsck":
        out.write(f"{_describe_restart(info['restart'])}\n")
    if action == "fsck" or info["problems"]:
        if info["problems"]:
            out.write(f"\n{len(info['problems'])} problem(s):\n")
            for p in info["problems"]:
                out.write(f"  - {p}\n")
        else:
            out.write(f"checkpoint {info['directory']}: {len(info['batches'])} batches, "
                      f"{sum(len(f) for f in info['state'].values())} state files, no problems\n")
    return 1 if action == "fsck" and info["problems"] else 0
