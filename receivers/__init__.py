"""Receiver-based input: the `Receiver` API, its supervisor, block generator,
rate limiter and block tracker, and the built-in receivers.

The core (`ingest`) never imports this package: `receivers.plugin` registers
the context's `socket_text_stream` and `receiver_stream` in `ingest.sources`,
which loads it on first use.
"""

from typing import Any

from receivers.block import BlockInfo
from receivers.block_generator import BlockGenerator
from receivers.input import ReceiverInputDStream
from receivers.kafka import KafkaReceiver, kafka_stream
from receivers.rate_limiter import RateLimiter
from receivers.receiver import Receiver
from receivers.socket import SocketTextReceiver
from receivers.supervisor import ReceiverSupervisor
from receivers.tracker import ReceivedBlockTracker

# The Flume receivers need fastavro (the `flume` extra): imported on first use, so
# that `import receivers` (and so every socket or custom receiver) works without it.
_FLUME = ("FlumeEvent", "FlumePollingReceiver", "FlumePushReceiver", "flume_polling_stream", "flume_stream")


def __getattr__(name: str) -> Any:
    if name in _FLUME:
        from receivers.flume_extra import flume_module

        return getattr(flume_module(), name)
    raise AttributeError(f"module 'receivers' has no attribute {name!r}")


__all__ = [
    "BlockGenerator", "BlockInfo", "FlumeEvent", "FlumePollingReceiver", "FlumePushReceiver", "KafkaReceiver", "RateLimiter", "ReceivedBlockTracker", "Receiver", "ReceiverInputDStream",
    "ReceiverSupervisor", "SocketTextReceiver", "flume_polling_stream", "flume_stream", "kafka_stream",
]
