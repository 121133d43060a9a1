"""`KafkaRecord`, the one record type of every Kafka source, and the
conversion of each client's messages into it (one place, so the direct
stream and the receiver produce equal records for equal messages)."""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable, NamedTuple


class KafkaRecord(NamedTuple):
    """One Kafka record, the same whichever client or stream read it."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    """Milliseconds since the epoch (create or log-append time), None if the broker has none."""
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...] | None


_new = tuple.__new__  # skips NamedTuple's argument handling: this runs once per record


def from_confluent(m: Any) -> KafkaRecord:
    """A confluent-kafka `Message` (without an error) as a record."""
    ts_type, ts = m.timestamp()
    headers = m.headers()
    return _new(KafkaRecord, (m.topic(), m.partition(), m.offset(), ts if ts_type else None, m.key(), m.value(),
                              tuple(headers) if headers else None))


def confluent_converter(topic: str, partition: int, key_de: Callable[[Any], Any] | None = None,
                        value_de: Callable[[Any], Any] | None = None) -> Callable[[Any], KafkaRecord]:
    """`from_confluent` for messages known to be of one partition (saves two calls per record),
    with the key and value deserializers (None: keep the bytes) applied while the record is
    built: one tuple per record, not a raw one and then a decoded copy."""

    if key_de is None and value_de is None:
        def convert(m: Any) -> KafkaRecord:
            ts_type, ts = m.timestamp()
            headers = m.headers()
            return _new(KafkaRecord, (topic, partition, m.offset(), ts if ts_type else None, m.key(), m.value(),
                                      tuple(headers) if headers else None))
        return convert

    def convert_decoding(m: Any) -> KafkaRecord:
        ts_type, ts = m.timestamp()
        headers = m.headers()
        key, value = m.key(), m.value()
        return _new(KafkaRecord, (topic, partition, m.offset(), ts if ts_type else None,
                                  key if key_de is None else key_de(key),
                                  value if value_de is None else value_de(value),
                                  tuple(headers) if headers else None))

    return convert_decoding


class RecordColumns(NamedTuple):
    """A range's records as columns: what `DecodedRecords` builds them from,
    so that the client's messages are freed as soon as the range is read."""

    offsets: list[int]
    timestamps: list[int | None]
    keys: list[Any]
    values: list[Any]
    headers: list[Any] | None
    """None when no record has headers (the usual case)."""

    @staticmethod
    def concat(parts: list["RecordColumns"]) -> "RecordColumns":
        """The columns of consecutive chunks as one."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return RecordColumns([], [], [], [], None)
        joined = [list(chain.from_iterable(column)) for column in zip(*(p[:4] for p in parts))]
        if all(p.headers is None for p in parts):
            headers = None
        else:
            headers = list(chain.from_iterable([None] * len(p.offsets) if p.headers is None else p.headers
                                               for p in parts))
        return RecordColumns(*joined, headers)


def confluent_columns(raw: list[Any], key_de: Callable[[Any], Any] | None,
                      value_de: Callable[[Any], Any] | None) -> RecordColumns:
    """The columns of confluent-kafka messages, keys and values decoded (a
    deserializer's error propagates: the caller then finds the record and
    applies its policy)."""
    keys = [m.key() for m in raw] if key_de is None else [key_de(m.key()) for m in raw]
    values = [m.value() for m in raw] if value_de is None else [value_de(m.value()) for m in raw]
    return RecordColumns([m.offset() for m in raw], [t[1] if (t := m.timestamp())[0] else None for m in raw],
                         keys, values, _headers_column([m.headers() for m in raw]))


def kafka_python_columns(raw: list[Any], key_de: Callable[[Any], Any] | None,
                         value_de: Callable[[Any], Any] | None) -> RecordColumns:
    """`confluent_columns` for kafka-python `ConsumerRecord`s."""
    keys = [m.key for m in raw] if key_de is None else [key_de(m.key) for m in raw]
    values = [m.value for m in raw] if value_de is None else [value_de(m.value) for m in raw]
    return RecordColumns([m.offset for m in raw], [m.timestamp if m.timestamp >= 0 else None for m in raw],
                         keys, values, _headers_column([m.headers for m in raw]))


def _headers_column(headers: list[Any]) -> list[Any] | None:
    """Each record's headers as a tuple (None without), or None when no record has any."""
    return [tuple(h) if h else None for h in headers] if any(headers) else None


def kafka_python_converter(topic: str, partition: int, key_de: Callable[[Any], Any] | None = None,
                           value_de: Callable[[Any], Any] | None = None) -> Callable[[Any], KafkaRecord]:
    """A kafka-python `ConsumerRecord` of one partition as a record, decoded as
    `confluent_converter` decodes."""

    def convert(m: Any) -> KafkaRecord:
        return _new(KafkaRecord, (topic, partition, m.offset, m.timestamp if m.timestamp >= 0 else None,
                                  m.key if key_de is None else key_de(m.key),
                                  m.value if value_de is None else value_de(m.value),
                                  tuple(m.headers) if m.headers else None))

    return convert
