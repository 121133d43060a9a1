"""Deserializers for keys and values, and what happens to a record that fails.

A deserializer is a function of the raw bytes (or None). Built in: "bytes"
(no change, the default), "utf-8", "json", and `avro(schema)` (Avro binary
with a given writer schema, optionally in Confluent's framing with a magic
byte and schema id). A record that fails to decode goes through the stream's
`on_decode_error` policy: "fail" (stop with an error naming topic, partition
and offset), "skip" (drop it and count it), or `DeadLetterTopic(topic)` (send
the raw record with provenance headers to that topic, then drop it).
"""

from __future__ import annotations

import io
import json
import json.scanner
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ingest.errors import ConfigError, SourceError
from ingest.install_hint import install_hint

Deserializer = Callable[[Any], Any]


class DeserializationError(SourceError):
    def __init__(self, message: str, topic: str, partition: int, offset: int) -> None:
        super().__init__(message)
        self.topic, self.partition, self.offset = topic, partition, offset


def _utf8(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8")


# json.loads(bytes) goes through four Python-level calls per value (encoding
# detection, decode, raw_decode, ...): the top of a JSON job's profile. Most
# values are UTF-8 JSON without surrounding whitespace, which the C scanner
# reads in one call; anything else (a BOM, UTF-16, whitespace, bad JSON) goes
# to json.loads, so results and errors are json.loads's.
_scan = json.scanner.make_scanner(json.JSONDecoder())


def _json(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
        value, end = _scan(text, 0)
        if end == len(text):
            return value
    except (AttributeError, UnicodeDecodeError, StopIteration, ValueError):
        pass
    return json.loads(data)


class avro:  # noqa: N801 - reads as a deserializer name: avro(schema)
    """Avro binary records with the given writer schema (dict, JSON text or
    a parsed fastavro schema). `confluent_framing=True` expects Confluent's
    5-byte prefix (magic byte 0, 4-byte schema id) and skips it."""

    def __init__(self, schema: Any, confluent_framing: bool = False) -> None:
        try:
            import fastavro
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(f"avro() needs fastavro: {install_hint('kafka')}") from exc
        if isinstance(schema, str):
            schema = json.loads(schema)
        try:
            self._schema = fastavro.parse_schema(schema)
        except Exception as exc:  # noqa: BLE001 - fastavro raises several types
            raise ConfigError(f"invalid Avro schema: {exc}") from exc
        self._reader = fastavro.schemaless_reader
        self._framed = confluent_framing

    def __call__(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if self._framed:
            if len(data) < 5 or data[0] != 0:
                raise ValueError("not in Confluent framing (no magic byte 0 and schema id)")
            data = data[5:]
        return self._reader(io.BytesIO(data), self._schema)

    def __reduce__(self) -> Any:  # to worker processes: rebuild from the parsed schema
        return (avro, (self._schema, self._framed))


_BUILTIN: dict[str, Deserializer | None] = {
    "bytes": None, "utf-8": _utf8, "utf8": _utf8, "str": _utf8, "json": _json,
}


def deserializer_for(spec: Any, what: str) -> Deserializer | None:
    """None means: keep the bytes as they are."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in _BUILTIN:
            raise ConfigError(f"unknown {what} {spec!r}: use one of {sorted(_BUILTIN)}, avro(schema) or a function")
        return _BUILTIN[spec]
    if callable(spec):
        return spec
    raise ConfigError(f"{what} must be a name ({sorted(_BUILTIN)}), avro(schema) or a function, got {spec!r}")


@dataclass(frozen=True)
class DeadLetterTopic:
    """Send records that fail to decode to `topic` with provenance headers
    (`ingest.source.topic`, `.partition`, `.offset`, `ingest.error`). The
    producer uses the stream's bootstrap servers and security settings (SASL,
    TLS) unless `producer_config` says otherwise. Delivery is at-least-once and finishes before the batch commits."""

    topic: str
    producer_config: Mapping[str, Any] | None = None


def check_policy(policy: Any) -> Any:
    if policy in ("fail", "skip") or isinstance(policy, DeadLetterTopic):
        return policy
    raise ConfigError(f"on_decode_error must be 'fail', 'skip' or DeadLetterTopic(topic), got {policy!r}")
