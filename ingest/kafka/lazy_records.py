"""The records of a direct stream: `KafkaRecord`s built lazily from client messages."""

from __future__ import annotations

from functools import partial
from itertools import repeat
from typing import Any, Callable, Iterator, Sequence

from ingest.kafka.records import KafkaRecord, RecordColumns

_record = partial(tuple.__new__, KafkaRecord)  # a record from a tuple of its fields


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
    """The records of one offset range, kept as columns (`RecordColumns`)
    made when the range was read, keys and values decoded (so a record that
    cannot be decoded is found then and goes through the stream's policy),
    and built as they are iterated.

    Built at once, a batch's records all lived until its first operation had
    read them: the garbage collector moved each one through its generations
    and scanned the batch's lists again and again (a quarter of a stateful
    job's time). Built as iterated, each is freed when the operation is done
    with it; and the client's messages, which the collector tracks, are freed
    once the columns are made. Pickling (to return from a worker process)
    converts to a list."""

    __slots__ = ("_topic", "_partition", "_columns")

    def __init__(self, topic: str, partition: int, columns: RecordColumns) -> None:
        self._topic, self._partition, self._columns = topic, partition, columns

    def __len__(self) -> int:
        return len(self._columns.offsets)

    def __getitem__(self, index: Any) -> Any:
        c = self._columns
        if isinstance(index, slice):
            return list(self._build(c.offsets[index], c.timestamps[index], c.keys[index], c.values[index],
                                    None if c.headers is None else c.headers[index]))
        return _record((self._topic, self._partition, c.offsets[index], c.timestamps[index], c.keys[index],
                        c.values[index], None if c.headers is None else c.headers[index]))

    def __iter__(self) -> Iterator[KafkaRecord]:
        return self._build(*self._columns)

    def _build(self, offsets: list[int], timestamps: list[Any], keys: list[Any], values: list[Any],
               headers: list[Any] | None) -> Iterator[KafkaRecord]:
        # One C-level pass (map, zip): no Python call per record.
        n = len(offsets)
        return map(_record, zip(repeat(self._topic, n), repeat(self._partition, n), offsets, timestamps, keys,
                                values, repeat(None, n) if headers is None else headers))

    def __reduce__(self) -> Any:
        return (list, (list(self),))

    def __repr__(self) -> str:
        return f"DecodedRecords({len(self)} records)"
