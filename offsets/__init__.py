"""Source positions as plain data: typed positions, offset ranges, the codec
of intent and commit records, the `OffsetStore` protocol and retention.

This package imports nothing else of ours, so every layer can depend on it.
"""

from offsets.positions import (
    BlockRef,
    FileList,
    FileSlice,
    FileWatermark,
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
from offsets.records import CommitRecord, IntentRecord, RecordCodec, RecordId, StateRecord
from offsets.retention import retain_from_ms

__all__ = [
    "BlockRef", "CommitRecord", "FileList", "FileSlice", "FileWatermark", "IntentRecord", "KafkaOffsets", "KafkaRanges",
    "OffsetRange", "OpaquePosition", "Position", "QueueItems", "ReceivedBlocks", "RecordCodec", "RecordId",
    "SequenceNumbers", "SequenceRef", "StateRecord", "offset_ranges_of", "position_from_data", "position_to_data",
    "ranges_from_json", "ranges_to_json", "register_position", "retain_from_ms",
]
