"""The reliable pull stream: we poll Flume agents that run our pull sink.

    from receivers import flume_polling_stream
    events = flume_polling_stream(ssc, addresses=[("127.0.0.1", 41416)],
                                  max_batch_size=1000, parallelism=2,
                                  write_ahead_log=True)

    # in the agent (the jar of docker/flume-sink in plugins.d/ingest/lib/):
    #   a1.sinks.k1.type = io.github.ingest.flume.PullSink
    #   a1.sinks.k1.hostname = 127.0.0.1
    #   a1.sinks.k1.port = 41416

For every address, `parallelism` threads each keep a connection and loop:
`getEventBatch(max_batch_size)` opens a channel transaction in the agent and
returns up to that many events with a sequence number; the batch is stored as
one block (durable on return with the write-ahead log on) with the agent's
address and the sequence number as metadata; only then is it acked (the agent
commits: the events leave its channel). The stream's batches plan as
`SequenceNumbers` naming those sequence numbers and their blocks
(`receivers.flume.polling_input`). If storing fails the
batch is nacked (the agent rolls back and delivers the events again) and the
receiver restarts; if we die between the two, the sink rolls back after its
`timeout` and the events come again. Delivery is at least once: a crash after
the store and before the ack re-delivers a stored batch, which a deduplicating
sink removes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterable

from ingest.errors import ConfigError, StateError
from receivers.flume.client import AvroIpcClient
from receivers.flume.polling_input import FlumePollingInputDStream
from receivers.flume.protocols import PULL_PROTOCOL
from receivers.flume.push import events_stream
from receivers.receiver import Receiver

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream

log = logging.getLogger("receivers.flume")


class FlumePollingReceiver(Receiver[tuple]):
    """Polls agents running our pull sink; see the module documentation."""

    def __init__(self, addresses: Iterable[tuple[str, int]], *, max_batch_size: int = 1000, parallelism: int = 1,
                 poll_interval: float = 0.2, call_timeout: float = 30.0, name: str | None = None) -> None:
        self.addresses = [tuple(a) for a in addresses]
        if not self.addresses or not all(
                len(a) == 2 and isinstance(a[0], str) and a[0] and isinstance(a[1], int) and 0 < a[1] < 65536
                for a in self.addresses):
            raise ConfigError(f"flume_polling_stream: addresses must be a non-empty list of (host, port) pairs, "
                              f"got {addresses!r}")
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ConfigError(f"flume_polling_stream: max_batch_size must be a positive integer, got "
                              f"{max_batch_size!r}")
        if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
            raise ConfigError(f"flume_polling_stream: parallelism must be a positive integer (connections per "
                              f"agent), got {parallelism!r}")
        if not poll_interval > 0 or not call_timeout > 0:
            raise ConfigError("flume_polling_stream: poll_interval and call_timeout must be positive seconds")
        super().__init__(name or "flume-polling " + ",".join(f"{h}:{p}" for h, p in self.addresses))
        self.max_batch_size = max_batch_size
        self.parallelism = parallelism
        self.poll_interval = poll_interval
        self.call_timeout = call_timeout
        self._clients: set[AvroIpcClient] = set()
        self.batches_acked = 0
        self.batches_nacked = 0
        self.events_received = 0

    def metrics(self) -> dict[str, Any]:
        return {"batches_acked": self.batches_acked, "batches_nacked": self.batches_nacked,
                "events_received": self.events_received}

    def on_start(self) -> None:
        for host, port in self.addresses:
            for i in range(self.parallelism):
                self.start_thread(lambda h=host, p=port: self._poll(h, p), name=f"flume-poll-{host}:{port}-{i}")

    def on_stop(self) -> None:
        # The loops wake within poll_interval or at the end of their current call;
        # closing the sockets ends a call at once (its batch times out in the agent).
        for client in list(self._clients):
            client.close()

    def _poll(self, host: str, port: int) -> None:
        source = f"{host}:{port}"
        try:
            client = AvroIpcClient(PULL_PROTOCOL, host, port, timeout=self.call_timeout)
        except OSError as exc:
            if not self.stop_event.is_set():
                self.restart(f"cannot connect to the Flume pull sink at {source}: {exc}; is the agent running "
                             "with io.github.ingest.flume.PullSink on that port?", exc)
            return
        self._clients.add(client)
        try:
            while not self.stop_event.is_set():
                batch = client.call("getEventBatch", {"n": self.max_batch_size})
                if batch["errorMsg"] or not batch["events"]:
                    self.stop_event.wait(self.poll_interval)  # the channel is empty
                    continue
                sequence = batch["sequenceNumber"]
                records = [(e["headers"], e["body"]) for e in batch["events"]]
                try:
                    self.store_batch(records, {"source": source, "sequence": sequence, "events": len(records)})
                except Exception as exc:
                    self._nack(client, source, sequence)
                    if isinstance(exc, StateError):
                        return  # stopped while storing
                    raise
                client.call("ack", {"sequenceNumber": sequence})
                self.batches_acked += 1
                self.events_received += len(records)
        except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a backoff
            if not self.stop_event.is_set():
                self.restart(f"polling the Flume pull sink at {source} failed: {type(exc).__name__}: {exc}", exc)
        finally:
            self._clients.discard(client)
            client.close()

    def _nack(self, client: AvroIpcClient, source: str, sequence: str) -> None:
        try:
            client.call("nack", {"sequenceNumber": sequence})
            self.batches_nacked += 1
        except Exception as exc:  # noqa: BLE001 - the sink rolls back after its timeout anyway
            log.warning("%s: nack of batch %s at %s failed (%s); the agent rolls it back after its timeout",
                        self.name, sequence, source, exc)


def flume_polling_stream(ssc: "StreamingContext", addresses: Iterable[tuple[str, int]], *,
                         max_batch_size: int = 1000, parallelism: int = 1, value_deserializer: Any = "bytes",
                         body_only: bool = False, poll_interval: float = 0.2, call_timeout: float = 30.0,
                         max_rate: float | None = None, name: str | None = None,
                         **stream_options: Any) -> "DStream[Any]":
    """A stream of the events polled from Flume agents running our pull sink
    (docker/flume-sink) at `addresses`. Yields `FlumeEvent(headers, body)`, or bodies
    with `body_only=True`; `value_deserializer` as for `flume_stream`. Use
    `write_ahead_log=True` so that a batch is durable before it is acked."""
    receiver = FlumePollingReceiver(addresses, max_batch_size=max_batch_size, parallelism=parallelism,
                                    poll_interval=poll_interval, call_timeout=call_timeout)
    return events_stream(ssc, receiver, value_deserializer=value_deserializer, body_only=body_only,
                         kind="flume-polling", max_rate=max_rate, name=name, options=stream_options,
                         input_class=FlumePollingInputDStream)
