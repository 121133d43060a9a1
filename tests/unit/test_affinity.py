"""A keyed task's preferred worker: stable, independent of order, and only a
dead worker's keys move."""

from __future__ import annotations

from collections import Counter

from ingest.affinity import preferred_worker

WORKERS = [f"tcp://10.0.0.{i}:4000" for i in range(1, 5)]
KEYS = [f"events\x00{p}" for p in range(64)]


def test_the_choice_depends_only_on_the_key_and_the_set_of_workers() -> None:
    first = {k: preferred_worker(k, WORKERS) for k in KEYS}
    assert first == {k: preferred_worker(k, list(reversed(WORKERS))) for k in KEYS}
    assert first["events\x000"] == preferred_worker("events\x000", WORKERS)  # no state, no seed


def test_keys_spread_over_every_worker() -> None:
    counts = Counter(preferred_worker(k, WORKERS) for k in KEYS)
    assert set(counts) == set(WORKERS)
    assert min(counts.values()) >= 8  # 16 each on average


def test_when_a_worker_dies_only_its_keys_move() -> None:
    before = {k: preferred_worker(k, WORKERS) for k in KEYS}
    dead = WORKERS[1]
    after = {k: preferred_worker(k, [w for w in WORKERS if w != dead]) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == dead}
    assert dead not in after.values()


def test_no_worker_no_preference() -> None:
    assert preferred_worker("events\x000", []) is None
