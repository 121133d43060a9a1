"""What the `direct` package adds to the core, registered when imported.

Loaded through the `ingest.sources` entry point (or the core's list of built-in
source modules) on first use; registers the stream factory
`kafka_direct_stream`, so that ``ssc.stream("kafka_direct_stream", topics=[...],
kafka_params={...})`` works without importing `direct`.
"""

from __future__ import annotations

from direct.stream import kafka_direct_stream
from ingest.sources import register_stream_factory

register_stream_factory("kafka_direct_stream", kafka_direct_stream)
