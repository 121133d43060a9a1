"""The `Receiver` API: how data from push and pull sources enters a stream.

Subclass `Receiver`, implement `on_start()` (start your own threads; must not
block) and `on_stop()` (stop and join them; must not block for long), and call
from your threads:

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
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Generic, Iterable, Mapping, TypeVar

from ingest.errors import StateError

if TYPE_CHECKING:
    from receivers.supervisor import ReceiverSupervisor

T = TypeVar("T")


class Receiver(Generic[T]):
    def __init__(self, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._supervisor: "ReceiverSupervisor | None" = None

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
        self.supervisor.push_single(item)

    def store_batch(self, items: Iterable[T], metadata: Mapping[str, Any] | None = None) -> str:
        """Store `items` as one block; returns its block id once durable."""
        return self.supervisor.push_block(list(items), metadata)

    def restart(self, message: str, error: BaseException | None = None, delay: float | None = None) -> None:
        self.supervisor.restart(message, error, delay)

    def report_error(self, message: str, error: BaseException | None = None) -> None:
        self.supervisor.report_error(message, error)

    def stop(self, message: str, error: BaseException | None = None) -> None:
        self.supervisor.stop_from_receiver(message, error)

    def start_thread(self, target: Any, name: str) -> threading.Thread:
        """Start a receiving thread. If `target` raises, the receiver is stopped
        with that error (and so is the job): a receiving thread never dies
        unnoticed. Join it in `on_stop`."""

        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported, never swallowed
                if not self.supervisor.receiver_stop_event.is_set():
                    self.stop(f"receiving thread {name} failed", exc)

        thread = threading.Thread(target=guarded, name=name)
        thread.start()
        return thread

    @property
    def reliable_storage(self) -> bool:
        """True when the write-ahead log is on: `store_batch` returns only once
        the block is durable, so it is safe to acknowledge the source then."""
        return self.supervisor.reliable

    def recovered_metadata(self) -> list[Any]:
        """Metadata of the blocks found in the write-ahead log at start: the
        source positions already durable, to resume after them."""
        return self.supervisor.recovered_metadata()

    def is_started(self) -> bool:
        return self._supervisor is not None and self._supervisor.receiver_running

    def is_stopped(self) -> bool:
        return self._supervisor is None or not self._supervisor.receiver_running

    @property
    def stop_event(self) -> threading.Event:
        """Set when the receiver should stop: receiving threads can wait on it."""
        return self.supervisor.receiver_stop_event
