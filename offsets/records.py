"""The codec of checkpoint records: metadata, intents, commits, state snapshots.

Every checkpoint file is one framed record: one ASCII header line

    INGEST-CKPT <format> <kind> <time> <operator> <length> <crc32c>\\n

followed by exactly `length` bytes of body. `kind` is `meta`, `lock`,
`intent`, `commit`, `full` (a full state snapshot) or `delta` (the state
changes of one batch); `time` is the batch time in ms (`-` for metadata and
lock); `operator` is the stateful operator's id, percent-encoded (`-` for
records that cover every input of the batch: intents and commits, whose
positions are keyed by input name). The CRC32C (8 lowercase hex digits) covers
the header up to the space before it, then the body, so a flipped bit anywhere
is caught.

Reading a record checks it against the name of its file: a record whose kind,
batch time or operator is not the one its file name says (copied, renamed or
swapped with another file) is a `CorruptRecordError` naming the file, as is a
body whose fields do not have the expected shape. Nothing here trusts a
record's content beyond its typed fields.

Format history: format 1 (before typed positions) had no time or operator in
the header and stored untyped plans; it is refused with a `CheckpointError`
naming the version, never misread. Format 2 is this one.

The bodies of metadata, intents and commits are JSON. Values inside positions
(a queue stream's records) may hold tuples and non-string keys: the caller
supplies how to mark them (`RecordCodec(encode_value, object_hook)`), so that a
re-run batch sees exactly the values of its first run.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import quote, unquote

from offsets.errors import CheckpointError, CorruptRecordError
from offsets.positions import Position, position_from_data, position_to_data

MAGIC = b"INGEST-CKPT"
FORMAT_VERSION = 2
KINDS = ("meta", "lock", "intent", "commit", "full", "delta")


@dataclass(frozen=True)
class RecordId:
    """What a record is: its kind, batch time and operator. A file's name
    determines the id its record must have."""

    kind: str
    time_ms: int | None = None
    operator: str = ""

    def describe(self) -> str:
        what = {"full": "full state snapshot", "delta": "state delta"}.get(self.kind, self.kind)
        out = what + (f" of batch {self.time_ms}" if self.time_ms is not None else "")
        return out + (f" of operator {self.operator!r}" if self.operator else "")


@dataclass(frozen=True)
class IntentRecord:
    """Written before batch `time_ms` runs: what every input reads in it."""

    time_ms: int
    positions: Mapping[str, Position]


@dataclass(frozen=True)
class CommitRecord:
    """Written after every output of batch `time_ms` succeeded."""

    time_ms: int
    summary: Mapping[str, Any] = field(default_factory=dict)
    state_files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The files (full snapshot, then deltas) of every stateful operator's state after the batch."""
    next_positions: Mapping[str, Position] = field(default_factory=dict)
    """Where every input resumes after the batch (inputs with a resume point only)."""
    committed_at: float = 0.0


@dataclass(frozen=True)
class StateRecord:
    """The state of one stateful operator after batch `time_ms`: in full, or the batch's changes."""

    time_ms: int
    operator: str
    full: bool
    data: bytes


# -- framing -----------------------------------------------------------------------------------------


def _checksum(prefix: bytes, body: bytes) -> int:
    """CRC32C of the header's prefix, then the body."""
    # Imported on first use: the crc32c package's own import reads its installed
    # metadata (~30 ms), which `import offsets` (and so `import ingest`) should not pay.
    from crc32c import crc32c

    return crc32c(body, crc32c(prefix))


def _field(value: str) -> bytes:
    return (quote(value, safe="") if value else "-").encode()


def frame(rid: RecordId, body: bytes) -> bytes:
    """A record: header line, then `body`."""
    if rid.kind not in KINDS:
        raise ValueError(f"unknown record kind {rid.kind!r}")
    prefix = b"%s %d %s %s %s %d " % (MAGIC, FORMAT_VERSION, rid.kind.encode(),
                                       b"-" if rid.time_ms is None else b"%d" % rid.time_ms,
                                       _field(rid.operator), len(body))
    return prefix + b"%08x\n" % _checksum(prefix, body) + body


