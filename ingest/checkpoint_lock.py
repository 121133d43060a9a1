"""The single-writer lock of a checkpoint directory.

Two live contexts writing one checkpoint would interleave intents and commits
and delete each other's files. So a context takes `<dir>/lock` when it starts:
the file is created exclusively (`Storage.write_new`) and holds its owner
(host, pid, a random token) and an epoch, one more than any before it; the
epoch is also recorded in the checkpoint's metadata, so every start of a job
on the directory has its own number.

- The lock is a lease: it records when it expires (`lease_seconds` after its
  last renewal), and a thread owned by the lock renews it every third of that
  while the context runs.
- A lock whose owner is alive (or on another host, where this process cannot
  tell) and whose lease has not expired makes `start()` refuse with a
  `CheckpointError` naming the holder.
- A lock whose lease expired is taken over, with a warning: its holder died
  (SIGKILL) or lost the storage for a whole lease. On local disk, a lock whose
  owner was a process on this host that no longer exists is taken over at
  once; remote storage (HDFS, S3) is shared by hosts and containers where a
  host name and a pid do not identify a process, so there only expiry counts.
  Expiry compares the lease with this host's clock: hosts sharing a checkpoint
  need clocks in step to well within a lease (NTP does that).
- A renewal that finds another token in the lock, or that could not reach the
  storage before the lease ran out, marks the lease lost: `check()` then
  raises, and the checkpoint refuses to write another intent or commit.
- The lock is deleted when the context stops (only if it is still this
  context's: the token is checked first).

Taking over a stale lock reads it again just before deleting it, so two
contexts starting at once over one dead owner's lock do not both win: the
slower one finds the faster one's live lock and refuses. That read and the
delete are two calls, not one atomic step (neither WebHDFS nor S3 offers a
conditional delete everywhere), so two contexts taking over the same expired
lease in the same instant could both get through; the create-only intents and
commits are the second layer: of two such writers, one stops at its first
intent or commit that the other wrote.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ingest.errors import CheckpointError, CorruptRecordError
from ingest.storage import LocalStorage, Storage
from offsets.records import RecordCodec

log = logging.getLogger("ingest.checkpoint")

LOCK = "lock"
DEFAULT_LEASE_SECONDS = 30.0
_CODEC = RecordCodec()


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    epoch: int
    token: str
    started_at: float
    expires_at: float | None = None
    """End of the lease (epoch seconds); None in locks of releases without leases: never expires."""

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at))
        lease = ""
        if self.expires_at is not None:
            lease = ", lease until " + time.strftime("%H:%M:%S", time.localtime(self.expires_at))
        return f"process {self.pid} on host {self.host!r} (epoch {self.epoch}, since {since}{lease})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host": self.host, "pid": self.pid, "epoch": self.epoch, "token": self.token,
                               "started_at": self.started_at}
        if self.expires_at is not None:
            out["expires_at"] = self.expires_at
        return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class CheckpointLock:
    def __init__(self, storage: Storage, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        if not lease_seconds > 0:
            raise CheckpointError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self.storage = storage
        self.lease_seconds = float(lease_seconds)
        self.owner: LockOwner | None = None
        self.lost: str | None = None
        """Why this context no longer holds the lease (None while it does)."""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

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
            expires = d.get("expires_at")
            return LockOwner(str(d["host"]), int(d["pid"]), int(d["epoch"]), str(d["token"]),
                             float(d["started_at"]), None if expires is None else float(expires))
        except (KeyError, TypeError, ValueError, CorruptRecordError) as exc:
            raise CheckpointError(f"{self.where} is not a readable lock ({exc}); if no job uses this "
                                  "checkpoint, delete it and start again") from None

    def _stale(self, holder: LockOwner) -> str | None:
        """Why `holder`'s lock may be taken over, or None if it may not."""
        if isinstance(self.storage, LocalStorage) and holder.host == socket.gethostname() \
                and not _pid_alive(holder.pid):
            return "which no longer exists (it did not stop cleanly)"
        if holder.expires_at is not None and time.time() > holder.expires_at:
            return (f"whose lease expired {time.time() - holder.expires_at:.1f} s ago (it was killed, or lost "
                    "the storage)")
        return None

    def acquire(self, last_epoch: int) -> LockOwner:
        """Take the lock (see the module's docstring); `last_epoch` is the
        epoch the metadata records. Returns this context's owner entry."""
        epoch = last_epoch
        for _ in range(5):
            now = time.time()
            owner = LockOwner(socket.gethostname(), os.getpid(), epoch + 1, uuid.uuid4().hex, now,
                              now + self.lease_seconds)
            try:
                self.storage.write_new(LOCK, _CODEC.encode_meta(owner.to_json(), kind="lock"))
            except FileExistsError:
                pass
            else:
                self.owner = owner
                self.lost = None
                self._start_renewer()
                return owner
            holder = self.read()
            if holder is None:
                continue  # released in between: try again
            epoch = max(epoch, holder.epoch)
            why = self._stale(holder)
            if why is None:
                lease = ""
                if holder.expires_at is not None:
                    lease = (f"; its lease is renewed while it runs and is taken over {self.lease_seconds:.0f} s "
                             "or so after it stops renewing")
                raise CheckpointError(
                    f"checkpoint {self.storage.url} is in use by {holder.describe()} (lock file "
                    f"{self.where}); two contexts must not write one checkpoint. Stop that job first or use "
                    f"another checkpoint directory{lease}; if that process is gone (it ran on another host, or "
                    "its pid was reused), delete the lock file")
            log.warning("%s: taking over the lock of %s, %s", self.where, holder.describe(), why)
            if self.read() == holder:
                self.storage.delete(LOCK)
        raise CheckpointError(f"could not take the lock {self.where}: other contexts keep taking it")

    # -- the lease ----------------------------------------------------------------------

    def _start_renewer(self) -> None:
        self._stop.clear()
        # Owned by this lock and joined by release(); a daemon only so that a job
        # that dies without stopping its context is not kept alive renewing a
        # lease it no longer uses. Its failures reach the context through check().
        self._renewer = threading.Thread(target=self._renew_loop, name="checkpoint-lease", daemon=True)
        self._renewer.start()

    def _stop_renewer(self) -> None:
        thread, self._renewer = self._renewer, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            owner = self.owner
            if owner is None or self.lost is not None:
                return
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the storage may be away for a while; try again
                if owner.expires_at is not None and time.time() > owner.expires_at:
                    self.lost = (f"the lease {self.where} could not be renewed before it expired ({exc}); "
                                 "another context may have taken the checkpoint over")
                    log.error("%s", self.lost)
                    return
                log.warning("renewing the lease %s failed (%s); retrying", self.where, exc)

    def renew(self) -> None:
        """Extend this context's lease; marks it lost if another context holds the lock now."""
        owner = self.owner
        if owner is None:
            return
        holder = self.read()
        if holder is None or holder.token != owner.token:
            self.lost = (f"the lock {self.where} now belongs to "
                         f"{holder.describe() if holder else 'no one'}: this context's lease ran out and was "
                         "taken over")
            log.error("%s", self.lost)
            return
        renewed = LockOwner(owner.host, owner.pid, owner.epoch, owner.token, owner.started_at,
                            time.time() + self.lease_seconds)
        self.storage.write_atomic(LOCK, _CODEC.encode_meta(renewed.to_json(), kind="lock"))
        self.owner = renewed

    def check(self) -> None:
        """Raise CheckpointError if this context lost its lease (another may write now)."""
        if self.lost is not None:
            raise CheckpointError(f"this context no longer holds checkpoint {self.storage.url}: {self.lost}. "
                                  "It stops writing; restart the job once the other context is gone")

    def release(self) -> None:
        """Delete the lock if this context still holds it."""
        self._stop_renewer()
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
