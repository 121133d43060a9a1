"""Specification of `portable_hash`: which bucket a key goes to in a shuffle.

Equal keys must land in the same bucket in every process and run (a replayed
batch is partitioned as the first time, and a key is one group in
`reduce_by_key`), so the hash is computed from the key's value, never from its
`repr` or from Python's per-process `hash`. Keys of types whose equality
ingest cannot reproduce are refused with an error saying what to do.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import pytest

from ingest import ConfigError, Dataset, IngestError
from ingest.dataset import portable_hash

UTC = dt.timezone.utc
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


class Code(str, enum.Enum):
    OK = "ok"


class Point(NamedTuple):
    x: int
    y: int


@dataclass(frozen=True)
class Sensor:
    site: str
    number: int
    # Not part of equality; its default repr holds an address that differs per object.
    handle: object = field(default_factory=object, compare=False)


class ById:
    """A user key equal by value whose repr contains the object's address."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ById) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


# Keys whose hash must not change with the process or its PYTHONHASHSEED. The
# frozensets are large enough that their iteration order differs between seeds.
SEEDED_KEYS_SOURCE = """[
    "", "a", "ünïcödé", 0, 1, -1, 2**40, 3.0, 2.5, float("inf"), None, True, b"raw", ("a", 1),
    frozenset("abcdefghijklmnop"), frozenset({("k", 1), ("k", 2), "x", b"y", 3.5}),
    (frozenset({"p", "q", "r", "s", "t"}), "tail"),
    Decimal("1.25"), Decimal("10.000"), Decimal("0.1"),
    dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 12, 30, 1, 5), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.timedelta(days=1, microseconds=3),
]"""


def test_portable_hash_of_every_supported_type_is_the_same_under_any_hash_seed():
    script = (
        "import datetime as dt, json; from decimal import Decimal; from ingest.dataset import portable_hash; "
        f"keys = {SEEDED_KEYS_SOURCE}; print(json.dumps([portable_hash(k) for k in keys]))"
    )
    results = []
    for seed in ("0", "1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout))
    assert all(r == results[0] for r in results)
    assert all(isinstance(h, int) and h >= 0 for h in results[0])


def test_frozenset_keys_land_in_the_same_partition_under_any_hash_seed():
    script = (
        "import json; from ingest import Dataset; "
        "keys = [frozenset(f'{w}{i}' for i in range(12)) for w in 'abcdefgh']; "
        "parts = Dataset.from_records([(k, 1) for k in keys], 2).partition_by(4).glom(); "
        "print(json.dumps([sorted(sorted(k) for k, _ in p) for p in parts]))"
    )
    layouts = []
    for seed in ("0", "1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        layouts.append(json.loads(out.stdout))
    assert all(layout == layouts[0] for layout in layouts)


@pytest.mark.parametrize("a, b", [
    (3, 3.0), (True, 1), (False, 0.0), (-0.0, 0),
    (Decimal("2"), 2), (Decimal("2.50"), 2.5), (Decimal("1.10"), Decimal("1.1")), (Decimal("Infinity"), float("inf")),
    (Level.LOW, 1), (Code.OK, "ok"), (Point(1, 2), (1, 2)),
    (frozenset({1, 2}), frozenset({2.0, 1})),
    (dt.datetime(2024, 1, 1, 12, tzinfo=UTC), dt.datetime(2024, 1, 1, 14, tzinfo=PLUS_TWO)),
    (dt.timedelta(seconds=60), dt.timedelta(minutes=1)),
    (Sensor("s", 1), Sensor("s", 1)),
])
def test_keys_that_compare_equal_hash_equally(a, b):
    assert a == b
    assert portable_hash(a) == portable_hash(b)


def test_enum_members_hash_by_their_class_and_name():
    assert portable_hash(Colour.RED) == portable_hash(Colour.RED)
    assert portable_hash(Colour.RED) != portable_hash(Colour.BLUE)


def test_a_dataclass_key_equal_by_value_is_one_group_in_reduce_by_key():
    pairs = [(Sensor("north", 7), 1) for _ in range(6)]  # six objects, six different reprs
    counts = Dataset.from_records(pairs, 3).reduce_by_key(lambda a, b: a + b, 3).collect()
    assert counts == [(Sensor("north", 7), 6)]


def test_a_key_of_a_user_class_is_refused_with_a_message_saying_what_to_do():
    pairs = [(ById("k"), 1) for _ in range(6)]
    with pytest.raises(ConfigError) as caught:
        Dataset.from_records(pairs, 3).reduce_by_key(lambda a, b: a + b, 3).collect()
    message = str(caught.value)
    assert "ById" in message
    assert "tuple" in message and "str" in message
    assert isinstance(caught.value, IngestError)


@pytest.mark.parametrize("key, named", [
    (("ok", ById("nested")), "ById"),
    (frozenset({ById("in-set")}), "ById"),
    (1 + 2j, "complex"),
    (dt.time(12, 0), "time"),
])
def test_keys_holding_an_unsupported_type_are_refused_naming_that_type(key, named):
    with pytest.raises(ConfigError, match=f"key of type [\\w.]*{named} "):
        portable_hash(key)


def test_a_subclass_that_changes_equality_is_refused():
    class CaseInsensitive(str):
        def __eq__(self, other: object) -> bool:
            return isinstance(other, str) and other.lower() == self.lower()

        def __hash__(self) -> int:
            return hash(self.lower())

    with pytest.raises(ConfigError, match="CaseInsensitive"):
        portable_hash(CaseInsensitive("Key"))


def test_a_dataclass_compared_by_identity_is_refused():
    @dataclass(eq=False)
    class Handle:
        n: int

    with pytest.raises(ConfigError, match="Handle"):
        portable_hash(Handle(1))


def test_hashes_of_keys_that_were_supported_before_are_unchanged():
    # A checkpointed job replays its batches after an upgrade: same buckets as before.
    assert [portable_hash(k) for k in (None, True, 5, -1, "a", b"a", 3.0, 2.5, ("a", 1))] == [
        0, 1, 5, 0x7FFFFFFFFFFFFFFF, 3904355907, 3904355907, 3, 2233083363, 159160772619840]
