"""The push stream: Flume agents' Avro sinks deliver to us.

    from receivers import flume_stream
    events = flume_stream(ssc, "127.0.0.1", 41414)     # DStream[FlumeEvent]

    # in the agent:  a1.sinks.k1.type = avro
    #                a1.sinks.k1.hostname = 127.0.0.1
    #                a1.sinks.k1.port = 41414

The receiver serves Flume's AvroSourceProtocol (`append`, `appendBatch`) to any
number of agents at once. A call is answered OK only once its events are stored
(durable when the write-ahead log is on: `write_ahead_log=True`); if storing
fails, it is answered FAILED and nothing of it is kept, so the agent rolls its
channel transaction back and sends the batch again (after Flume's fixed 5 s
backoff). Events are therefore delivered at least once: a crash after the
store and before the answer makes the agent send that batch again, which a
deduplicating sink (ingest.sinks.DedupeSink) keyed on the events removes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ingest.errors import ConfigError, StateError
from ingest.kafka.deserializers import deserializer_for
from receivers.flume.event import FlumeEvent
from receivers.flume.framing import FrameLimits
from receivers.flume.protocols import SOURCE_PROTOCOL
from receivers.flume.server import AvroIpcServer
from receivers.input import ReceiverInputDStream
from receivers.receiver import Receiver

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream

log = logging.getLogger("receivers.flume")

# How an event is kept in blocks and the write-ahead log: plain data, (headers, body).
RawEvent = tuple[dict[str, str], bytes]


class FlumePushReceiver(Receiver[RawEvent]):
    """Listens on host:port for Flume Avro sinks; see the module documentation."""

    def __init__(self, host: str, port: int, *, limits: FrameLimits = FrameLimits(),
                 name: str | None = None) -> None:
        super().__init__(name or f"flume {host}:{port}")
        if not isinstance(host, str) or not host:
            raise ConfigError(f"flume_stream: host must be a non-empty string (the address to listen on), got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
            raise ConfigError(f"flume_stream: port must be an integer in 0..65535 (0: any free port), got {port!r}")
        if limits.max_buffers < 1 or limits.max_frame_bytes < 1:
            raise ConfigError(f"flume_stream: frame limits must be positive, got {limits}")
        self.host, self.requested_port = host, port
        self.limits = limits
        self._server: AvroIpcServer | None = None
        self.port: int | None = None
        self.events_received = 0
        self.batches_failed = 0

    def metrics(self) -> dict[str, Any]:
        server = self._server
        return {"events_received": self.events_received, "batches_failed": self.batches_failed,
                "connections_refused": server.connections_refused if server is not None else 0}

    def on_start(self) -> None:
        # After a restart, listen on the port chosen the first time: agents are
        # configured with it.
        server = AvroIpcServer(SOURCE_PROTOCOL, self._handle, host=self.host,
                               port=self.port if self.port is not None else self.requested_port,
                               limits=self.limits, name=f"stream {self._stream_label()}")
        server.start()
        self._server, self.port = server, server.port

    def on_stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def _stream_label(self) -> str:
        try:
            return self.stream_name
        except StateError:
            return self.name

    def _handle(self, message: str, request: dict[str, Any]) -> str:
        events = [request["event"]] if message == "append" else request["events"]
        records = [(e["headers"], e["body"]) for e in events]
        if not records:
            return "OK"
        try:
            self.store_batch(records)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the agent must keep and resend the batch
            self.batches_failed += 1
            log.warning("%s: could not store a batch of %d events (%s: %s); answered FAILED, the agent resends it",
                        self.name, len(records), type(exc).__name__, exc)
            return "FAILED"
        self.events_received += len(records)
        return "OK"


class ToEvents:
    """Turns stored (headers, body) pairs into what the stream yields; a class, not
    a closure, so that it pickles to worker processes."""

    def __init__(self, deserializer: Any, body_only: bool) -> None:
        self.deserializer = deserializer
        self.body_only = body_only

    def __call__(self, raw: RawEvent) -> Any:
        headers, body = raw
        if self.deserializer is not None:
            body = self.deserializer(body)
        return body if self.body_only else FlumeEvent(headers, body)


def events_stream(ssc: "StreamingContext", receiver: Receiver[Any], *, value_deserializer: Any, body_only: bool,
                  kind: str, max_rate: float | None, name: str | None, options: dict[str, Any],
                  input_class: "type[ReceiverInputDStream[Any]]" = ReceiverInputDStream) -> "DStream[Any]":
    """The receiver's stream of FlumeEvents (or bodies), decoded after storage so
    that the log keeps the bytes as the agent sent them. `input_class` is the
    receiver's input stream (the pull stream's plans sequence numbers)."""
    to_events = ToEvents(deserializer_for(value_deserializer, "value_deserializer"), body_only)
    stream = input_class(ssc, receiver, max_rate=max_rate, name=name, kind=kind, **options)
    return stream.map(to_events)


def flume_stream(ssc: "StreamingContext", host: str, port: int, *, value_deserializer: Any = "bytes",
                 body_only: bool = False, max_frame_bytes: int = 64 << 20, max_buffers: int = 10_000,
                 max_rate: float | None = None, name: str | None = None,
                 **stream_options: Any) -> "DStream[Any]":
    """A stream of the events Flume agents push to host:port with their Avro sink.

    Yields `FlumeEvent(headers, body)`, or the bodies alone with `body_only=True`.
    `value_deserializer` decodes bodies: "bytes" (default), "utf-8", "json",
    `avro(schema)` (from ingest.kafka.deserializers) or a function of the bytes.
    A frame larger than `max_frame_bytes` or cut in more than `max_buffers`
    buffers is refused and its connection closed. Other options
    (`write_ahead_log=True`, ...) are those of `receiver_stream`.
    """
    receiver = FlumePushReceiver(host, port, limits=FrameLimits(max_buffers, max_frame_bytes))
    return events_stream(ssc, receiver, value_deserializer=value_deserializer, body_only=body_only,
                         kind="flume", max_rate=max_rate, name=name, options=stream_options)
