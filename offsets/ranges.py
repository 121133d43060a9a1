"""`OffsetRange`: one Kafka partition's slice of a batch, as plain data.

`from_offset` is inclusive and `until_offset` exclusive, as in Spark. Ranges
travel through the intent log as JSON lists `[topic, partition, from, until]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable


@dataclass(frozen=True, order=True)
class OffsetRange:
    topic: str
    partition: int
    from_offset: int
    until_offset: int

    def __post_init__(self) -> None:
        if self.partition < 0:
            raise ValueError(f"OffsetRange partition must be >= 0, got {self.partition}")
        if self.from_offset < 0 or self.until_offset < self.from_offset:
            raise ValueError(
                f"OffsetRange for {self.topic}[{self.partition}] needs 0 <= from <= until, "
                f"got from={self.from_offset} until={self.until_offset}"
            )

    @property
    def count(self) -> int:
        """Upper bound on the records in the range (compacted topics and
        transaction markers leave gaps, so fewer may be read)."""
        return self.until_offset - self.from_offset

    def to_json(self) -> list[Any]:
        return [self.topic, self.partition, self.from_offset, self.until_offset]

    @classmethod
    def from_json(cls, value: Any) -> "OffsetRange":
        if isinstance(value, dict):
            return cls(value["topic"], int(value["partition"]), int(value["from_offset"]), int(value["until_offset"]))
        topic, partition, from_offset, until_offset = value
        return cls(str(topic), int(partition), int(from_offset), int(until_offset))

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] {self.from_offset}..{self.until_offset}"


def ranges_to_json(ranges: Iterable[OffsetRange]) -> list[list[Any]]:
    return [r.to_json() for r in ranges]


def ranges_from_json(values: Iterable[Any]) -> list[OffsetRange]:
    return [OffsetRange.from_json(v) for v in values]