_FRAME = re.compile(rb"^(INGEST-CKPT ([0-9]{1,4}) [ -~]{0,480}? ([0-9]{1,12}) )([0-9a-f]{8})$")
_HEADER = re.compile(rb"^INGEST-CKPT [0-9]{1,4} ([a-z]{1,16}) (-|[0-9]{1,20}) ([A-Za-z0-9%._~-]{1,400}) [0-9]{1,12} $")
_VERSION = re.compile(rb"^INGEST-CKPT ([0-9]{1,4}) ")


def unframe(data: bytes, where: str, expected: RecordId | None = None) -> tuple[RecordId, bytes]:
    """Check a record's header, length, checksum and identity; return both.

    `where` names the file in errors. With `expected`, a record whose kind,
    time or operator differs is corrupt (it belongs to another file). The
    length and checksum are checked before the format version is believed, so
    a flipped bit is never taken for another format."""
    newline = data.find(b"\n", 0, 512)
    if newline < 0:
        raise CorruptRecordError(f"{where}: no record header (empty or truncated file, {len(data)} bytes)",
                                 where, 0)
    match = _FRAME.match(data[:newline])
    if match is None:
        raise CorruptRecordError(f"{where}: not a checkpoint record (bad header at byte 0)", where, 0)
    prefix, version, length = match.group(1), int(match.group(2)), int(match.group(3))
    body = data[newline + 1:]
    if len(body) != length:
        raise CorruptRecordError(
            f"{where}: truncated or padded record: header says {length} bytes, file has {len(body)} "
            f"after byte {newline + 1}", where, newline + 1)
    if _checksum(prefix, body) != int(match.group(4), 16):
        raise CorruptRecordError(f"{where}: checksum mismatch (header or body changed after byte 0)", where, 0)
    if version != FORMAT_VERSION:
        _refuse_version(version, where)
    fields = _HEADER.match(prefix)
    if fields is None or fields.group(1).decode() not in KINDS:
        raise CorruptRecordError(f"{where}: not a checkpoint record of format {FORMAT_VERSION} (bad header "
                                 "fields at byte 0)", where, 0)
    time_field, operator = fields.group(2), fields.group(3).decode()
    found = RecordId(fields.group(1).decode(), None if time_field == b"-" else int(time_field),
                     "" if operator == "-" else unquote(operator))
    if expected is not None and found != expected:
        raise CorruptRecordError(
            f"{where}: holds the {found.describe()}, but its name says it is the {expected.describe()} "
            "(the file was copied, renamed or swapped with another one); restore the right file", where, 0)
    return found, body


def record_version(data: bytes) -> int | None:
    """The format version in a record's header, if it has one."""
    match = _VERSION.match(data[:32])
    return int(match.group(1)) if match else None


def _refuse_version(version: int, where: str) -> None:
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: written by a newer ingest (checkpoint format {version}, this release "
                              f"reads format {FORMAT_VERSION}); upgrade ingest to recover from it")
    raise CheckpointError(
        f"{where}: checkpoint format {version}, written by an older release of ingest (this release reads "
        f"format {FORMAT_VERSION}, with typed source positions). It is not converted, so as never to be "
        "misread: finish the job with the release that wrote it (stop it gracefully so that no batch is "
        "left to re-run), then start this release with a new checkpoint directory")


def _corrupt(where: str, what: str) -> CorruptRecordError:
    return CorruptRecordError(f"{where}: {what} (a record with a valid checksum but wrong fields: written by "
                              "something else than ingest, or edited); restore the file", where, 0)


