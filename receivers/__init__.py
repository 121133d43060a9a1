"""Receiver-based input: the `Receiver` API, its supervisor, block generator,
rate limiter and block tracker, and the built-in receivers.

The core (`ingest`) never imports this package: `receivers.plugin` registers
the context's `socket_text_stream` and `receiver_stream` in `ingest.sources`,
which loads it on first use.

Every name below loads its module on first use, so that importing one part of
the package (its plugin, a receiver) does not load the others (the Kafka
client, the write-ahead log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from offsets.lazy_names import lazy_getattr

_EXPORTS = {
    "BlockInfo": "receivers.block",
    "BlockGenerator": "receivers.block_generator",
    "ReceiverInputDStream": "receivers.input",
    "KafkaReceiver": "receivers.kafka", "kafka_stream": "receivers.kafka",
    "RateLimiter": "receivers.rate_limiter",
    "Receiver": "receivers.receiver",
    "SocketTextReceiver": "receivers.socket",
    "ReceiverSupervisor": "receivers.supervisor",
    "ReceivedBlockTracker": "receivers.tracker",
}

# The Flume receivers need fastavro (the `flume` extra): their names go through
# flume_module(), which says how to install it when it is missing.
_FLUME = ("FlumeEvent", "FlumePollingReceiver", "FlumePushReceiver", "flume_polling_stream", "flume_stream")


_lazy = lazy_getattr("receivers", _EXPORTS, globals())


def __getattr__(name: str) -> Any:
    if name in _FLUME:
        from receivers.flume_extra import flume_module

        return getattr(flume_module(), name)
    return _lazy(name)


__all__ = [
    "BlockGenerator", "BlockInfo", "FlumeEvent", "FlumePollingReceiver", "FlumePushReceiver", "KafkaReceiver",
    "RateLimiter", "ReceivedBlockTracker", "Receiver", "ReceiverInputDStream", "ReceiverSupervisor",
    "SocketTextReceiver", "flume_polling_stream", "flume_stream", "kafka_stream",
]

if TYPE_CHECKING:
    from receivers.block import BlockInfo
    from receivers.block_generator import BlockGenerator
    from receivers.input import ReceiverInputDStream
    from receivers.kafka import KafkaReceiver, kafka_stream
    from receivers.rate_limiter import RateLimiter
    from receivers.receiver import Receiver
    from receivers.socket import SocketTextReceiver
    from receivers.supervisor import ReceiverSupervisor
    from receivers.tracker import ReceivedBlockTracker
