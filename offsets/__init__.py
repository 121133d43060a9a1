"""Source positions as plain data: typed positions, offset ranges, the codec
of intent and commit records, the `OffsetStore` protocol and retention.

This package imports nothing else of ours, so every layer can depend on it.
"""

from offsets.positions import (
    BlockRef,
    FileList,
    FileSlice,
    KafkaOffsets,
    KafkaRanges,
    OpaquePosition,
    Position,
    QueueItems,
    ReceivedBlocks,
    SequenceNumbers,
    SequenceRef,
    offset_ranges_of,
    position_from_data,
    position_to_data,
    register_position,
)
from offsets.ranges import OffsetRange, ranges_from_json, ranges_to_json

__all__ = [
    "BlockRef", "FileList", "FileSlice", "KafkaOffsets", "KafkaRanges", "OffsetRange", "OpaquePosition",
    "Position", "QueueItems", "ReceivedBlocks", "SequenceNumbers", "SequenceRef", "offset_ranges_of",
    "position_from_data", "position_to_data", "ranges_from_json", "ranges_to_json", "register_position",
]
