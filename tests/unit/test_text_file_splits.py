"""Text files cut into byte ranges: every line is read exactly once, by the
range it starts in, whatever the cut points (lines across a boundary, a
boundary right after or before a newline, lines longer than a range, CRLF,
empty lines, no final newline)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from direct.files.readers import TextSliceSource
from ingest.storage import LocalStorage
from offsets import FileSlice


def read_with_cuts(tmp_path, data: bytes, cuts: list[int]) -> list[str]:
    (tmp_path / "f.txt").write_bytes(data)
    storage = LocalStorage(str(tmp_path), create=False)
    mtime = storage.list_entries("")[0].mtime_ms
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    slices = [FileSlice("f.txt", len(data), mtime, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    out: list[str] = []
    for s in slices:  # each range alone, as separate tasks read them
        out.extend(TextSliceSource(storage, "t", [s], "utf-8", "strict").read())
    return out


def whole(data: bytes) -> list[str]:
    lines = data.decode().split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def test_boundaries_at_and_around_newlines(tmp_path):
    data = b"aa\nbbbb\n\ncc\r\ndddddddddd\ne"
    for cut in range(1, len(data)):
        assert read_with_cuts(tmp_path, data, [cut]) == whole(data), cut
    assert read_with_cuts(tmp_path, data, list(range(1, len(data)))) == whole(data)


def test_a_line_longer_than_several_ranges_is_read_once_by_the_range_it_starts_in(tmp_path):
    data = b"x\n" + b"y" * 300_000 + b"\nz\n"
    assert read_with_cuts(tmp_path, data, [1, 2, 3, 1000, 100_000, 300_001, 300_002]) == ["x", "y" * 300_000, "z"]


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.text(alphabet="ab\r€", max_size=12), max_size=30), final_newline=st.booleans(),
       cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=8))
def test_any_cuts_give_the_lines_of_the_whole_file_in_order(tmp_path_factory, lines, final_newline, cuts):
    data = "\n".join(lines).encode() + (b"\n" if final_newline and lines else b"")
    tmp = tmp_path_factory.mktemp("cuts")
    assert read_with_cuts(tmp, data, cuts) == whole(data)
