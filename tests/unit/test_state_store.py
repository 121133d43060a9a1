"""The store of keyed state partitions in a cluster worker (ingest.state_store),
in-process: a batch attempt becomes the base only when the next batch names
it, a failed attempt never does, and what a worker cannot produce it says."""

from __future__ import annotations

from ingest.state import _apply_changes, _Changes, _overlay
from ingest.state_store import MISSING, ReadTask, ResidentStore, ResidentTask, read_resident, run_resident
import ingest.state_store as state_store


def add_values(task):
    """A partition function: each record (k, v) adds v to k's state."""
    _i, state, records, _t = task
    changes = _Changes()
    for k, v in records:
        changes.sets[k] = changes.sets.get(k, state.get(k, 0)) + v
    return changes, sorted(changes.sets.items())


def run(token, base, new, records, seed=None, partition=0):
    return run_resident(add_values, _apply_changes, ResidentTask(token, partition, base, seed, records, 0, new))


def read(token, base, new=None, partition=0):
    return read_resident(_apply_changes, _overlay, ReadTask(token, partition, base, new))


def setup_function() -> None:
    state_store.STORE = ResidentStore()


def test_without_the_base_a_worker_answers_missing_and_a_seed_provides_it() -> None:
    assert run("a@x#1", None, "1000-a", [("k", 1)]) == MISSING
    assert run("a@x#1", None, "1000-a", [("k", 1)], seed={"k": 10})[1] == [("k", 11)]


def test_the_next_batch_naming_an_attempt_commits_it_and_a_failed_attempt_is_never_applied() -> None:
    run("a@x#1", None, "1000-a", [("k", 1)], seed={})
    run("a@x#1", "1000-a", "2000-a", [("k", 5)])           # attempt that failed on the driver
    assert run("a@x#1", "1000-a", "2000-b", [("k", 2)])[1] == [("k", 3)]  # its retry starts from batch 1000
    assert run("a@x#1", "2000-b", "3000-a", [("j", 1)])[1] == [("j", 1)]
    # Reading the pending attempt (for the commit's snapshot) does not commit it.
    assert sorted(read("a@x#1", "2000-b", "3000-a")) == [("j", 1), ("k", 3)]
    assert sorted(read("a@x#1", "2000-b")) == [("k", 3)]
    # Naming it as the base does, and the versions before it are gone.
    assert sorted(read("a@x#1", "3000-a")) == [("j", 1), ("k", 3)]
    assert read("a@x#1", "2000-b") == MISSING
    assert run("a@x#1", "2000-a", "4000-a", []) == MISSING  # the failed attempt is gone for good


def test_a_new_run_of_the_same_lineage_drops_the_old_runs_partitions_and_forget_drops_its_own() -> None:
    run("a@x#1", None, "1000-a", [("k", 1)], seed={}, partition=0)
    run("a@x#1", None, "1000-a", [("k", 1)], seed={}, partition=1)
    run("a@y#1", None, "1000-a", [("k", 1)], seed={})  # another checkpoint: another job
    run("a@x#2", None, "5000-a", [("k", 1)], seed={"k": 1}, partition=3)
    assert state_store.held_partitions(["a@x#1", "a@x#2", "a@y#1"]) == [("a@x#2", 3), ("a@y#1", 0)]
    assert state_store.forget("a@x#2") == 1
    assert state_store.held_partitions(["a@x#2"]) == []
