"""HDFS storage (`hdfs://namenode:port/path`) for checkpoints and file streams, over WebHDFS.

Imported by `ingest.storage.storage_for` the first time it meets an hdfs://
URL (the `hdfs` package is the optional `hdfs` extra; core modules never
import this module). `namenode:port` is the NameNode's WebHDFS (HTTP) address,
`dfs.namenode.http-address` (9870 by default), not its RPC port: the job talks
HTTP to the NameNode and DataNodes and needs no JVM or native library.

Commits (the data goes to a temporary file next to the target, `.name.<random>.tmp`,
hidden from `list`, then):
- `write_atomic`: RENAME with `renameoptions=OVERWRITE`, which replaces the
  target in one NameNode operation: readers see the old file or the new one.
- `write_new`: a plain RENAME, which fails when the target exists: of two
  drivers committing the same batch exactly one succeeds.
When a file is closed, the NameNode has its blocks on the DataNodes of the
write pipeline (`dfs.replication` of them); that is HDFS's durability point.

Retries: a request that cannot connect or times out (NameNode restarting or
hung) is retried with backoff for `retry_seconds` (default 60) before the call
fails with a StorageError naming the path. A rename retried after a lost answer
is recognised: the temporary name is unique to this call, so "temporary file
gone, target present" means the first attempt renamed it. While a call waits,
`stalled()` (RemoteStorage) reports it for the job's status.

Options (`storage_options`): `user` (HDFS user; default $HADOOP_USER_NAME, else
the login name), `webhdfs_url` (e.g. `https://namenode:9871` to use TLS or
another address than the URL's), `timeout` (seconds per request, default 10),
`retry_seconds`. Errors are built from the path and the NameNode's exception
name and message; request URLs (which carry the user, and a delegation token
in secured clusters) are not echoed.
"""

from __future__ import annotations

import getpass
import io
import logging
import os
import posixpath
import re
import time
import uuid
from typing import Any, BinaryIO, Callable, Mapping, TypeVar

from ingest.errors import ConfigError, StorageError
from ingest.install_hint import install_hint
from ingest.storage import FileEntry, RemoteBody, RemoteStorage, register_backend

try:
    import requests
    import urllib3
    from hdfs import HdfsError, InsecureClient
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ConfigError(f"hdfs:// locations need the `hdfs` package: {install_hint('hdfs')}") from _exc

log = logging.getLogger("ingest.storage")

OPTIONS = {"user", "webhdfs_url", "timeout", "retry_seconds"}
T = TypeVar("T")
_RETRIABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
_BODY_ERRORS = (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError)
_QUERY = re.compile(r"\?[^\s'\")]*")


def _safe(exc: BaseException) -> str:
    """An exception's first line without any URL query string (user, token)."""
    return _QUERY.sub("?…", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:300]


def _missing(exc: HdfsError) -> bool:
    return getattr(exc, "exception", None) == "FileNotFoundException" or "does not exist" in str(exc)


