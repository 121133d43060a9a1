"""Durable storage behind one small interface: what checkpoints (and later the
write-ahead log and file streams) need from a file system or object store.

Paths are relative to the storage's root and use '/'. Guarantees:
- `write_atomic` leaves either the old content or the whole new content under
  the name, even if the process dies mid-call; when it returns, the data and
  the name are on stable storage (local: temp file, fsync, rename, fsync of
  the directory);
- `write_new` does the same but fails with FileExistsError if the name exists
  (object stores: a single PUT with If-None-Match).

Local disk: files are created 0600 and directories 0700 (checkpoints hold the
job's data and source positions: only its user reads them), and every
directory the storage creates is fsynced in its parent, so that after a power
cut a durable file is never in a directory whose own entry was lost.

Read side (file-directory streams): `list_entries` lists files with their
size and modification time, `open_read` opens a byte range of one. They only
read, so a storage made with `storage_for(location, create=False)` neither
creates its root nor needs it writable (an input directory may be read-only).

Local disk is built in; HDFS (`hdfs://`, ingest.storage_hdfs) and S3 (`s3://`,
ingest.storage_s3) are imported the first time `storage_for` meets their scheme,
so the core never imports their client libraries unless a job uses them. Other
backends plug in with `register_backend`.

Backend options (endpoint, region, user, credentials) are passed as a mapping,
`storage_for(url, options)` / `ssc.checkpoint(url, storage_options={...})`, and
never as URL query parameters: a URL is printed in logs, errors, the status and
the checkpoint's own messages, and options may hold secrets. A URL with a
password in it (`scheme://user:secret@host`) is refused.
"""

from __future__ import annotations

import errno
import functools
import importlib
import io
import operator
import os
import stat
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator, Mapping, NamedTuple, TypeVar

from ingest.errors import ConfigError, StorageError

F = TypeVar("F", bound=Callable[..., Any])


class FileEntry(NamedTuple):
    """A file as `Storage.list_entries` saw it.

    Immutable, like the frozen dataclasses elsewhere, but a named tuple: a
    listing makes one per file (10,000s per batch on a large directory), and a
    tuple is built several times faster than a frozen dataclass."""

    path: str
    """Relative to the storage's root, '/'-separated."""
    size: int
    """Bytes."""
    mtime_ms: int
    """Last modification, milliseconds since the epoch (the storage's own clock)."""


_PATH = operator.attrgetter("path")


