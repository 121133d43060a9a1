"""Backpressure for a receiver on a Dask worker: `max_unprocessed_records`
applied where the records are stored, with the count kept by the driver.

In a local job the input stream blocks `store()` while it holds
`max_unprocessed_records` records that no committed batch has processed yet.
On a cluster the store runs on the receiver's worker and the count lives in
the driver, a scheduler hop away, so the two sides share it in a form that
lag cannot make wrong:

- both count in the driver's scale: `admitted`, the records the driver has
  tracked (or will, once the blocks on their way arrive), and `processed`,
  the records the driver no longer counts as unprocessed. The driver's count
  is `admitted - processed`. `processed` only grows (committed batches add
  to it), so the driver can publish it as a single number that is never
  stale in the unsafe direction;
- the driver publishes `processed` in a `distributed.Variable` of the run
  (`UnprocessedCount`, from its supervision thread, never from the batch
  thread), and a run starts from the driver's `admitted` and `processed`;
- the worker (`UnprocessedGate`) adds each block's records to its own
  `admitted` before storing it, and waits while `admitted - processed` is at
  the limit, reading the variable again every `POLL_S`. Its `admitted` is
  never below the driver's and its `processed` never above it, so its
  estimate is never below the driver's count: the driver never holds more
  than the limit plus one block.

Why a variable rather than a message per commit: a message to a run that is
not registered yet (a restart in progress) would be lost and leave the gate
shut for good; a variable read finds the latest value whenever it looks.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("receivers.worker_backpressure")

POLL_S = 0.1


@dataclass(frozen=True)
class Backpressure:
    """What a run needs to apply `max_unprocessed_records`: the limit, the
    driver's counts when the run was launched, and the name of the variable
    where the driver publishes its processed count."""

    max_unprocessed_records: int
    stored: int
    processed: int
    variable: str


class UnprocessedGate:
    """The worker's side: blocks a store while the driver's count of
    unprocessed records (as far as this worker can know it) is at the limit."""

    def __init__(self, stream: str, settings: Backpressure, client: Any, stop: threading.Event) -> None:
        self.stream = stream
        self.limit = settings.max_unprocessed_records
        self._admitted = settings.stored
        self._processed = settings.processed
        self._variable_name = settings.variable
        self._client = client
        self._stop = stop
        self._variable: Any = None
        self._lock = threading.Lock()  # one store at a time counts and waits (as the local store's condition)
        self.waits = 0
        """Stores that had to wait for a batch to commit (for the logs and tests)."""

    def admit(self, records: int) -> None:
        """Return once `records` more may be stored; they count from then on.
        A stop of the run opens the gate (as in a local job, where a stopping
        receiver's last blocks are stored without waiting)."""
        with self._lock:
            waited = False
            while self._admitted - self._processed >= self.limit and not self._stop.is_set():
                if not waited:
                    waited = True
                    self.waits += 1
                    log.debug("stream %s: %d records unprocessed (max_unprocessed_records=%d); the receiver "
                              "waits for a batch to commit", self.stream, self._admitted - self._processed,
                              self.limit)
                if self._stop.wait(POLL_S):
                    break
                self._refresh()
            self._admitted += records

    def _refresh(self) -> None:
        from distributed import Variable

        if self._variable is None:
            self._variable = Variable(self._variable_name, client=self._client)
        try:
            value = self._variable.get(timeout=POLL_S)
        except Exception as exc:  # noqa: BLE001 - not published yet, or the scheduler is slow: look again
            log.debug("stream %s: reading the driver's processed count failed: %s", self.stream, exc)
            return
        self._processed = max(self._processed, int(value))


class UnprocessedCount:
    """The driver's side: publishes the stream's `processed` count for the
    run's gate, when it changed (called from the supervision thread)."""

    def __init__(self, name: str, client: Any) -> None:
        from distributed import Variable

        self.name = name
        self._variable = Variable(name, client=client)
        self._published: int | None = None

    def publish(self, processed: int) -> None:
        if processed != self._published:
            self._variable.set(processed)
            self._published = processed

    def delete(self) -> None:
        try:
            self._variable.delete()
        except Exception as exc:  # noqa: BLE001 - the scheduler went away: nothing left to delete
            log.debug("deleting variable %s failed: %s", self.name, exc)
