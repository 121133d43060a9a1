"""The receiver supervisor: runs one receiver, stores what it receives, and
restarts it when it fails.

It owns the receiver's block generator, the restart thread and the receiving
threads started with `Receiver.start_thread`, and joins them all. Restarts
back off: the delay doubles on every restart that follows a short run (up to
`max_restart_delay`) and resets after the receiver ran well for a while
(`backoff_reset_after`, measured on the context's clock). A failure (on_start
raising, or a receiving thread raising anything but a `StorageError`, which
stops the job at once: received data could not be stored) counts towards
`max_consecutive_failures`: one more failure in a row than that stops the job
with a `ReceiverError`; a run that lasted `backoff_reset_after` starts the count
again. A restart the receiver asks for itself (`restart()`) backs off but is not
counted: the receiver knows the cause is transient.

Every start, error and stop is posted to the context's listeners. A receiver
that stops itself with an error, or a block that cannot be stored, stops the
job: data is never dropped silently. Stopping: the receiver keeps storing until
`on_stop()` returned and its receiving threads ended; only then are `store`
and `store_batch` refused with a `StateError`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ConfigError, ReceiverError, StateError, StorageError
from ingest.listener import ReceiverStarted, ReceiverStopped
from receivers.block import Block, BlockInfo
from receivers.block_generator import BlockGenerator
from receivers.rate_limiter import RateLimiter
from receivers.supervision import ReceiverSupervision

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from receivers.receiver import Receiver

log = logging.getLogger("receivers.supervisor")


class ReceiverSupervisor(ReceiverSupervision):
    def __init__(
        self,
        ssc: "StreamingContext",
        stream: str,
        receiver: "Receiver[Any]",
        store_block: Callable[[Block], BlockInfo],
        *,
        max_rate: float | None = None,
        max_buffered_records: int = 10_000,
        max_queued_blocks: int = 10,
        restart_delay: float = 2.0,
        max_restart_delay: float = 30.0,
        backoff_reset_after: float = 30.0,
        max_consecutive_failures: int = 5,
        thread_join_timeout: float = 10.0,
        owner: Any = None,
    ) -> None:
        if isinstance(max_consecutive_failures, bool) or not isinstance(max_consecutive_failures, int) \
                or max_consecutive_failures < 0:
            raise ConfigError(f"max_consecutive_failures must be an integer >= 0 (restarts tried before the job "
                              f"stops), got {max_consecutive_failures!r}")
        super().__init__(ssc, stream, receiver)
        self._owner = owner
        self._store_block = store_block
        self.rate_limiter = RateLimiter(max_rate)
        self.generator = BlockGenerator(
            stream, ssc.block_interval_ms, self._push_generated, self._on_store_failure,
            max_buffered_records=max_buffered_records, max_queued_blocks=max_queued_blocks,
            rate_limiter=self.rate_limiter)
        self._base_delay = restart_delay
        self._max_delay = max_restart_delay
        self._reset_after = backoff_reset_after
        self._next_delay = restart_delay
        self._max_failures = max_consecutive_failures
        self._join_timeout = thread_join_timeout
        self._lock = threading.RLock()
        self._state = "initialized"
        self.receiver_stop_event = threading.Event()
        self._graceful = True  # of that stop
        # Set once the receiver stopped for good (on_stop returned, its threads
        # ended): from then on store() and store_batch() are refused.
        self._closed = threading.Event()
        self._receiving: list[threading.Thread] = []  # started by Receiver.start_thread
        # A restart is pending from the request until the receiver is being
        # started again; further requests meanwhile are the same failure.
        self._restart_pending = False
        self._threads: list[threading.Thread] = []  # restart and stop threads, joined in stop()
        self._started_at = 0.0
        self.consecutive_failures = 0

    @property
    def reliable(self) -> bool:
        """True when push_block writes to the write-ahead log before returning."""
        return bool(getattr(self._owner, "reliable", False))

    def recovered_metadata(self) -> list[Any]:
        return self._owner.recovered_metadata() if self._owner is not None else []

    # -- lifecycle --------------------------------------------------------------------

    def _now(self) -> float:
        """Seconds on the context's clock: how long a run lasted is job time
        (a `ManualClock` makes it exact in tests)."""
        return self._ssc.clock.now_ms() / 1000.0

    def start(self) -> None:
        with self._lock:
            self._state = "started"
        self.receiver._supervisor = self
        self.generator.start()
        self._start_receiver()

    def _start_receiver(self) -> bool:
        with self._lock:
            if self._state != "started":
                return False
            self.receiver_stop_event = threading.Event()
            self.receiver_running = True
            self._started_at = self._now()
        try:
            self.receiver.on_start()
        except Exception as exc:  # noqa: BLE001
            self.receiver_running = False
            self.restart(f"could not start: {type(exc).__name__}: {exc}", exc, failure=True)
            return False
        self._ssc._bus.post(ReceiverStarted(self._info()))
        return True

    def _stop_receiver(self, timeout: float | None = None) -> None:
        """Stop the current run: set its stop event, call on_stop(), join its threads."""
        with self._lock:
            running = self.receiver_running
            self.receiver_running = False
            self.receiver_stop_event.set()
        if running:
            try:
                self.receiver.on_stop()
            except Exception as exc:  # noqa: BLE001
                log.exception("stream %s: %s.on_stop() failed", self.stream, self.receiver.name)
                self.report_error(f"on_stop() failed: {type(exc).__name__}: {exc}", exc)
        self._join_receiving_threads(self._join_timeout if timeout is None else timeout)

    def _join_receiving_threads(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = [t for t in self._receiving if t is not threading.current_thread()]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("stream %s: receiving thread %s of %s did not end within %.1f s after on_stop(); "
                            "its loop must return once stop_event is set", self.stream, thread.name,
                            self.receiver.name, timeout)
        with self._lock:
            self._receiving = [t for t in self._receiving if t.is_alive()]

    def stop(self, graceful: bool, timeout: float | None = 10.0) -> None:
        """Stop the receiver and its block generator. Graceful: everything
        buffered is cut into blocks and stored before this returns. With the
        write-ahead log on, buffered blocks are stored even when not graceful:
        in the log they are kept for the next start."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
            self._graceful = graceful
        self._stopped.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join(_left(deadline))
            self._stop_receiver(self._join_timeout if deadline is None else _left(deadline))
        finally:
            self._closed.set()
            # Whatever happened above, the generator's threads must not outlive the job.
            self.generator.stop(drain=graceful or self.reliable, timeout=_left(deadline))
        self._ssc._bus.post(ReceiverStopped(self._info()))

    @property
    def records_dropped(self) -> int:
        """Records given to `store()` that were never stored (stop timed out or not graceful)."""
        return self.generator.records_dropped

    # -- called by the receiver ----------------------------------------------------

    def start_receiving_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        with self._lock:
            if self._closed.is_set():
                raise StateError(f"stream {self.stream}: start_thread({name!r}) called after receiver "
                                 f"{self.receiver.name} was stopped")
            generation = self.receiver_stop_event

            def supervised() -> None:
                try:
                    target()
                except BaseException as exc:  # noqa: BLE001 - a receiving thread never dies unnoticed
                    self._receiving_thread_failed(name, generation, exc)

            thread = threading.Thread(target=supervised, name=name)
            thread.start()
            self._receiving = [t for t in self._receiving if t.is_alive()] + [thread]
        return thread

    def _receiving_thread_failed(self, name: str, generation: threading.Event, exc: BaseException) -> None:
        what = f"receiving thread {name} failed: {type(exc).__name__}: {exc}"
        if self._stopped.is_set() or self._ssc.state in ("stopping", "stopped"):  # no restart now
            log.error("stream %s: %s while the receiver was stopping", self.stream, what, exc_info=exc)
            self.report_error(f"{what} while the receiver was stopping", exc)
            if self._graceful:
                # A graceful stop promises that what was received is processed:
                # a loop that died on the way may have lost what it held.
                self._ssc._on_fatal(ReceiverError(
                    f"receiver {self.receiver.name} of stream {self.stream}: {what} during a graceful stop; "
                    "records it was handling may be lost. A receiving loop should return once stop_event "
                    "is set rather than raise"))
            return
        if generation.is_set():  # this run was already being stopped (restart, or stop() by the receiver)
            log.error("stream %s: %s after the receiver was asked to stop", self.stream, what, exc_info=exc)
            self.report_error(f"{what} after the receiver was asked to stop", exc)
            return
        log.error("stream %s: %s", self.stream, what, exc_info=exc)
        if isinstance(exc, StorageError):
            # The block store refused received data: a restart would not make it
            # storable, and received data is never dropped silently.
            self.stop_from_receiver(f"receiving thread {name}: received records cannot be stored", exc)
            return
        self.restart(what, exc, failure=True)

    def push_single(self, item: Any) -> None:
        self.generator.add(item)

    def _refuse(self, call: str) -> StateError:
        return StateError(f"stream {self.stream}: {call} called after receiver {self.receiver.name} was stopped; "
                          "a receiving loop must return once stop_event is set (start it with start_thread, "
                          "or join it in on_stop)")

    def push_block(self, records: list[Any], metadata: Mapping[str, Any] | None) -> str:
        if self._closed.is_set() or not self.rate_limiter.acquire(len(records), self._closed.is_set):
            raise self._refuse("store_batch()")
        block = Block(self.generator.new_block_id(), records, metadata)
        self._store_block(block)
        return block.block_id

    def _push_generated(self, block: Block) -> None:
        self._store_block(block)

    def restart(self, message: str, error: BaseException | None = None, delay: float | None = None, *,
                failure: bool = False) -> None:
        """Stop the receiver and start it again after a delay. `failure`: the
        receiver failed (rather than asked for the restart itself), which
        counts towards `max_consecutive_failures`."""
        give_up = False
        with self._lock:
            if self._state != "started" or self._restart_pending:
                return
            self._restart_pending = True
            ran_for = self._now() - self._started_at
            if failure:
                self.consecutive_failures = 1 if ran_for >= self._reset_after else self.consecutive_failures + 1
                give_up = self.consecutive_failures > self._max_failures
            if not give_up:
                if delay is None:
                    delay = self._base_delay if ran_for >= self._reset_after else self._next_delay
                    self._next_delay = min(self._max_delay, max(self._base_delay, delay * 2))
                self.restarts += 1
            restarts, failures = self.restarts, self.consecutive_failures
        if give_up:
            # _restart_pending stays set: no restart from now on; the job stops.
            self.report_error(f"{message}; not restarting: {failures} failures in a row", error)
            self._ssc._on_fatal(ReceiverError(
                f"receiver {self.receiver.name} of stream {self.stream} failed {failures} times in a row "
                f"({self._max_failures} restarts tried, max_consecutive_failures={self._max_failures}); last: "
                f"{message}. Fix the cause, or allow more restarts with "
                "receiver_stream(..., max_consecutive_failures=N)"))
            return
        self.report_error(f"{message}; restarting in {delay:.1f} s (restart #{restarts})", error)
        with self._lock:
            if self._state == "started":  # else stop() came first and stops the receiver itself
                self._start_thread(self._restart, (delay,), f"receiver-restart-{self.stream}")

    def _start_thread(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        """Start a thread of ours and remember it, so that stop() joins it.

        Call with the lock held: stop() takes the list under the lock, so it
        never sees a thread that is not started yet (join() would raise)."""
        thread = threading.Thread(target=target, args=args, name=name)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _restart(self, delay: float) -> None:
        self._stop_receiver()
        if self._stopped.wait(delay):
            return
        # From here a failure is a new one, even while this thread is still
        # finishing (on_start may fail, or the receiver's own thread may fail
        # before this one has posted ReceiverStarted).
        with self._lock:
            self._restart_pending = False
        self._start_receiver()

    def stop_from_receiver(self, message: str, error: BaseException | None) -> None:
        if error is not None:
            self.report_error(message, error)
            self._ssc._on_fatal(ReceiverError(
                f"receiver {self.receiver.name} of stream {self.stream} stopped: {message}: "
                f"{type(error).__name__}: {error}"))
            return
        log.info("stream %s: receiver %s stopped itself: %s", self.stream, self.receiver.name, message)
        with self._lock:
            if self._restart_pending:
                return
            # on_stop() may join the calling thread, so it runs on a thread of ours, joined in stop().
            self._start_thread(self._stop_receiver, (), f"receiver-stop-{self.stream}")

    def _on_store_failure(self, message: str, error: BaseException) -> None:
        self.report_error(message, error)
        self._ssc._on_fatal(ReceiverError(f"{message}. The job stops rather than drop received data."))


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