class HdfsStorage(RemoteStorage):
    """Files under `hdfs://namenode:port/path`, through WebHDFS."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ConfigError(f"unknown HDFS storage option(s) {unknown} for {url}; known: {sorted(OPTIONS)}")
        rest = url.split("://", 1)[1]
        if "?" in rest or "#" in rest:
            raise ConfigError(f"{url}: HDFS locations take no query options; pass them as storage options")
        authority, _, path = rest.partition("/")
        if not authority:
            raise ConfigError(f"{url} names no NameNode: use hdfs://namenode:port/path (the WebHDFS port)")
        self.root = "/" + "/".join(p for p in path.split("/") if p)
        self._authority = authority
        self.url = f"hdfs://{authority}{self.root.rstrip('/')}"
        self.retry_seconds = float(options.get("retry_seconds", 60.0))
        timeout = float(options.get("timeout", 10.0))
        user = options.get("user") or os.environ.get("HADOOP_USER_NAME") or getpass.getuser()
        # What the client is rebuilt from in another process (see __getstate__).
        self._client_args = (options.get("webhdfs_url") or f"http://{authority}", user,
                             (min(timeout, 5.0), timeout))
        RemoteStorage.__init__(self)
        self._call("reaching", "", lambda: self._client.status("/"))

    def __repr__(self) -> str:
        return f"HdfsStorage({self.url!r})"

    def _make_client(self) -> InsecureClient:
        address, user, timeout = self._client_args
        return InsecureClient(address, user=user, timeout=timeout)

    # A file stream's partition tasks carry the storage to worker processes
    # (cloudpickle): they get the address, user and timeouts (RemoteStorage
    # drops the live client, which each process rebuilds on first use).

    # -- helpers

    def _abs(self, path: str) -> str:
        path = path.strip("/")
        return posixpath.join(self.root, path) if path else self.root

    def describe(self, path: str) -> str:
        return f"hdfs://{self._authority}{self._abs(path)}"

    def _call(self, what: str, path: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried on connection errors and timeouts for `retry_seconds`."""
        with self._waiting(what, path):  # shown in the status while the NameNode does not answer
            return self._retried(what, path, fn)

    def _retried(self, what: str, path: str, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                return fn()
            except _RETRIABLE as exc:
                self._attempt_failed(type(exc).__name__)
                if time.monotonic() + delay > deadline:
                    raise StorageError(f"{what} {self.describe(path)} failed: the NameNode did not answer within "
                                       f"{self.retry_seconds:.0f} s ({type(exc).__name__}: {_safe(exc)}); is "
                                       "it running and is the URL its WebHDFS address?") from None
                log.warning("%s %s: %s; retrying in %.1f s", what, self.describe(path), type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except HdfsError as exc:
                if _missing(exc):
                    raise FileNotFoundError(2, "no such file or directory", self.describe(path)) from None
                raise StorageError(f"{what} {self.describe(path)} failed: {_safe(exc)}") from None

    # -- Storage

    def read(self, path: str) -> bytes:
        def read() -> bytes:
            with self._client.read(self._abs(path)) as reader:
                return reader.read()
        return self._call("reading", path, read)

    def _write(self, path: str, data: bytes, replace: bool) -> None:
        target = self._abs(path)
        directory, name = posixpath.split(target)
        tmp = posixpath.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        # CREATE makes missing parent directories, and the temporary file is in the
        # target's directory, so the rename needs no MKDIRS round trip.
        self._call("writing", path, lambda: self._client.write(tmp, data, overwrite=True))

        def rename() -> bool:
            try:
                if replace:
                    self._client._rename(tmp, destination=target, renameoptions="OVERWRITE")
                    return True
                return bool(self._client._rename(tmp, destination=target).json().get("boolean"))
            except _RETRIABLE:
                # The answer may have been lost after the NameNode renamed: the
                # temporary name is ours alone, so its absence settles it.
                if self._client.status(tmp, strict=False) is None and \
                        self._client.status(target, strict=False) is not None:
                    return True
                raise

        try:
            renamed = self._call("committing", path, rename)
        except BaseException:
            self._discard(tmp)
            raise
        if not renamed:
            self._discard(tmp)
            if self.exists(path):
                raise FileExistsError(17, "file exists", self.describe(path))
            raise StorageError(f"committing {self.describe(path)} failed: the NameNode refused to rename "
                               f"{tmp} onto it")

    def _discard(self, tmp: str) -> None:
        try:
            self._client.delete(tmp)
        except (HdfsError, *_RETRIABLE):
            pass  # best effort: a hidden leftover, and the write's own error is the one to report

    def write_atomic(self, path: str, data: bytes) -> None:
        self._write(path, data, replace=True)

    def write_new(self, path: str, data: bytes) -> None:
        self._write(path, data, replace=False)

    def exists(self, path: str) -> bool:
        return self._call("checking", path, lambda: self._client.status(self._abs(path), strict=False)) is not None

    def list(self, directory: str) -> list[str]:
        try:
            names = self._call("listing", directory, lambda: self._client.list(self._abs(directory)))
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def list_entries(self, directory: str, recursive: bool = False) -> list[FileEntry]:
        root = self.root.rstrip("/") + "/"
        entries: list[FileEntry] = []
        pending = [self._abs(directory)]
        while pending:
            current = pending.pop()
            try:
                listing = self._call("listing", current[len(root):],
                                     lambda: self._client.list(current, status=True))
            except FileNotFoundError:
                if current == self._abs(directory):
                    raise StorageError(f"directory {self.describe(directory)} does not exist; check the "
                                       "location or create it") from None
                continue  # a subdirectory deleted while walking
            for name, status in listing:
                full = posixpath.join(current, name)
                if status.get("type") == "DIRECTORY":
                    if recursive:
                        pending.append(full)
                else:
                    entries.append(FileEntry(full[len(root):], int(status.get("length", 0)),
                                             int(status.get("modificationTime", 0))))
        return sorted(entries, key=lambda e: e.path)

    def delete(self, path: str) -> None:
        self._call("deleting", path, lambda: self._client.delete(self._abs(path)))

    def size(self, path: str) -> int:
        status = self._call("reading the size of", path, lambda: self._client.status(self._abs(path)))
        return int(status["length"])

    def open_read(self, path: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if end is not None and end <= start:
            return io.BytesIO(b"")  # type: ignore[return-value]
        length = None if end is None else end - start
        response = self._call("reading", path,
                              lambda: self._client._open(self._abs(path), offset=start, length=length))
        # urllib3 marks a response closed once its body is fully read, and a
        # BufferedReader then fails the next read ("read of closed file")
        # instead of returning b"" at the end of the file; auto_close=False is
        # urllib3's switch for wrapping a response in io classes.
        response.raw.auto_close = False
        # A NameNode or DataNode that hangs mid-body raises urllib3's timeout:
        # RemoteBody makes that an error naming the file.
        body = RemoteBody(response.raw.read, response.close, self.describe(path), _BODY_ERRORS)
        return io.BufferedReader(body, buffer_size=1 << 20)  # type: ignore[return-value]


register_backend("hdfs", HdfsStorage)
