"""ingest: reliable streaming ingestion in plain Python.

The public surface, re-exported here:

- `StreamingContext`: build a graph of DStreams, start, stop, recover;
- `DStream`, `Dataset`, `Batch`: a stream, one batch's data, what sinks see;
- `ManualClock`, `SystemClock`: batch clocks (manual for step-by-step tests);
- `StreamingListener` and its events: progress, timing and receiver health;
- executors: `InlineExecutor`, `ThreadExecutor`, `ProcessExecutor`, `DaskExecutor`;
- errors: `IngestError` and its subclasses.
"""

from ingest.batch import Batch
from ingest.clock import ManualClock, SystemClock
from ingest.context import StreamingContext
from ingest.dataset import Dataset
from ingest.dstream import DStream, InputDStream
from ingest.errors import (
    BatchFailedError,
    CheckpointError,
    ConfigError,
    CorruptRecordError,
    IngestError,
    ReceiverError,
    SourceError,
    StateError,
    StorageError,
)
from ingest.executor import (DaskExecutor, InlineExecutor, ProcessExecutor, TaskExecutor, TaskFailedError,
                             ThreadExecutor)
from ingest.listener import BatchInfo, OutputOperationInfo, ReceiverInfo, StreamingListener

__version__ = "0.1.0"

__all__ = [
    "Batch", "BatchFailedError", "BatchInfo", "CheckpointError", "ConfigError", "CorruptRecordError",
    "DStream", "DaskExecutor", "Dataset", "IngestError", "InlineExecutor", "InputDStream", "ManualClock",
    "OutputOperationInfo", "ProcessExecutor", "ReceiverError", "ReceiverInfo", "SourceError", "StateError",
    "StorageError", "StreamingContext", "StreamingListener", "SystemClock", "TaskExecutor", "TaskFailedError",
    "ThreadExecutor",
]
