"""The planning rule of file streams (`direct.files.planner`), the position
kinds it stores, and how files become slices and partitions, as plain logic."""

from __future__ import annotations

from direct.files.planner import FilePlanner
from direct.files.selection import FileSelection
from direct.files.splits import pack, slices_of
from ingest.storage import FileEntry
from offsets import FileList, FileSlice, FileWatermark, position_from_data, position_to_data


def entries(*specs: tuple[str, int]) -> list[FileEntry]:
    return [FileEntry(path, 10, mtime) for path, mtime in specs]


def take(planner: FilePlanner, listing: list[FileEntry], max_files: int | None = None) -> list[str]:
    new = planner.new_files(listing, max_files)
    planner.take((e.path, e.mtime_ms) for e in new)
    return [e.path for e in new]


def test_a_file_is_taken_once_then_remembered():
    p = FilePlanner(remember_ms=60_000)
    assert take(p, entries(("a", 1000), ("b", 2000))) == ["a", "b"]
    assert take(p, entries(("a", 1000), ("b", 2000), ("c", 1500))) == ["c"]
    assert take(p, entries(("a", 1000), ("b", 2000), ("c", 1500))) == []


def test_new_files_are_taken_oldest_first_and_max_files_leaves_the_rest_for_later():
    p = FilePlanner(remember_ms=60_000)
    listing = entries(("z", 1000), ("y", 3000), ("x", 2000), ("w", 2000))
    assert take(p, listing, max_files=3) == ["z", "w", "x"]
    assert p.backlog == 1
    assert take(p, listing, max_files=3) == ["y"]


def test_files_older_than_the_window_before_the_newest_taken_are_ignored_and_counted():
    p = FilePlanner(remember_ms=10_000)
    take(p, entries(("new", 100_000)))
    assert take(p, entries(("new", 100_000), ("late-but-in-window", 95_000), ("too-old", 80_000))) == [
        "late-but-in-window"]
    assert p.too_old == 1


def test_the_watermark_moves_with_files_taken_not_with_time():
    """Files written while the job was down are taken however long it was down."""
    p = FilePlanner(remember_ms=1_000)
    take(p, entries(("a", 5_000)))
    assert take(p, entries(("a", 5_000), ("written-a-day-later", 86_400_000))) == ["written-a-day-later"]


def test_a_file_stamped_in_the_future_counts_as_now_for_the_watermark():
    p = FilePlanner(remember_ms=10_000, wall_clock_ms=lambda: 100_000)
    assert take(p, entries(("from-2100", 4_102_444_800_000))) == ["from-2100"]
    assert p.watermark_ms == 100_000
    assert take(p, entries(("from-2100", 4_102_444_800_000), ("written-now", 99_000))) == ["written-now"]


def test_remembered_files_outside_the_window_are_forgotten():
    p = FilePlanner(remember_ms=1_000)
    take(p, entries(("a", 1_000), ("b", 1_500)))
    take(p, entries(("c", 5_000)))
    assert p.state() == FileWatermark(5_000, (("c", 5_000),))


def test_taking_a_batch_twice_changes_nothing():
    p = FilePlanner(remember_ms=60_000)
    batch = FileList((FileSlice("a", 10, 1000), FileSlice("b", 10, 2000, 0, 5), FileSlice("b", 10, 2000, 5, 10)))
    p.take_batch(batch)
    once = p.state()
    p.take_batch(batch)
    assert p.state() == once == FileWatermark(2000, (("a", 1000), ("b", 2000)))


def test_restored_state_continues_where_it_was():
    p = FilePlanner(remember_ms=60_000)
    take(p, entries(("a", 1000)))
    q = FilePlanner(remember_ms=60_000)
    q.restore(position_from_data(position_to_data(p.state())))  # type: ignore[arg-type]
    assert take(q, entries(("a", 1000), ("b", 900))) == ["b"]


def test_positions_round_trip_and_a_version_1_file_list_still_reads():
    fl = FileList((FileSlice("d/a.txt", 100, 7, 0, 50), FileSlice("d/a.txt", 100, 7, 50, 100)),
                  since=FileWatermark(5, (("old", 5),)))
    assert position_from_data(position_to_data(fl)) == fl
    assert fl.paths == ("d/a.txt",)
    old = {"kind": "files", "v": 1, "files": [["a", 3, 1, 0, None]]}
    assert position_from_data(old) == FileList((FileSlice("a", 3, 1),))
    wm = FileWatermark(None, ())
    assert position_from_data(position_to_data(wm)) == wm


def test_hidden_and_in_progress_names_are_never_selected():
    sel = FileSelection()
    assert sel.accepts("a.txt") and sel.accepts("sub/a.txt")
    for name in (".a.txt", "_SUCCESS", "a.txt._COPYING_", "a.txt.tmp", "_temporary/0/a.txt", "sub/.hidden/a"):
        assert not sel.accepts(name), name


def test_glob_matches_the_path_relative_to_the_directory():
    sel = FileSelection("*.csv")
    assert sel.accepts("a.csv") and sel.accepts("2024/01/a.csv")
    assert not sel.accepts("a.json")
    assert FileSelection("2024/*.csv").accepts("2024/a.csv")
    assert not FileSelection("2024/*.csv").accepts("2025/a.csv")


def test_large_text_files_are_cut_into_ranges_of_at_least_min_partition_bytes():
    assert slices_of(FileEntry("a", 199, 1), 100, 1) == [FileSlice("a", 199, 1)]
    cut = slices_of(FileEntry("a", 350, 1), 100, 1)
    assert [(s.start, s.end) for s in cut] == [(0, 116), (116, 233), (233, 350)]
    assert all(s.end - s.start >= 100 for s in cut)


def test_record_files_are_cut_at_record_boundaries_and_reader_files_never():
    cut = slices_of(FileEntry("r", 40 * 7, 1), 100, 7)
    assert [(s.start, s.end) for s in cut] == [(0, 140), (140, 280)]
    assert all(s.start % 7 == 0 for s in cut)
    assert slices_of(FileEntry("p", 10_000, 1), 100, None) == [FileSlice("p", 10_000, 1)]


def test_small_files_share_partitions_up_to_the_budget():
    files = [FileSlice(f"f{i}", 10, 1) for i in range(100)]
    assert [len(g) for g in pack(files, 250, 1)] == [25, 25, 25, 25]
    assert len(pack(files, 10_000, 4)) == 4  # a parallel executor gets a share per worker
    many = [FileSlice(f"f{i}", 100_000, 1) for i in range(100)]
    assert [len(g) for g in pack(many, 64 << 20, 1)][:2] == [10, 10]  # tasks of about a megabyte
    assert pack([FileSlice("big", 1000, 1)] + files[:2], 100, 1) == [[FileSlice("big", 1000, 1)], files[:2]]
