"""The one exception hierarchy of ingest, as users import it.

The classes live in `offsets.errors` (the ground floor, so that every layer can
raise them without an upward import); this module is their public name:
`ingest.errors.IngestError` is the root of every error ingest raises on purpose.
"""

from offsets.errors import (
    BatchFailedError,
    CheckpointError,
    ConfigError,
    CorruptRecordError,
    IngestError,
    MavenError,
    MavenRepositoryUnreachableError,
    PortInUseError,
    ReceiverError,
    ServiceError,
    ServiceStartError,
    ServiceToolMissingError,
    SourceError,
    StaleServiceDirError,
    StateError,
    StorageError,
)

__all__ = [
    "BatchFailedError", "CheckpointError", "ConfigError", "CorruptRecordError", "IngestError", "MavenError",
    "MavenRepositoryUnreachableError", "PortInUseError", "ReceiverError", "ServiceError", "ServiceStartError",
    "ServiceToolMissingError", "SourceError", "StaleServiceDirError", "StateError", "StorageError",
]
