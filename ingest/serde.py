"""Serializers for user state in checkpoints. Never pickle: a checkpoint on
shared storage must not be a way to run code.

`JsonSerde` (the default) writes JSON and keeps Python's built-in shapes that
JSON alone would lose: tuples stay tuples (pair keys are tuples) and dicts
with non-string keys stay dicts. It handles None, bool, int, float, str,
lists, tuples and dicts of those. Pass any object with `dumps(obj) -> bytes`
and `loads(bytes) -> obj` to use another format.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

_TUPLE = "__tuple__"
_DICT = "__dict__"


class Serde(Protocol):
    def dumps(self, obj: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


_SCALARS = frozenset({str, int, float, bool, type(None)})


def encode(obj: Any) -> Any:
    """JSON-ready form of `obj` with tuples and non-string keys marked."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, tuple):
        return {_TUPLE: [encode(x) for x in obj]}
    if isinstance(obj, list):
        if _SCALARS.issuperset(map(type, obj)):  # the common large case: nothing to mark (checked in C)
            return obj
        return [encode(x) for x in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _TUPLE not in obj and _DICT not in obj:
            return {k: encode(v) for k, v in obj.items()}
        return {_DICT: [[encode(k), encode(v)] for k, v in obj.items()]}
    raise TypeError(f"JsonSerde cannot store a {type(obj).__name__} ({obj!r:.60}); convert it to "
                    "JSON-like values or pass serde= with a serializer for it")


def decode_hook(d: dict[str, Any]) -> Any:
    """`json.loads` object hook that undoes `encode`."""
    if len(d) == 1:
        if _TUPLE in d:
            return tuple(d[_TUPLE])
        if _DICT in d:
            return {(tuple(k) if isinstance(k, list) else k): v for k, v in d[_DICT]}
    return d


class JsonSerde:
    name = "json"

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(encode(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data, object_hook=decode_hook)
