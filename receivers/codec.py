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

from ingest.errors import ConfigError
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


def decode_block(data: bytes) -> list[Any]:
    return _unpack(data)
