"""Avro IPC messages (handshake, call metadata, requests and responses), encoded
with fastavro; the Netty framing around them is in `framing`.

    request  := [HandshakeRequest] meta:map<bytes> name:string params
    response := [HandshakeResponse] meta:map<bytes> isError:boolean (response | error)

The handshake is present only on a connection's first call (until the server
answered BOTH or CLIENT): Netty connections are stateful. Every schema here is a
record, even where the wire carries a bare value (a record of one field is
encoded exactly like that field), so that fastavro resolves a protocol's named
types through one registry.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import fastavro

from ingest.errors import ConfigError

_IPC = "org.apache.avro.ipc"
_MD5 = {"type": "fixed", "name": "MD5", "namespace": _IPC, "size": 16}
_META = {"type": "map", "values": "bytes"}


def _record(name: str, fields: list[dict[str, Any]], namespace: str, named: dict[str, Any]) -> Any:
    return fastavro.parse_schema({"type": "record", "name": name, "namespace": namespace, "fields": fields},
                                 named_schemas=named)


_named: dict[str, Any] = {}
HANDSHAKE_REQUEST = _record("HandshakeRequest", [
    {"name": "clientHash", "type": _MD5},
    {"name": "clientProtocol", "type": ["null", "string"]},
    {"name": "serverHash", "type": "MD5"},
    {"name": "meta", "type": ["null", _META]},
], _IPC, _named)
HANDSHAKE_RESPONSE = _record("HandshakeResponse", [
    {"name": "match", "type": {"type": "enum", "name": "HandshakeMatch", "symbols": ["BOTH", "CLIENT", "NONE"]}},
    {"name": "serverProtocol", "type": ["null", "string"]},
    {"name": "serverHash", "type": ["null", "MD5"]},
    {"name": "meta", "type": ["null", _META]},
], _IPC, _named)
CALL_HEAD = _record("CallHead", [{"name": "meta", "type": _META}, {"name": "name", "type": "string"}], _IPC, _named)
RESPONSE_HEAD = _record("ResponseHead", [{"name": "meta", "type": _META}, {"name": "error", "type": "boolean"}],
                        _IPC, _named)


def read(fo: io.BytesIO, schema: Any) -> Any:
    return fastavro.schemaless_reader(fo, schema, None)


def write(out: io.BytesIO, schema: Any, datum: Any) -> None:
    fastavro.schemaless_writer(out, schema, datum)


@dataclass(frozen=True)
class Message:
    """One message of a protocol: its request record, and its response and error
    schemas each wrapped in a record of one field "v"."""

    name: str
    request: Any
    response: Any
    errors: Any


class AvroProtocol:
    """An Avro protocol (.avpr JSON text) ready to encode and decode calls.

    `md5` is the MD5 of the text as given. Java computes its hash over its own
    rendering of the protocol, which differs from any Python text, so a server
    also lists the hashes its Java clients send (`known_hashes`)."""

    def __init__(self, text: str, known_hashes: tuple[bytes, ...] = ()) -> None:
        try:
            spec = json.loads(text)
            self.name: str = spec["protocol"]
            self.namespace: str = spec.get("namespace", "")
            named: dict[str, Any] = {}
            for t in spec.get("types", []):
                fastavro.parse_schema({"namespace": self.namespace, **t}, named_schemas=named)
            self.messages = {}
            for name, m in spec.get("messages", {}).items():
                ns = self.namespace
                errors = ["string", *m.get("errors", [])]
                self.messages[name] = Message(
                    name,
                    _record(f"{name}Request", m["request"], ns, named),
                    _record(f"{name}Response", [{"name": "v", "type": m["response"]}], ns, named),
                    _record(f"{name}Errors", [{"name": "v", "type": errors}], ns, named),
                )
        except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException) as exc:
            raise ConfigError(f"invalid Avro protocol: {exc}") from None
        self.text = text
        self.md5 = hashlib.md5(text.encode()).digest()
        self.known_hashes = frozenset((self.md5, *known_hashes))

    def same_as(self, text: str) -> bool:
        """Whether another rendering of a protocol (a client's) is this one: same
        full name and the same messages."""
        try:
            spec = json.loads(text)
        except ValueError:
            return False
        return (isinstance(spec, dict) and spec.get("protocol") == self.name
                and spec.get("namespace", "") == self.namespace
                and set(spec.get("messages", {})) == set(self.messages))


def encode_response(message: Message, value: Any) -> bytes:
    out = io.BytesIO()
    write(out, RESPONSE_HEAD, {"meta": {}, "error": False})
    write(out, message.response, {"v": value})
    return out.getvalue()


def encode_error(text: str) -> bytes:
    """A system error (the "string" branch every message's error union has)."""
    out = io.BytesIO()
    write(out, RESPONSE_HEAD, {"meta": {}, "error": True})
    write(out, _SYSTEM_ERROR, {"v": text})
    return out.getvalue()


_SYSTEM_ERROR = _record("SystemError", [{"name": "v", "type": ["string"]}], _IPC, _named)
