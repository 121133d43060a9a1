"""The `Receiver` API: how data from push and pull sources enters a stream.

Subclass `Receiver`, implement `on_start()` (start the receiving loop with
`start_thread`; must not block) and `on_stop()` (make the loop return, e.g.
close its connection; must not block for long), and call from the loop:

- `store(item)`: buffered and rate-limited; the record is cut into a block
  within one block interval. Returns before the record is durable: a crash can
  lose what is buffered. Use it for sources that cannot be acknowledged.
- `store_batch(items, metadata=None)`: returns only once the block is stored
  (in the write-ahead log when it is on) and tracked; only then acknowledge
  the source. `metadata` is plain data such as source offsets.
- `restart(message, error=None, delay=None)`: stop and start again after a
  delay (asynchronous; the supervisor backs off on repeated restarts).
- `report_error(message, error=None)`: tell listeners, keep running.
- `stop(message, error=None)`: stop for good; with an error, the job stops
  with that error.

`start_thread(target, name=...)` is the supervised way to run a receiving
loop: the supervisor owns the thread and joins it after `on_stop()`; if
`target` raises, the receiver is restarted with backoff, and after
`max_consecutive_failures` failed restarts in a row (a `receiver_stream`
option) the job stops with a `ReceiverError`. The loop should return when
`stop_event` is set.

During a graceful stop the receiver keeps storing until `on_stop()` returned
and its threads ended (what it stores is processed by the remaining batches);
after that, `store` and `store_batch` raise `StateError`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, TypeVar

from ingest.errors import StateError

if TYPE_CHECKING:
    from receivers.supervisor import ReceiverSupervisor

T = TypeVar("T")


class Receiver(Generic[T]):
    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._supervisor: "ReceiverSupervisor | None" = None

    # -- on a Dask cluster ----------------------------------------------------------

    @property
    def preferred_location(self) -> str | None:
        """The Dask worker (its address, or a host name or IP that workers run
        on) this receiver should run on, e.g. the host its source pushes to;
        None lets the driver spread receivers evenly. Another worker runs it
        when none matches or the preferred one died."""
        return None

    # -- to implement ------------------------------------------------------------

    def on_start(self) -> None:
        """Start receiving: open connections and start threads, then return."""
        raise NotImplementedError

    def on_stop(self) -> None:
        """Stop receiving: close connections and join the threads on_start started."""
        raise NotImplementedError

    # -- to call -----------------------------------------------------------------------

    @property
    def supervisor(self) -> "ReceiverSupervisor":
        if self._supervisor is None:
            raise StateError(f"receiver {self.name} is not attached to a stream: pass it to "
                             "ssc.receiver_stream(receiver) and start the context")
        return self._supervisor

    @property
    def stream_name(self) -> str:
        return self.supervisor.stream

    def store(self, item: T) -> None:
        """Buffer one record (rate-limited); `StateError` once the receiver is stopped."""
        self.supervisor.push_single(item)

    def store_batch(self, items: Iterable[T], metadata: Mapping[str, Any] | None = None) -> str:
        """Store `items` as one block; returns its block id once durable.
        `StateError` once the receiver is stopped."""
        return self.supervisor.push_block(list(items), metadata)

    def restart(self, message: str, error: BaseException | None = None, delay: float | None = None) -> None:
        self.supervisor.restart(message, error, delay)

    def report_error(self, message: str, error: BaseException | None = None) -> None:
        self.supervisor.report_error(message, error)

    def stop(self, message: str, error: BaseException | None = None) -> None:
        self.supervisor.stop_from_receiver(message, error)

    def start_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """Run `target` (the receiving loop) on a thread owned by the supervisor.

        The supervisor joins it after `on_stop()` (joining it in `on_stop`
        too is harmless). If `target` raises while the receiver runs, the
        receiver is restarted with backoff, and the job stops with a
        `ReceiverError` after `max_consecutive_failures` consecutive failed
        restarts; a `StorageError` (received records could not be stored)
        stops the job at once. If it raises after a stop began, the error is logged and
        reported to listeners, and during a graceful stop it becomes the
        job's error. `target` should return when `stop_event` is set."""
        return self.supervisor.start_receiving_thread(target, name)

    @property
    def reliable_storage(self) -> bool:
        """True when the write-ahead log is on: `store_batch` returns only once
        the block is durable, so it is safe to acknowledge the source then."""
        return self.supervisor.reliable

    def recovered_metadata(self) -> list[Any]:
        """Metadata of the blocks found in the write-ahead log at start: the
        source positions already durable, to resume after them."""
        return self.supervisor.recovered_metadata()

    def metrics(self) -> dict[str, Any]:
        """This receiver's counters as plain data (records received, input
        skipped, reconnects...). Override it to publish your own."""
        return {}

    def is_started(self) -> bool:
        return self._supervisor is not None and self._supervisor.receiver_running

    def is_stopped(self) -> bool:
        return self._supervisor is None or not self._supervisor.receiver_running

    @property
    def stop_event(self) -> threading.Event:
        """Set when the receiver should stop: receiving threads can wait on it."""
        return self.supervisor.receiver_stop_event
