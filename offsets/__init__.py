"""Source positions as plain data: typed positions, offset ranges, the codec
of intent and commit records, the `OffsetStore` protocol and retention.

This package imports nothing else of ours, so every layer can depend on it.

Each name loads its module on first use: `offsets.errors` (what every error of
the core derives from) and `from offsets import Position` do not load the
record codec, which only checkpoints need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from offsets.lazy_names import lazy_getattr

_EXPORTS: dict[str, str] = {
    **{name: "offsets.positions" for name in (
        "BlockRef", "FileList", "FileSlice", "FileWatermark", "KafkaOffsets", "KafkaRanges", "OpaquePosition",
        "Position", "QueueItems", "ReceivedBlocks", "SequenceNumbers", "SequenceRef", "offset_ranges_of",
        "position_from_data", "position_to_data", "register_position")},
    **{name: "offsets.ranges" for name in ("OffsetRange", "ranges_from_json", "ranges_to_json")},
    **{name: "offsets.records" for name in ("CommitRecord", "IntentRecord", "RecordCodec", "RecordId",
                                            "StateRecord")},
    "retain_from_ms": "offsets.retention",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr('offsets', _EXPORTS, globals())


if TYPE_CHECKING:
    from offsets.positions import (BlockRef, FileList, FileSlice, FileWatermark, KafkaOffsets, KafkaRanges,
                                   OpaquePosition, Position, QueueItems, ReceivedBlocks, SequenceNumbers,
                                   SequenceRef, offset_ranges_of, position_from_data, position_to_data,
                                   register_position)
    from offsets.ranges import OffsetRange, ranges_from_json, ranges_to_json
    from offsets.records import CommitRecord, IntentRecord, RecordCodec, RecordId, StateRecord
    from offsets.retention import retain_from_ms
