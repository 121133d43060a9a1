"""Source positions as plain data: offset ranges, position codecs and offset stores.

This package imports nothing else of ours, so every layer can depend on it.
"""

from offsets.ranges import OffsetRange, ranges_from_json, ranges_to_json

__all__ = ["OffsetRange", "ranges_from_json", "ranges_to_json"]