class Storage:
    """Interface of a storage backend."""

    url: str = ""

    def read(self, path: str) -> bytes:
        raise NotImplementedError

    def write_atomic(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def write_new(self, path: str, data: bytes) -> None:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def list(self, directory: str) -> list[str]:
        """Names (not paths) in `directory`, sorted; [] if it does not exist."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        """Delete a file; a missing file is not an error."""
        raise NotImplementedError

    def size(self, path: str) -> int:
        raise NotImplementedError

    def describe(self, path: str) -> str:
        """The full location of `path`, for messages."""
        return f"{self.url.rstrip('/')}/{path}"

    # read side, for file-directory streams ------------------------------------

    def list_entries(self, directory: str, recursive: bool = False) -> list[FileEntry]:
        """The files in `directory` ("" is the root), sorted by path; with
        `recursive`, those of its subdirectories too (directories themselves
        are not entries). Paths are relative to the root, '/'-separated.
        A directory that does not exist (or is a file) raises `StorageError`
        naming it; no permission too."""
        raise NotImplementedError

    def open_read(self, path: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A readable binary file object over bytes [start, end) of `path`
        (to the end of the file when `end` is None), positioned at `start`.
        The caller closes it. A file that does not exist raises
        `FileNotFoundError` (a file stream counts it as deleted between
        listing and reading); any other failure raises `StorageError`."""
        raise NotImplementedError


FILE_MODE = 0o600
DIR_MODE = 0o700


def fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename, a new or deleted file) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: str, mode: int = DIR_MODE) -> None:
    """`os.makedirs`, but every directory it creates is fsynced in its parent
    (a new directory's entry is only durable once its parent is synced)."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):  # a file is in the way: not "the name exists" for write_new
                raise NotADirectoryError(errno.ENOTDIR, "a file is where a directory should be", directory) from None
            continue
        fsync_dir(os.path.dirname(directory))


class RemoteStorage(Storage):
    """Base of the storages that talk to a server through a client object (HDFS,
    S3): the client is made on first use by `_make_client()`, and a storage
    pickled into a partition task (cloudpickle, to a worker process) travels
    without it: each process builds its own.

    Calls to the server are tracked while they wait for an answer (`_waiting`,
    `_attempt_failed`), so that a server that hangs (paused, partitioned) shows
    in the job's status as the call that waits, its location and for how long
    (`stalled()`), while the backend's bounded retries run."""

    def __init__(self) -> None:
        self._live: Any = None
        self._client_lock = threading.Lock()
        self._calls: dict[int, _Call] = {}  # by thread: the outermost call each thread waits in
        self._calls_lock = threading.Lock()

    def _make_client(self) -> Any:
        raise NotImplementedError

    @property
    def _client(self) -> Any:
        """The client, made on first use (again after unpickling)."""
        with self._client_lock:
            if self._live is None:
                self._live = self._make_client()
            return self._live

    @contextmanager
    def _waiting(self, what: str, path: str) -> Iterator[None]:
        """Track a call (`what`: "listing", "reading", ...) to the server
        about `path` for as long as it runs in this thread."""
        key = threading.get_ident()
        with self._calls_lock:
            if key in self._calls:  # a call made inside another (a retry's check): the outer one tells
                outer = True
            else:
                outer = False
                self._calls[key] = _Call(what, self.describe(path), time.monotonic())
        try:
            yield
        finally:
            if not outer:
                with self._calls_lock:
                    self._calls.pop(key, None)

    def _attempt_failed(self, error: str) -> None:
        """The backend's retry path: the current thread's call failed an attempt with `error`
        (an exception's class name, never a request: those may carry credentials)."""
        with self._calls_lock:
            call = self._calls.get(threading.get_ident())
            if call is not None:
                call.failed_attempts += 1
                call.last_error = error

    def current_call(self) -> str | None:
        """'listing s3://bucket/in' for the call this thread waits in, if any (for retry warnings)."""
        with self._calls_lock:
            call = self._calls.get(threading.get_ident())
        return None if call is None else f"{call.what} {call.location}"

    def stalled(self, after_s: float = 1.0) -> dict[str, Any] | None:
        """The oldest call unanswered for more than `after_s` seconds, for a
        status: {"call": "listing hdfs://nn:9870/in", "waiting_s": 3.2,
        "failed_attempts": 2, "last_error": "ReadTimeout"}; None when every
        call answers in time."""
        now = time.monotonic()
        with self._calls_lock:
            calls = sorted(self._calls.values(), key=lambda c: c.since)
        if not calls or now - calls[0].since <= after_s:
            return None
        call = calls[0]
        return {"call": f"{call.what} {call.location}", "waiting_s": round(now - call.since, 1),
                "failed_attempts": call.failed_attempts, "last_error": call.last_error}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_live"] = None
        state["_calls"] = {}
        del state["_client_lock"]
        del state["_calls_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._client_lock = threading.Lock()
        self._calls_lock = threading.Lock()


def tracked(what: str) -> Callable[[F], F]:
    """Decorator of a `RemoteStorage` method whose first argument is a path:
    the call is tracked by `_waiting(what, path)` while it runs."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def call(self: RemoteStorage, path: str, *args: Any, **kwargs: Any) -> Any:
            with self._waiting(what, path):
                return method(self, path, *args, **kwargs)
        return call  # type: ignore[return-value]
    return decorate


@dataclass
class _Call:
    """A call to a remote storage's server in progress (mutable: its attempts are counted)."""

    what: str
    location: str
    since: float
    failed_attempts: int = 0
    last_error: str | None = None


class RemoteBody(io.RawIOBase):
    """A server's response body as a raw stream (for io.BufferedReader) whose
    read failures (the server hung or the connection dropped mid-body) are
    `StorageError`s naming the file, not the HTTP library's own exceptions."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None], location: str,
                 errors: tuple[type[BaseException], ...]) -> None:
        self._read, self._close, self._location, self._errors = read, close, location, errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._read(len(buffer))
        except self._errors as exc:
            raise StorageError(f"reading {self._location} failed while receiving its data: {type(exc).__name__}; "
                               "the server stopped answering or dropped the connection (the batch can be "
                               "retried: StreamingContext(max_batch_retries=N))") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            except self._errors:
                pass  # closing a broken connection: the read's error is the one that matters
        super().close()


class LocalStorage(Storage):
    def __init__(self, root: str, create: bool = True) -> None:
        """`create=False`: for reading only; the root is neither created nor
        required to be writable (nor to exist yet: listing it says so)."""
        self.root = os.path.abspath(root)
        self.url = self.root
        if os.path.isfile(self.root):
            raise ConfigError(f"{self.root} is a file, not a directory: name a directory (it is created if "
                              "missing), or move the file away")
        if not create:
            return
        try:
            make_dirs(self.root)
        except OSError as exc:
            raise ConfigError(f"cannot create directory {self.root}: {exc.strerror}; choose a writable "
                              "location") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ConfigError(f"directory {self.root} is not writable by this user; fix its permissions "
                              "or choose another location")

    def _abs(self, path: str) -> str:
        if os.sep == "/" and path and path[0] != "/" and path[-1] != "/" and "//" not in path:
            # The usual path, joined directly: a file stream opens every file
            # through here, and the general join below was ~7% of reading
            # 5,000 small files.
            return f"{self.root}/{path}" if self.root != "/" else f"/{path}"
        return os.path.join(self.root, *path.split("/"))

    def describe(self, path: str) -> str:
        return self._abs(path)

    def read(self, path: str) -> bytes:
        with open(self._abs(path), "rb") as f:
            return f.read()

    def _write(self, path: str, data: bytes, replace: bool) -> None:
        target = self._abs(path)
        directory = os.path.dirname(target)
        tmp = os.path.join(directory, f".{os.path.basename(target)}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            make_dirs(directory)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, target)
            else:
                os.link(tmp, target)  # fails with EEXIST instead of overwriting
                os.unlink(tmp)
            fsync_dir(directory)
        except FileExistsError:
            _discard_tmp(tmp)
            raise
        except OSError as exc:
            _discard_tmp(tmp)
            hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
            raise StorageError(f"writing {target} failed{hint}: {exc.strerror or exc}") from exc

    def write_atomic(self, path: str, data: bytes) -> None:
        self._write(path, data, replace=True)

    def write_new(self, path: str, data: bytes) -> None:
        self._write(path, data, replace=False)

    def exists(self, path: str) -> bool:
        return os.path.exists(self._abs(path))

    def list(self, directory: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self._abs(directory)) if not n.startswith("."))
        except FileNotFoundError:
            return []
        except OSError as exc:  # a file where a directory should be, no permission, ...
            raise StorageError(f"cannot list {self._abs(directory)}: {exc.strerror or exc}; it should be a "
                               "directory the job can read") from None

    def delete(self, path: str) -> None:
        try:
            _silent_unlink(self._abs(path))
        except OSError as exc:  # a directory where a file should be, no permission, ...
            raise StorageError(f"cannot delete {self._abs(path)}: {exc.strerror or exc}") from None

    def size(self, path: str) -> int:
        return os.path.getsize(self._abs(path))

    def list_entries(self, directory: str, recursive: bool = False) -> list[FileEntry]:
        top = self._abs(directory) if directory else self.root
        prefix = directory.strip("/")
        out: list[FileEntry] = []
        pending = [(top, prefix)]
        # Per file: the stat the listing needs, one tuple, nothing else (a file
        # stream lists the whole directory every batch). tuple.__new__ skips the
        # named tuple's Python-level constructor. The directory is scanned through
        # an open descriptor where the platform allows, so that each stat is
        # fstatat(dir, name): the kernel resolves the name alone, not the whole
        # path again (~20% of a local listing).
        new_entry, is_regular, is_directory = tuple.__new__, stat.S_ISREG, stat.S_ISDIR
        by_descriptor = os.scandir in os.supports_fd
        while pending:
            where, rel = pending.pop()
            base = f"{rel}/" if rel else ""
            try:
                fd = os.open(where, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if by_descriptor else None
                try:
                    with os.scandir(where if fd is None else fd) as it:
                        for entry in it:
                            try:
                                st = entry.stat()
                            except FileNotFoundError:
                                continue  # deleted while listing: it is not there
                            if is_regular(st.st_mode):
                                out.append(new_entry(FileEntry, (base + entry.name, st.st_size,
                                                                 st.st_mtime_ns // 1_000_000)))
                            elif recursive and is_directory(st.st_mode):
                                pending.append((os.path.join(where, entry.name), base + entry.name))
                finally:
                    if fd is not None:
                        os.close(fd)
            except FileNotFoundError:
                if where == top:
                    raise StorageError(f"directory {top} does not exist; create it (or fix the path)") from None
            except NotADirectoryError:
                if where == top:
                    raise StorageError(f"{top} is not a directory; give the directory the files are in") from None
            except OSError as exc:  # no permission, ...
                raise StorageError(f"cannot list {where}: {exc.strerror or exc}; the job's user must be able to "
                                   "read and enter it") from None
        out.sort(key=_PATH)  # str keys: the sort's fast path for strings
        return out

    def open_read(self, path: str, start: int = 0, end: int | None = None) -> BinaryIO:
        target = self._abs(path)
        try:
            f = open(target, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot open {target}: {exc.strerror or exc}; the job's user must be able to "
                               "read it") from None
        try:
            if start:
                f.seek(start)
        except OSError as exc:
            f.close()
            raise StorageError(f"cannot seek to byte {start} of {target}: {exc.strerror or exc}") from None
        if end is None:
            return f
        return io.BufferedReader(_Bounded(f, max(0, end - start)))  # type: ignore[return-value]


class _Bounded(io.RawIOBase):
    """At most `limit` bytes of an open file (the rest of a byte range)."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self._f, self._left = f, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self._left)]
        n = self._f.readinto(view)  # type: ignore[attr-defined]
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def _discard_tmp(path: str) -> None:
    """Best effort: the write already failed, and that is the error to report."""
    try:
        os.unlink(path)
    except OSError:
        pass


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


StorageFactory = Callable[[str, Mapping[str, Any]], Storage]
_BACKENDS: dict[str, StorageFactory] = {}
# Built-in backends whose modules register themselves on import: imported on
# first use only (their client libraries are optional extras).
_LAZY_BACKENDS = {"hdfs": "ingest.storage_hdfs", "s3": "ingest.storage_s3"}


def register_backend(scheme: str, factory: StorageFactory) -> None:
    """Make `scheme://...` locations usable: `factory(url, options)` builds the
    storage (it raises ConfigError for bad options or an unusable location)."""
    _BACKENDS[scheme.lower()] = factory


def storage_for(location: str, options: Mapping[str, Any] | None = None, *, create: bool = True) -> Storage:
    """A storage for a local path or a `scheme://` URL; `options` go to the
    backend (see the module docstring). `create=False` (for reading only)
    leaves a local root as it is: not created, not required to be writable;
    other backends are made the same way either way."""
    if not isinstance(location, str) or not location:
        raise ConfigError(f"a storage location must be a non-empty path or URL, got {location!r}")
    if "://" in location:
        scheme = location.split("://", 1)[0].lower()
        if scheme == "file":
            return LocalStorage(location.split("://", 1)[1], create=create)
        authority = location.split("://", 1)[1].split("/", 1)[0]
        if "@" in authority:
            safe = f"{scheme}://<redacted>@{authority.rsplit('@', 1)[1]}"
            raise ConfigError(f"storage location {safe} carries credentials in its URL, where logs and "
                              "errors would show them; pass them in the storage options or the client's "
                              "usual configuration instead")
        if scheme not in _BACKENDS and scheme in _LAZY_BACKENDS:
            importlib.import_module(_LAZY_BACKENDS[scheme])
        factory = _BACKENDS.get(scheme)
        if factory is None:
            raise ConfigError(f"no storage backend for {scheme}:// locations ({location}); local paths, "
                              f"{', '.join(sorted({*_BACKENDS, *_LAZY_BACKENDS}))}:// are supported")
        return factory(location, dict(options or {}))
    if options:
        raise ConfigError(f"storage options {sorted(options)} were given for the local path {location}, "
                          "which takes none")
    return LocalStorage(location, create=create)
