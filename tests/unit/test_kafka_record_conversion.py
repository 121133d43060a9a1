"""Building `KafkaRecord`s from client messages, with deserialization fused into
the build (one tuple per record): the decoded records equal the raw records with
key and value decoded, for both clients, and an unset deserializer keeps bytes.
A direct stream decodes keys and values when it reads a range and builds the
records as they are iterated (`DecodedRecords`): the same records."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace

import pytest

from ingest.kafka.deserializers import deserializer_for
from ingest.kafka.lazy_records import DecodedRecords
from ingest.kafka.records import (KafkaRecord, RecordColumns, confluent_columns, confluent_converter,
                                  kafka_python_columns, kafka_python_converter)


class ConfluentMessage:
    """The accessor methods of a confluent-kafka Message, for a unit test."""

    def __init__(self, offset: int, key: bytes | None, value: bytes | None, headers=None) -> None:
        self._offset, self._key, self._value, self._headers = offset, key, value, headers

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._offset)

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self):
        return self._headers


def kafka_python_message(offset: int, key: bytes | None, value: bytes | None, headers=None):
    return SimpleNamespace(offset=offset, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                           headers=headers or [])


@pytest.mark.parametrize("make, converter", [(ConfluentMessage, confluent_converter),
                                             (kafka_python_message, kafka_python_converter)])
def test_decoding_while_building_gives_the_raw_record_with_key_and_value_decoded(make, converter) -> None:
    messages = [make(7, b"k1", b'{"n": 1}', [("h", b"v")]), make(8, None, None)]
    raw = [converter("t", 2)(m) for m in messages]
    decoded = [converter("t", 2, deserializer_for("utf-8", "key"), deserializer_for("json", "value"))(m)
               for m in messages]
    assert decoded == [raw[0]._replace(key="k1", value={"n": 1}), raw[1]]
    assert all(type(r) is KafkaRecord for r in decoded)
    assert decoded[0].headers == (("h", b"v"),) and decoded[0].timestamp == 1_700_000_000_007


@pytest.mark.parametrize("make, converter", [(ConfluentMessage, confluent_converter),
                                             (kafka_python_message, kafka_python_converter)])
def test_only_the_value_is_decoded_when_the_key_deserializer_is_unset(make, converter) -> None:
    record = converter("t", 0, None, deserializer_for("utf-8", "value"))(make(1, b"\xff", b"text"))
    assert (record.key, record.value) == (b"\xff", "text")


def test_a_value_that_cannot_be_decoded_raises_from_the_converter() -> None:
    convert = confluent_converter("t", 0, None, deserializer_for("json", "value"))
    with pytest.raises(json.JSONDecodeError):
        convert(ConfluentMessage(3, None, b"not json"))


@pytest.mark.parametrize("make, converter, columns", [(ConfluentMessage, confluent_converter, confluent_columns),
                                                      (kafka_python_message, kafka_python_converter,
                                                       kafka_python_columns)])
@pytest.mark.parametrize("headers", [[("h", b"v")], None])  # some records with headers / none (no column)
def test_records_decoded_when_read_and_built_when_iterated_equal_the_fused_build(make, converter, columns,
                                                                                   headers) -> None:
    messages = [make(7, b"k1", b'{"n": 1}', headers), make(8, None, None), make(9, b"k3", b"[2]")]
    key_de, value_de = deserializer_for("utf-8", "key"), deserializer_for("json", "value")
    fused = [converter("t", 2, key_de, value_de)(m) for m in messages]
    records = DecodedRecords("t", 2, columns(messages, key_de, value_de))
    assert list(records) == fused and list(records) == fused  # each iteration builds the same records
    assert all(type(r) is KafkaRecord for r in records)
    assert len(records) == 3 and records[1] == fused[1] and records[-1] == fused[2] and records[1:] == fused[1:]
    assert type(records[0]) is KafkaRecord and records[0].headers == (None if headers is None else (("h", b"v"),))
    assert records[::2] == fused[::2] and records[5:] == []
    with pytest.raises(IndexError):
        records[3]  # noqa: B018 - a list's error
    assert pickle.loads(pickle.dumps(records)) == fused  # a worker process returns a plain list


def test_a_record_without_a_timestamp_has_none() -> None:
    class Untimed(ConfluentMessage):
        def timestamp(self) -> tuple[int, int]:
            return (0, -1)  # TIMESTAMP_NOT_AVAILABLE

    records = DecodedRecords("t", 0, confluent_columns([Untimed(1, b"k", b"v")], None, None))
    assert list(records) == [confluent_converter("t", 0)(Untimed(1, b"k", b"v"))]
    assert records[0].timestamp is None


def test_columns_propagate_a_deserializer_error_so_the_stream_applies_its_policy() -> None:
    with pytest.raises(ValueError):
        confluent_columns([ConfluentMessage(1, b"k", b"{not json")], None, deserializer_for("json", "value"))


def test_columns_of_chunks_concatenate_in_order_with_headers_where_any_chunk_has_them() -> None:
    chunks = [[ConfluentMessage(1, b"a", b"1")], [ConfluentMessage(2, b"b", b"2", [("h", b"v")])],
              [ConfluentMessage(3, None, b"3")]]
    whole = [m for chunk in chunks for m in chunk]
    joined = RecordColumns.concat([confluent_columns(c, None, None) for c in chunks])
    assert joined == confluent_columns(whole, None, None)
    assert list(DecodedRecords("t", 0, joined)) == [confluent_converter("t", 0)(m) for m in whole]
    plain = RecordColumns.concat([confluent_columns(c, None, None) for c in (chunks[0], chunks[2])])
    assert plain.headers is None and plain.offsets == [1, 3]
    assert RecordColumns.concat([]) == RecordColumns([], [], [], [], None)
