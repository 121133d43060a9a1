"""Sending a receiver to the Dask worker that runs it.

A receiver is pickled (cloudpickle: its class may be defined in the job's
file) before it starts, in the driver, and unpickled on its worker. Locks,
events and conditions it made in `__init__` (its own or those of helpers it
holds) cannot be pickled and hold nothing yet: each travels as an order to
make a new one of its kind. Connections and threads belong in `on_start()`,
which runs on the worker; a receiver holding one already is refused with a
`ConfigError` saying so.

Only bytes this driver produced are unpickled, on this job's workers.
"""

from __future__ import annotations

import io
import threading
from typing import Any, Callable

import cloudpickle

from ingest.errors import ConfigError

_FRESH: dict[type, Callable[[], Any]] = {
    type(threading.Lock()): threading.Lock,
    type(threading.RLock()): threading.RLock,
    threading.Event: threading.Event,
    threading.Condition: threading.Condition,
    threading.Semaphore: threading.Semaphore,
}


class _ReceiverPickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        fresh = _FRESH.get(type(obj))
        if fresh is not None:
            return fresh, ()
        return super().reducer_override(obj)


def pack_receiver(receiver: Any, stream: str) -> bytes:
    buffer = io.BytesIO()
    try:
        _ReceiverPickler(buffer).dump(receiver)
    except Exception as exc:  # noqa: BLE001 - any pickling failure says the same
        raise ConfigError(
            f"receiver {getattr(receiver, 'name', receiver)!r} of stream {stream} cannot be sent to a Dask "
            f"worker: {type(exc).__name__}: {exc}. Open connections and start threads in on_start(), "
            "not in __init__") from exc
    return buffer.getvalue()


def unpack_receiver(blob: bytes) -> Any:
    return cloudpickle.loads(blob)
