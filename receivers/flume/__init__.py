"""Flume streams: events that Apache Flume agents push to us (`flume_stream`, a
server of Flume's AvroSourceProtocol), and, reliably, events we poll from agents
that run our pull sink (`flume_polling_stream`).

Both speak Avro IPC over the Netty framing (`framing`, `ipc`) and yield
`FlumeEvent(headers, body)`.
"""

from receivers.flume.event import FlumeEvent
from receivers.flume.pull import FlumePollingReceiver, flume_polling_stream
from receivers.flume.push import FlumePushReceiver, flume_stream

__all__ = ["FlumeEvent", "FlumePollingReceiver", "FlumePushReceiver", "flume_polling_stream", "flume_stream"]
