"""S3 storage (`s3://bucket/prefix`) for checkpoints and file streams, on boto3.

Imported by `ingest.storage.storage_for` the first time it meets an s3:// URL
(boto3 is the optional `s3` extra; core modules never import this module).

Commits:
- `write_new` is a single PUT with `If-None-Match: *`: S3 stores the object
  only if no object has the key, atomically, so of two drivers committing the
  same batch exactly one succeeds; the other gets 412 (FileExistsError here).
  A PUT is all-or-nothing: a reader never sees part of an object.
- `write_atomic` is a plain PUT (last writer wins, never a partial object).
- S3 has no directories: a "directory" is a key prefix ending in '/'; an empty
  directory does not exist, and `list_entries` of a prefix without objects is
  an error naming it (as for a missing local directory).

Retries: boto3's standard retry mode (several attempts with backoff on
throttling, 5xx, timeouts and dropped connections), with connect and read
timeouts, so a server that hangs for a while (a paused process) costs a retry,
not the job. A conditional PUT retried after a lost response could find its own
first attempt's object and report "exists": each PUT carries a random writer
token in its metadata, and a 412 on an object bearing our own token is success.
Each failed attempt is logged (naming the object) and counted for `stalled()`,
which the job's status shows while a call waits.

Configuration: boto3's usual chain (environment, ~/.aws/config and credentials,
instance roles; AWS_ENDPOINT_URL too), overridden by the storage options:

    endpoint_url, region (or region_name), profile,
    aws_access_key_id, aws_secret_access_key, aws_session_token,
    connect_timeout, read_timeout (seconds), max_attempts

Secrets are never in the storage's `url` or `repr`, and the errors raised here
are built from the bucket, key and the service's error code, never from the
request. The options are kept in memory to rebuild the client after the storage
is unpickled (a file stream's tasks carry it to worker processes; the live
client is never pickled), so they travel in those in-memory task pickles, and
nowhere else: checkpoints store positions, not storages.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any, BinaryIO, Mapping

from ingest.errors import ConfigError, StorageError
from ingest.install_hint import install_hint
from ingest.storage import FileEntry, RemoteBody, RemoteStorage, register_backend, tracked

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ConfigError(f"s3:// locations need boto3: {install_hint('s3')}") from _exc

log = logging.getLogger("ingest.storage")

OPTIONS = {"endpoint_url", "region", "region_name", "profile", "aws_access_key_id", "aws_secret_access_key",
           "aws_session_token", "connect_timeout", "read_timeout", "max_attempts"}
_WRITER_KEY = "ingest-writer"
_MISSING = {"NoSuchKey", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412"}
# 409: another conditional write on the key was in flight (AWS); one of them won.
_CONFLICT = {"ConditionalRequestConflict", "409"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _HiddenOptions:
    """The storage options (credentials perhaps), shown as a placeholder by
    repr() and str(), so that `vars(storage)` or a debugger prints no secret."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __repr__(self) -> str:
        return "<S3 storage options, not shown>"

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self.values}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.values = state["values"]


