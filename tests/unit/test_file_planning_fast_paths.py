"""The fast paths of file-stream planning give what the plain rules give.

Planning a large directory touches every file several times, so the planner
takes files with C-level dict calls, slices are built without the frozen
dataclass's `__init__`, and the hidden-name filter is written inline. Each is
checked here against a plain reference: the rule as written in the module
docstrings, one file at a time."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from direct.files.planner import FilePlanner
from direct.files.selection import FileSelection, is_hidden_or_in_progress
from direct.files.splits import slices_for, slices_of
from ingest.storage import FileEntry
from offsets import FileList, FileSlice, position_from_data, position_to_data
from offsets.positions import whole_file_slices


class ReferencePlanner:
    """`FilePlanner.take` as the rule says, one file at a time."""

    def __init__(self, remember_ms: int, now_ms: int) -> None:
        self.remember_ms, self.now_ms = remember_ms, now_ms
        self.watermark_ms: int | None = None
        self.taken: dict[str, int] = {}
        self.clock_reads = 0

    def take(self, files: list[tuple[str, int]]) -> None:
        newest, now = self.watermark_ms, None
        for path, mtime in files:
            self.taken.setdefault(path, mtime)  # a path taken before keeps its first time
            if newest is None or mtime > newest:
                if now is None:
                    now, self.clock_reads = self.now_ms, self.clock_reads + 1
                newest = min(mtime, now) if newest is None else max(newest, min(mtime, now))
        if newest != self.watermark_ms:
            self.watermark_ms = newest
            self.taken = {p: m for p, m in self.taken.items() if m >= newest - self.remember_ms}


batches = st.lists(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 200)), max_size=6), max_size=6)


@settings(max_examples=300, deadline=None)
@given(batches=batches, remember=st.integers(1, 100), now=st.integers(0, 250))
def test_take_moves_the_watermark_and_forgets_files_as_the_one_at_a_time_rule(batches, remember, now):
    reads = []
    planner = FilePlanner(remember, wall_clock_ms=lambda: reads.append(now) or now)
    reference = ReferencePlanner(remember, now)
    for files in batches:
        planner.take(files)
        reference.take(files)
        assert planner.watermark_ms == reference.watermark_ms
        assert dict(planner.state().taken) == reference.taken
    assert len(reads) == reference.clock_reads  # the driver's clock is read no more often


def reference_new_files(taken: dict[str, int], threshold: int | None, listing: list[FileEntry],
                        max_files: int | None) -> tuple[list[FileEntry], int, int]:
    """(chosen, too old, left for later) as the planner's rule says, one file at a time."""
    fresh, too_old = [], 0
    for e in listing:
        if e.path in taken:
            continue
        if threshold is not None and e.mtime_ms < threshold:
            too_old += 1
            continue
        fresh.append(e)
    fresh.sort(key=lambda e: (e.mtime_ms, e.path))
    chosen = fresh if max_files is None else fresh[:max_files]
    return chosen, too_old, len(fresh) - len(chosen)


listings = st.lists(st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 200)), max_size=8,
                    unique_by=lambda pair: pair[0])


@settings(max_examples=300, deadline=None)
@given(taken=listings, listing=listings, remember=st.integers(1, 100), max_files=st.none() | st.integers(1, 4))
def test_new_files_chooses_oldest_first_then_by_path_as_the_one_at_a_time_rule(taken, listing, remember,
                                                                                max_files):
    planner = FilePlanner(remember, wall_clock_ms=lambda: 10_000)
    planner.take(taken)
    entries = [FileEntry(path, 1, mtime) for path, mtime in listing]  # in any order, not only by path
    chosen = planner.new_files(entries, max_files)
    expected = reference_new_files(dict(planner.state().taken), planner.threshold_ms, entries, max_files)
    assert (chosen, planner.too_old, planner.backlog) == expected


def test_take_files_is_take_of_their_paths_and_times():
    by_pairs, by_files = (FilePlanner(10, wall_clock_ms=lambda: 1000) for _ in range(2))
    files = [FileSlice("a", 1, 5), FileSlice("a", 1, 5, 0, 1), FileEntry("b", 2, 9)]
    by_pairs.take([(f.path, f.mtime_ms) for f in files])
    by_files.take_files(files)
    assert by_files.state() == by_pairs.state()


def test_take_accepts_any_iterable_of_pairs():
    planner = FilePlanner(10, wall_clock_ms=lambda: 1000)
    planner.take(pair for pair in [("a", 5), ("b", 7)])
    assert planner.watermark_ms == 7 and planner.state().taken == (("a", 5), ("b", 7))


def test_whole_file_slices_are_the_slices_the_constructor_makes():
    made = whole_file_slices([("a/x.txt", 10, 5), ("b", 0, 7)])
    assert made == (FileSlice("a/x.txt", 10, 5), FileSlice("b", 0, 7))
    assert [hash(s) for s in made] == [hash(FileSlice("a/x.txt", 10, 5)), hash(FileSlice("b", 0, 7))]
    assert repr(made[0]) == repr(FileSlice("a/x.txt", 10, 5))
    assert all(type(s) is FileSlice for s in made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].size = 1  # type: ignore[misc]


def test_a_plan_of_whole_file_slices_round_trips_through_a_checkpoint_record():
    plan = FileList(whole_file_slices([("a", 10, 5), ("b", 20, 6)]))
    assert position_from_data(position_to_data(plan)) == plan == FileList((FileSlice("a", 10, 5),
                                                                             FileSlice("b", 20, 6)))


@pytest.mark.parametrize("align", [None, 1, 7])
def test_slices_for_is_slices_of_every_entry_in_order(align):
    entries = [FileEntry("small", 50, 1), FileEntry("big", 700, 2), FileEntry("edge", 199, 3),
               FileEntry("cut", 200, 4)]
    expected = tuple(s for e in entries for s in slices_of(e, 100, align))
    assert slices_for(entries, 100, align) == expected


paths = st.lists(st.text(alphabet="ab._/-~COPYINGtmp", min_size=1, max_size=12), max_size=30)


@settings(max_examples=300, deadline=None)
@given(paths=paths)
def test_the_inline_hidden_filter_keeps_exactly_the_paths_the_rule_accepts(paths):
    entries = [FileEntry(p, 1, 1) for p in paths]
    assert FileSelection().filter(entries) == [e for e in entries if not is_hidden_or_in_progress(e.path)]
    assert FileSelection("*a*").filter(entries) == [e for e in entries if FileSelection("*a*").accepts(e.path)]


def test_a_file_entry_is_immutable_and_reads_by_name():
    entry = FileEntry("a", 3, 4)
    assert (entry.path, entry.size, entry.mtime_ms) == ("a", 3, 4)
    with pytest.raises(AttributeError):
        entry.size = 5  # type: ignore[misc]


@pytest.mark.parametrize("path", [".a", "_a", "d/.a", "d/_a", "a.tmp", "a._COPYING_", "d/e/.f/g", "x\0.y/.z"])
def test_one_hidden_path_among_many_is_dropped_and_the_others_kept(path):
    entries = [FileEntry(f"part-{i}", 1, 1) for i in range(50)]
    entries.insert(25, FileEntry(path, 1, 1))
    assert FileSelection().filter(entries) == [e for e in entries if e.path != path]


@pytest.mark.parametrize("path", ["a.b", "a_b", "d/a.tmpx", "a.tmp/b", "x\0.y", "x\0_y"])
def test_a_path_that_only_looks_hidden_is_kept(path):
    entries = [FileEntry("a", 1, 1), FileEntry(path, 1, 1)]
    assert FileSelection().filter(entries) == entries
