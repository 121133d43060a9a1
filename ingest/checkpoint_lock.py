"""The single-writer lock of a checkpoint directory.

Two live contexts writing one checkpoint would interleave intents and commits
and delete each other's files. So a context takes `<dir>/lock` when it starts:
the file is created exclusively (`Storage.write_new`) and holds its owner
(host, pid, a random token) and an epoch, one more than any before it; the
epoch is also recorded in the checkpoint's metadata, so every start of a job
on the directory has its own number.

- A lock whose owner is alive (or on another host, where this process cannot
  tell) makes `start()` refuse with a `CheckpointError` naming the holder.
- A lock whose owner was a process on this host that no longer exists (it was
  killed) is taken over, with a warning.
- The lock is deleted when the context stops (only if it is still this
  context's: the token is checked first).

Taking over a stale lock reads it again just before deleting it, so two
contexts starting at once over one dead owner's lock do not both win: the
slower one finds the faster one's live lock and refuses.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ingest.errors import CheckpointError, CorruptRecordError
from ingest.storage import Storage
from offsets.records import RecordCodec

log = logging.getLogger("ingest.checkpoint")

LOCK = "lock"
_CODEC = RecordCodec()


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    epoch: int
    token: str
    started_at: float

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        return f"process {self.pid} on host {self.host!r} (epoch {self.epoch}, since {since})"

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "epoch": self.epoch, "token": self.token,
                "started_at": self.started_at}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class CheckpointLock:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.owner: LockOwner | None = None

    @property
    def where(self) -> str:
        return self.storage.describe(LOCK)

    def read(self) -> LockOwner | None:
        """The current holder, or None if there is no lock file."""
        try:
            data = self.storage.read(LOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"{self.where} cannot be read ({exc.strerror or exc}); if no job uses this "
                                  "checkpoint, delete it") from None
        try:
            d = _CODEC.decode_meta(data, self.where, kind="lock")
            return LockOwner(str(d["host"]), int(d["pid"]), int(d["epoch"]), str(d["token"]),
                             float(d["started_at"]))
        except (KeyError, TypeError, ValueError, CorruptRecordError) as exc:
            raise CheckpointError(f"{self.where} is not a readable lock ({exc}); if no job uses this "
                                  "checkpoint, delete it and start again") from None

    def _stale(self, holder: LockOwner) -> bool:
        return holder.host == socket.gethostname() and not _pid_alive(holder.pid)

    def acquire(self, last_epoch: int) -> LockOwner:
        """Take the lock (see the module's docstring); `last_epoch` is the
        epoch the metadata records. Returns this context's owner entry."""
        epoch = last_epoch
        for _ in range(5):
            owner = LockOwner(socket.gethostname(), os.getpid(), epoch + 1, uuid.uuid4().hex, time.time())
            try:
                self.storage.write_new(LOCK, _CODEC.encode_meta(owner.to_json(), kind="lock"))
            except FileExistsError:
                pass
            else:
                self.owner = owner
                return owner
            holder = self.read()
            if holder is None:
                continue  # released in between: try again
            epoch = max(epoch, holder.epoch)
            if not self._stale(holder):
                raise CheckpointError(
                    f"checkpoint {self.storage.url} is in use by {holder.describe()} (lock file "
                    f"{self.where}); two contexts must not write one checkpoint. Stop that job first or use "
                    "another checkpoint directory; if that process is gone (it ran on another host, or its "
                    "pid was reused), delete the lock file")
            log.warning("%s: taking over the lock of %s, which no longer exists (it did not stop cleanly)",
                        self.where, holder.describe())
            if self.read() == holder:
                self.storage.delete(LOCK)
        raise CheckpointError(f"could not take the lock {self.where}: other contexts keep taking it")

    def release(self) -> None:
        """Delete the lock if this context still holds it."""
        owner, self.owner = self.owner, None
        if owner is None:
            return
        try:
            holder = self.read()
        except CheckpointError as exc:
            log.warning("not releasing %s: %s", self.where, exc)
            return
        if holder is not None and holder.token == owner.token:
            self.storage.delete(LOCK)
        else:
            log.warning("%s is no longer this context's lock (now %s); left as it is", self.where,
                        holder.describe() if holder else "none")
