"""The one exception hierarchy of ingest (public name: `ingest.errors`).

Every error raised on purpose by `ingest`, `receivers`, `direct` or `offsets`
derives from `IngestError`. Messages name the input (stream, batch, file,
option), say what was wrong and what to do about it.
"""

from __future__ import annotations


class IngestError(Exception):
    """Root of every error ingest raises on purpose."""


class ConfigError(IngestError, ValueError):
    """A bad argument or option, raised at construction time."""


class StateError(IngestError, RuntimeError):
    """An operation that is not allowed in the object's current state
    (for example adding a stream after `start()`)."""


class BatchFailedError(IngestError):
    """A batch could not be processed; the cause is chained."""

    def __init__(self, message: str, batch_time_ms: int | None = None):
        super().__init__(message)
        self.batch_time_ms = batch_time_ms


class SourceError(IngestError):
    """An input source failed in a way the framework could not recover from."""


class ReceiverError(SourceError):
    """A receiver reported an error or could not be (re)started."""


class StorageError(IngestError, OSError):
    """Reading or writing durable storage (checkpoint, WAL, output) failed."""


class CheckpointError(StorageError):
    """A checkpoint directory cannot be used as it is."""


class CorruptRecordError(StorageError):
    """A durable record failed its checksum or framing checks.

    Carries the file and byte offset so that a person can inspect it."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.path = path
        self.offset = offset


class ServiceError(IngestError):
    """A test or development service (Kafka broker, Flume agent, ...) could not
    be started or reached."""


class ServiceToolMissingError(ServiceError):
    """A program or library a service needs (java, mvn, a Kafka client) is not
    installed; the message says what to install."""


class MavenError(ServiceError):
    """Maven could not resolve the jars of a JVM service."""


class MavenRepositoryUnreachableError(MavenError):
    """Maven could not download from its repository (network, proxy, mirror)."""


class ServiceStartError(ServiceError):
    """A service process exited, or was not ready in time, while starting.

    Carries the tail of the service's log, where the cause usually is."""

    def __init__(self, message: str, log_tail: str = "", exit_code: int | None = None):
        super().__init__(message)
        self.log_tail = log_tail
        self.exit_code = exit_code


class PortInUseError(ServiceError):
    """A port a service must listen on is already taken by another process."""

    def __init__(self, message: str, port: int | None = None):
        super().__init__(message)
        self.port = port


class StaleServiceDirError(ServiceError):
    """A service directory still holds the state of a run that did not stop
    cleanly (its owner was killed); it is not reused silently."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path
