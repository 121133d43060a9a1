"""How received records are written into the write-ahead log: MessagePack,
a documented binary format of plain data. Never pickle: a WAL on shared
storage must not be a way to run code.

Records may be None, bool, int, float, str, bytes, lists, dicts, tuples and
`KafkaRecord`s (and any nesting of those). Tuples and KafkaRecords are kept
apart from lists with MessagePack extension types 1 and 2, so they come back
as they went in. A block made only of KafkaRecords is stored column by column
(extension type 3: one list per field), which packs in one call instead of one
per record.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ingest.errors import ConfigError, CorruptRecordError
from ingest.kafka.records import KafkaRecord

_TUPLE = 1
_KAFKA = 2
_KAFKA_COLUMNS = 3


def _default(obj: Any) -> Any:
    if isinstance(obj, KafkaRecord):
        return msgpack.ExtType(_KAFKA, _pack(list(obj)))
    if isinstance(obj, tuple):
        return msgpack.ExtType(_TUPLE, _pack(list(obj)))
    raise TypeError(f"cannot write a {type(obj).__name__} to the write-ahead log ({obj!r:.60}); receivers must "
                    "store plain data: str, bytes, numbers, None, lists, dicts, tuples or KafkaRecord")


def _ext(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return tuple(_unpack(data))
    if code == _KAFKA:
        return KafkaRecord(*_unpack(data))
    if code == _KAFKA_COLUMNS:
        return [KafkaRecord._make(fields) for fields in zip(*_unpack(data))]
    return msgpack.ExtType(code, data)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=False)


def records_payload(records: list[Any]) -> Any:
    """The records of a block as they are packed: column-wise for KafkaRecords."""
    if records and all(type(r) is KafkaRecord for r in records):
        return msgpack.ExtType(_KAFKA_COLUMNS, _pack([list(column) for column in zip(*records)]))
    return records


def encode_block(records: list[Any]) -> bytes:
    try:
        return _pack(records)
    except TypeError as exc:
        raise ConfigError(str(exc)) from None


# What msgpack and the extension hooks raise on bytes that are not what
# encode_block wrote (a crafted record can carry a valid checksum).
_UNDECODABLE = (msgpack.UnpackException, ValueError, TypeError, KeyError, IndexError, OverflowError,
                RecursionError)


def decode_block(data: bytes, *, path: str | None = None, offset: int | None = None) -> Any:
    """What `encode_block` wrote. Anything else raises `CorruptRecordError`
    naming `path` and `offset` (where the bytes were read)."""
    try:
        return _unpack(data)
    except _UNDECODABLE as exc:
        where = f"{path} at byte offset {offset}" if path is not None else "a write-ahead log record"
        raise CorruptRecordError(
            f"undecodable write-ahead log record in {where}: {type(exc).__name__}: {str(exc)[:200]}; the "
            "record's checksum matched, so it was written like this: it was not written by this release of "
            "ingest or was crafted. Move the log aside.", path=path, offset=offset) from None
