"""ingest: reliable streaming ingestion in plain Python.

The public surface, re-exported here:

- `StreamingContext`: build a graph of DStreams, start, stop, recover;
- `DStream`, `Dataset`, `Batch`: a stream, one batch's data, what sinks see;
- `ManualClock`, `SystemClock`: batch clocks (manual for step-by-step tests);
- `StreamingListener` and its events: progress, timing and receiver health;
- executors: `InlineExecutor`, `ThreadExecutor`, `ProcessExecutor`, `DaskExecutor`;
- errors: `IngestError` and its subclasses.

Each name is imported from its module the first time it is used (PEP 562's
module `__getattr__`): `import ingest` alone costs next to nothing, so the
`ingest` command and a job's start-up pay only for the modules they use.
`from ingest import X` works for every name in `__all__`, as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module defining it.
_EXPORTS: dict[str, str] = {
    "Batch": "ingest.batch",
    "ManualClock": "ingest.clock", "SystemClock": "ingest.clock",
    "StreamingContext": "ingest.context",
    "Dataset": "ingest.dataset",
    "DStream": "ingest.dstream", "InputDStream": "ingest.dstream",
    **{name: "ingest.errors" for name in (
        "BatchFailedError", "CheckpointError", "ConfigError", "CorruptRecordError", "IngestError",
        "ReceiverError", "SourceError", "StateError", "StorageError")},
    **{name: "ingest.executor" for name in (
        "DaskExecutor", "InlineExecutor", "ProcessExecutor", "TaskExecutor", "TaskFailedError",
        "ThreadExecutor")},
    **{name: "ingest.listener" for name in (
        "BatchInfo", "OutputOperationInfo", "ReceiverInfo", "StreamingListener")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ingest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs read; never run
    from ingest.batch import Batch
    from ingest.clock import ManualClock, SystemClock
    from ingest.context import StreamingContext
    from ingest.dataset import Dataset
    from ingest.dstream import DStream, InputDStream
    from ingest.errors import (BatchFailedError, CheckpointError, ConfigError, CorruptRecordError, IngestError,
                               ReceiverError, SourceError, StateError, StorageError)
    from ingest.executor import (DaskExecutor, InlineExecutor, ProcessExecutor, TaskExecutor, TaskFailedError,
                                 ThreadExecutor)
    from ingest.listener import BatchInfo, OutputOperationInfo, ReceiverInfo, StreamingListener
