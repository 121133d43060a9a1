"""What a receiver's two supervisors share: the local one
(`receivers.supervisor`, the receiver runs in this process) and the driver's
side of one on a Dask worker (`receivers.cluster_supervisor`).

Both answer the input stream the same questions (is the receiver stopping,
the block interval) and report to the context's listeners the same way: a
`ReceiverInfo` built from the last error, the restart count and, on a
cluster, the worker; `report_error` records an error and posts it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ingest.listener import ReceiverError as ReceiverErrorEvent
from ingest.listener import ReceiverInfo

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from receivers.receiver import Receiver


class ReceiverSupervision:
    worker: str | None = None
    """The Dask worker running the receiver; None when it runs in this process."""

    def __init__(self, ssc: "StreamingContext", stream: str, receiver: "Receiver[Any]") -> None:
        self._ssc = ssc
        self.stream = stream
        self.receiver = receiver
        self._stopped = threading.Event()  # the job's stop of this receiver began
        self.receiver_running = False
        self.restarts = 0
        self._last_error: tuple[str, str | None, float] | None = None

    @property
    def block_interval(self) -> float:
        """Seconds between blocks (the context's block interval)."""
        return self._ssc.block_interval_ms / 1000.0

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def _info(self) -> ReceiverInfo:
        msg, err, at = self._last_error or (None, None, None)
        return ReceiverInfo(self.stream, self.receiver.name, self.receiver_running, msg, err, at, self.restarts,
                            worker=self.worker)

    def report_error(self, message: str, error: BaseException | None = None) -> None:
        """Record the receiver's last error and post it to the context's listeners."""
        err = None if error is None else f"{type(error).__name__}: {error}"
        self._last_error = (message, err, time.time())
        self._ssc._bus.post(ReceiverErrorEvent(self._info()))
