"""Record types shared by several sources (plain data, no behaviour)."""

from __future__ import annotations

from typing import Any, NamedTuple


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
