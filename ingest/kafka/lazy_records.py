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


class DecodedRecords(Sequence[KafkaRecord]):
    """The records of one offset range whose keys and values were decoded when
    the range was read (so a record that cannot be decoded is found then and
    goes through the stream's policy), built as they are iterated.

    Built at once, a batch's records all lived until its first operation had
    read them: the garbage collector moved each one through its generations
    and scanned the batch's lists again and again (a quarter of a stateful
    job's time). Built as iterated, each is freed when the operation is done
    with it. Pickling (to return from a worker process) converts to a list."""

    __slots__ = ("_raw", "_keys", "_values", "_build")

    def __init__(self, raw: list[Any], keys: list[Any], values: list[Any],
                 build: Callable[[Any, Any, Any], KafkaRecord]) -> None:
        self._raw, self._keys, self._values, self._build = raw, keys, values, build

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(map(self._build, self._raw[index], self._keys[index], self._values[index]))
        return self._build(self._raw[index], self._keys[index], self._values[index])

    def __iter__(self) -> Iterator[KafkaRecord]:
        return map(self._build, self._raw, self._keys, self._values)

    def __reduce__(self) -> Any:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"DecodedRecords({len(self._raw)} records)"
