"""Receiver-based input: the `Receiver` API, its supervisor, block generator,
rate limiter and block tracker, and the built-in receivers.

`ingest` never imports this package at module level; the context's factory
methods (`socket_text_stream`, `receiver_stream`) import it when called.
"""

from receivers.block import BlockInfo
from receivers.block_generator import BlockGenerator
from receivers.input import ReceiverInputDStream
from receivers.kafka import KafkaReceiver, kafka_stream
from receivers.rate_limiter import RateLimiter
from receivers.receiver import Receiver
from receivers.socket import SocketTextReceiver
from receivers.supervisor import ReceiverSupervisor
from receivers.tracker import ReceivedBlockTracker

__all__ = [
    "BlockGenerator", "BlockInfo", "KafkaReceiver", "RateLimiter", "ReceivedBlockTracker", "Receiver", "ReceiverInputDStream",
    "ReceiverSupervisor", "SocketTextReceiver", "kafka_stream",
]
