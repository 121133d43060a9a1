"""Group commits off the caller's thread: bounded, newest offsets first.

The direct stream acknowledges a committed batch by committing its `until`
offsets to the consumer group, for lag tools only (its positions live in the
checkpoint). That commit must never hold up the scheduler: `submit()` only
records the offsets and returns; one thread, started on the first submit and
joined by `close()`, commits whatever is newest (a later batch's offsets
replace an earlier one's that was not sent yet). The thread ends when nothing
is left to send, so an idle stream holds no thread. Every commit is bounded by
the client's timeout; a failure is a warning, and its offsets stay pending
(unless newer ones came) so the next commit catches up.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping

TP = tuple[str, int]


class GroupCommitter:
    def __init__(self, what: str, commit: Callable[[Mapping[TP, int]], None], logger: logging.Logger) -> None:
        self.what = what
        self._commit = commit
        self._log = logger
        self._cond = threading.Condition()
        self._pending: dict[TP, int] = {}
        self._retry: dict[TP, int] = {}  # offsets of a failed commit, sent with the next submit
        self._busy = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self.commits = 0
        self.failures = 0

    def submit(self, offsets: Mapping[TP, int]) -> None:
        with self._cond:
            if self._closing:
                return
            self._pending = {**self._retry, **self._pending, **offsets}
            self._retry = {}
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"group-commit {self.what}")
                self._thread.start()  # it clears self._thread under the lock when it ends
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait until every submitted commit was tried; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Let the thread send what is pending (one bounded attempt), then join it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    self._thread = None
                    self._cond.notify_all()
                    return
                offsets, self._pending = self._pending, {}
                self._busy = True
            ok = False
            try:
                self._commit(offsets)
                ok = True
            except Exception as exc:  # noqa: BLE001 - a failed commit is a warning, never the thread's end
                self._log.warning("%s: committing offsets to the group failed (%s: %s); the next commit "
                                  "catches up", self.what, type(exc).__name__, exc)
            with self._cond:
                self._busy = False
                if ok:
                    self.commits += 1
                else:
                    self.failures += 1
                    self._retry = {tp: o for tp, o in offsets.items() if tp not in self._pending}
                self._cond.notify_all()