# -- typed records ----------------------------------------------------------------------------------


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class RecordCodec:
    """Encodes and decodes typed records. `encode_value` turns values into
    JSON-ready data and `object_hook` undoes it (defaults: plain JSON)."""

    encode_value: Callable[[Any], Any] = _identity
    object_hook: Callable[[dict[str, Any]], Any] | None = None

    def _json(self, obj: Any) -> bytes:
        return json.dumps(self.encode_value(obj), separators=(",", ":"), allow_nan=False).encode()

    def _load(self, data: bytes, where: str, expected: RecordId) -> dict[str, Any]:
        _, body = unframe(data, where, expected)
        try:
            obj = json.loads(body, object_hook=self.object_hook)
        except (ValueError, RecursionError) as exc:
            raise CorruptRecordError(f"{where}: body is not valid JSON ({exc})", where, 0) from None
        if not isinstance(obj, dict):
            raise _corrupt(where, f"body is a {type(obj).__name__}, not an object")
        if expected.time_ms is not None and obj.get("time_ms") != expected.time_ms:
            raise _corrupt(where, f"body says batch {obj.get('time_ms')!r}, header and name say {expected.time_ms}")
        return obj

    # metadata -------------------------------------------------------------------------------------

    def encode_meta(self, meta: Mapping[str, Any], kind: str = "meta") -> bytes:
        return frame(RecordId(kind), self._json(dict(meta)))

    def decode_meta(self, data: bytes, where: str, kind: str = "meta") -> dict[str, Any]:
        return self._load(data, where, RecordId(kind))

    # intents ----------------------------------------------------------------------------------------

    def encode_intent(self, record: IntentRecord) -> bytes:
        body = {"time_ms": record.time_ms,
                "positions": {name: position_to_data(p) for name, p in record.positions.items()}}
        return frame(RecordId("intent", record.time_ms), self._json(body))

    def decode_intent(self, data: bytes, where: str, time_ms: int) -> IntentRecord:
        obj = self._load(data, where, RecordId("intent", time_ms))
        return IntentRecord(time_ms, _positions(obj, "positions", where))

    # commits ------------------------------------------------------------------------------------------

    def encode_commit(self, record: CommitRecord) -> bytes:
        body = {"time_ms": record.time_ms, "summary": dict(record.summary),
                "state": {sid: list(files) for sid, files in record.state_files.items()},
                "next": {name: position_to_data(p) for name, p in record.next_positions.items()},
                "committed_at": record.committed_at or time.time()}
        return frame(RecordId("commit", record.time_ms), self._json(body))

    def decode_commit(self, data: bytes, where: str, time_ms: int) -> CommitRecord:
        obj = self._load(data, where, RecordId("commit", time_ms))
        summary, state = obj.get("summary", {}), obj.get("state")
        if not isinstance(summary, dict) or not isinstance(state, dict):
            raise _corrupt(where, "commit without a summary and state object")
        state_files: dict[str, tuple[str, ...]] = {}
        for sid, files in state.items():
            if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
                raise _corrupt(where, f"state files of operator {sid!r} are not a non-empty list of names")
            kinds = [f.rsplit(".", 1)[-1] for f in files]
            if kinds[0] != "full" or "full" in kinds[1:]:
                raise _corrupt(where, f"state files of operator {sid!r} do not start with one full snapshot")
            for f in files:
                if not _is_state_file_of(f, sid, time_ms):
                    raise _corrupt(where, f"lists {f!r} as state of operator {sid!r}, which is not a state file "
                                          f"of that operator at or before batch {time_ms}")
            state_files[sid] = tuple(files)
        committed_at = obj.get("committed_at", 0.0)
        if not isinstance(committed_at, (int, float)):
            raise _corrupt(where, "committed_at is not a number")
        return CommitRecord(time_ms, summary, state_files, _positions(obj, "next", where), float(committed_at))

    # state ----------------------------------------------------------------------------------------------

    def encode_state(self, record: StateRecord) -> bytes:
        return frame(RecordId("full" if record.full else "delta", record.time_ms, record.operator), record.data)

    def decode_state(self, data: bytes, where: str, time_ms: int, operator: str, full: bool) -> StateRecord:
        _, body = unframe(data, where, RecordId("full" if full else "delta", time_ms, operator))
        return StateRecord(time_ms, operator, full, body)


def _positions(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Position]:
    data = obj.get(key, {})
    if not isinstance(data, dict):
        raise _corrupt(where, f"{key!r} is not an object of positions by input name")
    return {name: position_from_data(value, f"{where}: input {name!r}") for name, value in data.items()}


_STATE_FILE = re.compile(r"^state/([^/]+)/([0-9]{20})\.(full|delta)$")


def state_file_name(operator: str, time_ms: int, full: bool) -> str:
    return f"state/{operator}/{time_ms:020d}.{'full' if full else 'delta'}"


def parse_state_file(path: str) -> RecordId | None:
    """The record a state file's name says it holds, or None if the name is not one."""
    match = _STATE_FILE.match(path)
    if match is None:
        return None
    return RecordId(match.group(3), int(match.group(2)), match.group(1))


def _is_state_file_of(path: str, operator: str, time_ms: int) -> bool:
    rid = parse_state_file(path)
    return rid is not None and rid.operator == operator and rid.time_ms is not None and rid.time_ms <= time_ms
