"""What the `direct` package adds to the core, registered when imported.

Loaded through the `ingest.sources` entry point (or the core's list of built-in
source modules) on first use; registers the stream factories
`kafka_direct_stream`, `text_file_stream`, `binary_records_stream` and
`file_stream`, so that ``ssc.stream("kafka_direct_stream", topics=[...],
kafka_params={...})`` and ``ssc.text_file_stream(directory)`` work without
importing `direct`.
"""

from __future__ import annotations

from direct.files import binary_records_stream, file_stream, text_file_stream
from direct.stream import kafka_direct_stream
from ingest.sources import register_stream_factory

register_stream_factory("kafka_direct_stream", kafka_direct_stream)
register_stream_factory("text_file_stream", text_file_stream)
register_stream_factory("binary_records_stream", binary_records_stream)
register_stream_factory("file_stream", file_stream)
