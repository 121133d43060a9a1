"""File-directory streams (local disk, and any storage backend registered in
`ingest.storage`): every batch reads the files that appeared since the last.

    lines = ssc.text_file_stream("/data/incoming", glob="*.log")
"""

from direct.files.readers import FileChangedError
from direct.files.stream import FileInputDStream, binary_records_stream, file_stream, text_file_stream

__all__ = ["FileChangedError", "FileInputDStream", "binary_records_stream", "file_stream", "text_file_stream"]
