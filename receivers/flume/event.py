"""What a Flume stream yields: one Flume event, its headers and its body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class FlumeEvent:
    """One event as the agent sent it. `body` is bytes, or what the stream's
    `value_deserializer` made of them; `headers` are Flume's string headers
    (e.g. "timestamp" and "host" from interceptors)."""

    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = b""