class S3Storage(RemoteStorage):
    """Objects under `s3://bucket/prefix/`."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ConfigError(f"unknown S3 storage option(s) {unknown} for {url}; known: {sorted(OPTIONS)}")
        rest = url.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        if "?" in rest or "#" in rest:
            raise ConfigError(f"{url}: S3 locations take no query options; pass them as storage options")
        if not bucket:
            raise ConfigError(f"{url} names no bucket: use s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        # Kept to rebuild the client in another process (see __getstate__); in
        # memory and in task pickles only, never in a repr, log or checkpoint.
        self._options = _HiddenOptions({k: options[k] for k in OPTIONS & set(options)})
        RemoteStorage.__init__(self)
        _ = self._client  # ConfigError now for options boto3 cannot use
        self._check_bucket()

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r})"

    def _make_client(self) -> Any:
        options = self._options.values
        config = Config(
            connect_timeout=float(options.get("connect_timeout", 5)),
            read_timeout=float(options.get("read_timeout", 10)),
            retries={"mode": "standard", "max_attempts": int(options.get("max_attempts", 6))},
        )
        try:
            session = boto3.session.Session(
                profile_name=options.get("profile"),
                aws_access_key_id=options.get("aws_access_key_id"),
                aws_secret_access_key=options.get("aws_secret_access_key"),
                aws_session_token=options.get("aws_session_token"),
                region_name=options.get("region") or options.get("region_name"))
            client = session.client("s3", endpoint_url=options.get("endpoint_url"), config=config)
        except BotoCoreError as exc:
            raise ConfigError(f"cannot configure an S3 client for {self.url}: {type(exc).__name__}") from None
        # boto3 retries inside one call, silently: this handler counts the
        # failed attempts for the status and logs them, naming the object.
        client.meta.events.register("needs-retry.s3", self._on_attempt)
        return client

    def _on_attempt(self, attempts: int | None = None, caught_exception: BaseException | None = None,
                    response: Any = None, **_: Any) -> None:
        if caught_exception is not None:
            error = type(caught_exception).__name__
        elif response is not None and getattr(response[0], "status_code", 0) >= 500:
            error = f"HTTP {response[0].status_code}"
        else:
            return None  # answered; whether boto3 retries it (throttling) is its own business
        self._attempt_failed(error)
        log.warning("%s: attempt %s failed (%s); retried up to max_attempts",
                    self.current_call() or f"a call to {self.url}", attempts, error)
        return None  # leaves the retry decision to boto3's handler

    # A file stream's partition tasks carry the storage to worker processes
    # (cloudpickle): they get the options (RemoteStorage drops the live client,
    # which each process rebuilds on first use).

    # -- helpers

    def _key(self, path: str) -> str:
        path = path.strip("/")
        return "/".join(p for p in (self.prefix, path) if p)

    def _dir_prefix(self, directory: str) -> str:
        key = self._key(directory)
        return f"{key}/" if key else ""

    def describe(self, path: str) -> str:
        return f"s3://{self.bucket}/{self._key(path)}"

    def _error(self, what: str, path: str, exc: Exception) -> StorageError:
        if isinstance(exc, ClientError):
            code = _code(exc)
            hint = {
                "NoSuchBucket": f"bucket {self.bucket!r} does not exist; create it or fix the URL",
                "AccessDenied": "access denied: check the credentials and the bucket's policy",
                "InvalidAccessKeyId": "the access key is not known to the server: check the credentials",
                "SignatureDoesNotMatch": "the secret key does not match the access key: check the credentials",
                "ExpiredToken": "the session token expired: refresh the credentials",
            }.get(code, f"the server answered {code or 'an error'}")
            return StorageError(f"{what} {self.describe(path)} failed: {hint}")
        # Connection refused, timeouts after every retry, ...: the class names the
        # failure without echoing the request.
        return StorageError(f"{what} {self.describe(path)} failed: {type(exc).__name__}: "
                            f"{_safe_text(exc)}; is the S3 endpoint reachable?")

    def _check_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise ConfigError(f"S3 bucket {self.bucket!r} of {self.url} does not exist; create it or fix "
                                  "the URL") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ConfigError(f"access to S3 bucket {self.bucket!r} of {self.url} is denied ({code}): "
                                  "check the credentials and the bucket's policy") from None
            raise self._error("checking the bucket of", "", exc) from None
        except BotoCoreError as exc:
            raise self._error("reaching the bucket of", "", exc) from None

    # -- Storage

    @tracked("reading")
    def read(self, path: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"].read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(2, "no such object", self.describe(path)) from None
            raise self._error("reading", path, exc) from None
        except BotoCoreError as exc:
            raise self._error("reading", path, exc) from None

    @tracked("writing")
    def write_atomic(self, path: str, data: bytes) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("writing", path, exc) from None

    @tracked("writing")
    def write_new(self, path: str, data: bytes) -> None:
        token = uuid.uuid4().hex
        key = self._key(path)
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*",
                                    Metadata={_WRITER_KEY: token})
        except ClientError as exc:
            code = _code(exc)
            if code in _PRECONDITION or code in _CONFLICT:
                if self._written_by(key, token):
                    return  # our own first attempt stored it; its response was lost
                raise FileExistsError(17, "object exists", self.describe(path)) from None
            raise self._error("writing", path, exc) from None
        except BotoCoreError as exc:
            raise self._error("writing", path, exc) from None

    def _written_by(self, key: str, token: str) -> bool:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError):
            return False
        return head.get("Metadata", {}).get(_WRITER_KEY) == token

    @tracked("checking")
    def exists(self, path: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(path))
            return True
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return False
            raise self._error("checking", path, exc) from None
        except BotoCoreError as exc:
            raise self._error("checking", path, exc) from None

    def _pages(self, directory: str, recursive: bool) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._dir_prefix(directory)}
        if not recursive:
            kwargs["Delimiter"] = "/"
        return self._client.get_paginator("list_objects_v2").paginate(**kwargs)

    @tracked("listing")
    def list(self, directory: str) -> list[str]:
        prefix = self._dir_prefix(directory)
        names: set[str] = set()
        try:
            for page in self._pages(directory, recursive=False):
                names.update(o["Key"][len(prefix):] for o in page.get("Contents", ()))
                names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", ()))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("listing", directory, exc) from None
        return sorted(n for n in names if n and not n.startswith("."))

    @tracked("listing")
    def list_entries(self, directory: str, recursive: bool = False) -> list[FileEntry]:
        root = self._dir_prefix("")
        entries: list[FileEntry] = []
        seen_any = False
        try:
            for page in self._pages(directory, recursive):
                seen_any = seen_any or bool(page.get("Contents") or page.get("CommonPrefixes"))
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    if key.endswith("/"):
                        continue  # a "folder" marker written by some tools
                    entries.append(FileEntry(key[len(root):], int(obj["Size"]),
                                             int(obj["LastModified"].timestamp() * 1000)))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("listing", directory, exc) from None
        if not seen_any:
            raise StorageError(f"{self.describe(directory).rstrip('/')}/ does not exist (no object has that prefix); "
                               "check the location, or write a file into it first")
        return sorted(entries, key=lambda e: e.path)

    @tracked("deleting")
    def delete(self, path: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(path))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("deleting", path, exc) from None

    @tracked("reading the size of")
    def size(self, path: str) -> int:
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=self._key(path))["ContentLength"])
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(2, "no such object", self.describe(path)) from None
            raise self._error("reading the size of", path, exc) from None
        except BotoCoreError as exc:
            raise self._error("reading the size of", path, exc) from None

    @tracked("opening")
    def open_read(self, path: str, start: int = 0, end: int | None = None) -> BinaryIO:
        if end is not None and end <= start:
            return io.BytesIO(b"")  # type: ignore[return-value]
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(path)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            body = self._client.get_object(**kwargs)["Body"]
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise FileNotFoundError(2, "no such object", self.describe(path)) from None
            if _code(exc) in ("InvalidRange", "416"):
                return io.BytesIO(b"")  # type: ignore[return-value]  # start at or past the end
            raise self._error("reading", path, exc) from None
        except BotoCoreError as exc:
            raise self._error("reading", path, exc) from None
        reader = RemoteBody(body.read, body.close, self.describe(path), (BotoCoreError, OSError))
        return io.BufferedReader(reader, buffer_size=1 << 20)  # type: ignore[return-value]


def _safe_text(exc: Exception) -> str:
    """botocore's connection errors name the endpoint URL, which carries no
    secret (credentials travel in signed headers); keep the message short."""
    return str(exc).splitlines()[0][:300]


register_backend("s3", S3Storage)
