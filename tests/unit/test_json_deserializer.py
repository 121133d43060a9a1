"""Specification of the "json" deserializer: the same values, and the same
errors, as `json.loads` on the record's bytes, whatever the encoding or spacing
(it reads plain UTF-8 JSON with the C scanner in one call, everything else with
`json.loads`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.kafka.deserializers import deserializer_for

decode = deserializer_for("json", "value_deserializer")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12)


@given(json_values)
def test_any_json_value_in_utf8_reads_as_json_loads_reads_it(value):
    data = json.dumps(value, ensure_ascii=False).encode("utf-8")
    assert decode(data) == json.loads(data)


@pytest.mark.parametrize("data", [
    b' {"a": 1} \n',  # surrounding whitespace
    b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 byte order mark
    '{"a": "\u00e9"}'.encode("utf-16"),  # UTF-16, which json.loads detects
    '{"a": 1}'.encode("utf-32-le"),
    b"NaN", b"-Infinity", b'"x"', b"null",
])
def test_unusual_but_valid_json_reads_as_json_loads_reads_it(data: bytes) -> None:
    expected = json.loads(data)
    got = decode(data)
    assert got == expected or (got != got and expected != expected)  # NaN equals nothing


@pytest.mark.parametrize("data", [b'{"a": 1', b"", b"{} x", b"\xff", b"[1,]"])
def test_invalid_json_fails_with_json_loads_error(data: bytes) -> None:
    with pytest.raises(ValueError) as expected:
        json.loads(data)
    with pytest.raises(type(expected.value)) as got:
        decode(data)
    assert str(got.value) == str(expected.value)


def test_a_missing_value_is_none() -> None:
    assert decode(None) is None
