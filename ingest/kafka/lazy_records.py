"""The records of a direct stream: `KafkaRecord`s built lazily from client messages."""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

from ingest.kafka.records import KafkaRecord


class LazyRecords(Sequence[KafkaRecord]):
    """The records of one offset range, built from the client's messages as
    they are iterated. Counting needs no conversion; pickling (to return from
    a worker process) converts to a plain list."""

    __slots__ = ("_raw", "_convert")

    def __init__(self, raw: list[Any], convert: Callable[[Any], KafkaRecord]) -> None:
        self._raw = raw
        self._convert = convert

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self._convert(m) for m in self._raw[index]]
        return self._convert(self._raw[index])

    def __iter__(self) -> Iterator[KafkaRecord]:
        return map(self._convert, self._raw)

    def __reduce__(self) -> Any:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"LazyRecords({len(self._raw)} records)"
