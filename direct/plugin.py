"""What the `direct` package adds to the core, registered when imported.

Loaded through the `ingest.sources` entry point (or the core's list of built-in
source modules) on first use; registers the stream factories
`kafka_direct_stream`, `text_file_stream`, `binary_records_stream` and
`file_stream`, so that ``ssc.stream("kafka_direct_stream", topics=[...],
kafka_params={...})`` and ``ssc.text_file_stream(directory)`` work without
importing `direct`.

Registering is cheap: each factory imports its stream's module when first
called, so a file job never loads the Kafka client, nor a Kafka job the file
stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingest.sources import register_stream_factory

if TYPE_CHECKING:
    from direct.files.stream import FileInputDStream
    from direct.stream import DirectKafkaInputDStream
    from ingest.context import StreamingContext


def kafka_direct_stream(ssc: "StreamingContext", *args: Any, **options: Any) -> "DirectKafkaInputDStream":
    """`direct.kafka_direct_stream`: see its documentation."""
    from direct.stream import kafka_direct_stream as make_stream

    return make_stream(ssc, *args, **options)


def text_file_stream(ssc: "StreamingContext", *args: Any, **options: Any) -> "FileInputDStream":
    """`direct.files.text_file_stream`: see its documentation."""
    from direct.files.stream import text_file_stream as make_stream

    return make_stream(ssc, *args, **options)


def binary_records_stream(ssc: "StreamingContext", *args: Any, **options: Any) -> "FileInputDStream":
    """`direct.files.binary_records_stream`: see its documentation."""
    from direct.files.stream import binary_records_stream as make_stream

    return make_stream(ssc, *args, **options)


def file_stream(ssc: "StreamingContext", *args: Any, **options: Any) -> "FileInputDStream":
    """`direct.files.file_stream`: see its documentation."""
    from direct.files.stream import file_stream as make_stream

    return make_stream(ssc, *args, **options)


register_stream_factory("kafka_direct_stream", kafka_direct_stream)
register_stream_factory("text_file_stream", text_file_stream)
register_stream_factory("binary_records_stream", binary_records_stream)
register_stream_factory("file_stream", file_stream)
