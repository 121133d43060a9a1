"""The receiver supervisor: runs one receiver, stores what it receives, and
restarts it when it fails.

It owns the receiver's block generator and the restart thread. Restarts back
off: the delay doubles on every restart that follows a short run (up to
`max_restart_delay`) and resets after the receiver ran well for a while. Every
start, error and stop is posted to the context's listeners. A receiver that
stops itself with an error, or a block that cannot be stored, stops the job:
data is never dropped silently.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ingest.errors import ReceiverError
from ingest.listener import ReceiverError as ReceiverErrorEvent
from ingest.listener import ReceiverInfo, ReceiverStarted, ReceiverStopped
from receivers.block import Block, BlockInfo
from receivers.block_generator import BlockGenerator
from receivers.rate_limiter import RateLimiter

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from receivers.receiver import Receiver

log = logging.getLogger("receivers.supervisor")


class ReceiverSupervisor:
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
        owner: Any = None,
    ) -> None:
        self._ssc = ssc
        self._owner = owner
        self.stream = stream
        self.receiver = receiver
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
        self._lock = threading.RLock()
        self._state = "initialized"
        self.receiver_running = False
        self.receiver_stop_event = threading.Event()
        self._stopped = threading.Event()
        # A restart is pending from the request until the receiver is being
        # started again; further requests meanwhile are the same failure.
        self._restart_pending = False
        self._threads: list[threading.Thread] = []  # restart and stop threads, joined in stop()
        self._started_at = 0.0
        self.restarts = 0
        self._last_error: tuple[str, str | None, float] | None = None

    @property
    def block_interval(self) -> float:
        """Seconds between blocks (the context's block interval)."""
        return self._ssc.block_interval_ms / 1000.0

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    @property
    def reliable(self) -> bool:
        """True when push_block writes to the write-ahead log before returning."""
        return bool(getattr(self._owner, "reliable", False))

    def recovered_metadata(self) -> list[Any]:
        return self._owner.recovered_metadata() if self._owner is not None else []

    # -- events --------------------------------------------------------------------

    def _info(self) -> ReceiverInfo:
        msg, err, at = self._last_error or (None, None, None)
        return ReceiverInfo(self.stream, self.receiver.name, self.receiver_running, msg, err, at, self.restarts)

    # -- lifecycle --------------------------------------------------------------------

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
            self._started_at = time.monotonic()
        try:
            self.receiver.on_start()
        except Exception as exc:  # noqa: BLE001
            self.receiver_running = False
            self.restart(f"could not start: {type(exc).__name__}: {exc}", exc)
            return False
        self._ssc._bus.post(ReceiverStarted(self._info()))
        return True

    def _stop_receiver(self) -> None:
        with self._lock:
            if not self.receiver_running:
                return
            self.receiver_running = False
            self.receiver_stop_event.set()
        try:
            self.receiver.on_stop()
        except Exception as exc:  # noqa: BLE001
            log.exception("stream %s: %s.on_stop() failed", self.stream, self.receiver.name)
            self.report_error(f"on_stop() failed: {type(exc).__name__}: {exc}", exc)

    def stop(self, graceful: bool, timeout: float | None = 10.0) -> None:
        """Stop the receiver and its block generator. Graceful: everything
        buffered is cut into blocks and stored before this returns."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        self._stopped.set()
        try:
            with self._lock:
                threads = list(self._threads)
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join(timeout)
            self._stop_receiver()
        finally:
            # Whatever happened above, the generator's threads must not outlive the job.
            self.generator.stop(drain=graceful, timeout=timeout)
        self._ssc._bus.post(ReceiverStopped(self._info()))

    # -- called by the receiver ----------------------------------------------------

    def push_single(self, item: Any) -> None:
        self.generator.add(item)

    def push_block(self, records: list[Any], metadata: Mapping[str, Any] | None) -> str:
        if self._stopped.is_set() or not self.rate_limiter.acquire(len(records), self._stopped.is_set):
            raise ReceiverError(f"stream {self.stream}: store_batch() called while stopping")
        block = Block(self.generator.new_block_id(), records, metadata)
        self._store_block(block)
        return block.block_id

    def _push_generated(self, block: Block) -> None:
        self._store_block(block)

    def report_error(self, message: str, error: BaseException | None = None) -> None:
        err = None if error is None else f"{type(error).__name__}: {error}"
        self._last_error = (message, err, time.time())
        self._ssc._bus.post(ReceiverErrorEvent(self._info()))

    def restart(self, message: str, error: BaseException | None = None, delay: float | None = None) -> None:
        with self._lock:
            if self._state != "started" or self._restart_pending:
                return
            self._restart_pending = True
            ran_for = time.monotonic() - self._started_at
            if delay is None:
                delay = self._base_delay if ran_for >= self._reset_after else self._next_delay
                self._next_delay = min(self._max_delay, max(self._base_delay, delay * 2))
            self.restarts += 1
            restarts = self.restarts
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
