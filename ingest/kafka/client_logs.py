"""Kafka client logs, routed into Python logging under `ingest.kafka.client`.

Left alone, librdkafka prints every failed connection attempt to stderr (a wrong
bootstrap address gives hundreds of identical lines in 30 s) and kafka-python logs the
same under `kafka.*`. Both go through one `ClientLogRelay` instead:

- a repeated message (the same text once broker instance names, durations and
  timestamps are ignored) is logged once, then at most once a minute with the number of
  repeats suppressed in between;
- a client's errors are logged at WARNING: the clients retry them, and the error that
  decides (a batch that fails, a stream that gives up) is raised by ingest, naming the
  cause; the clients' informational chatter is logged at DEBUG;
- the relay counts the errors a client reported (`last_problem` is the most frequent),
  so that error can quote the client's own words ("Connection refused").

confluent-kafka: `with_client_logs(conf)` adds the relay as the `logger` property (the
client then stops printing to stderr; its logs reach Python when the client is polled).
kafka-python: `route_kafka_python_logs()` forwards the `kafka` loggers through the relay,
unless the application configured them itself.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Callable, Mapping

LOGGER_NAME = "ingest.kafka.client"
REPEAT_INTERVAL = 60.0  # seconds between two lines of one repeated message
_MAX_KEYS = 1000  # distinct messages remembered; beyond, the memory starts afresh

# Parts of a client message that change between repeats of one problem.
_VARYING = re.compile(r"rdkafka#\w+-\d+|\d+(\.\d+)?\s?secs?\b|\d+(\.\d+)?\s?ms\b|\b\d{9,}(\.\d+)?\b|<[^>]*>|node_id=\S+|\bid \d+")


class ClientLogRelay:
    """Deduplicates and rate-limits client log lines into one Python logger."""

    def __init__(self, logger: logging.Logger | None = None, *, interval: float = REPEAT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, list[float | int]] = {}  # key -> [last logged at, repeats suppressed since]
        self._errors: dict[str, list[Any]] = {}  # key -> [times reported, latest text]

    def relay(self, level: int, text: str) -> None:
        """Log `text` (a client's message at Python `level`) unless it repeats
        a message logged less than `interval` seconds ago."""
        text = text.strip()
        key = _VARYING.sub("#", text)
        if level >= logging.ERROR:
            with self._lock:
                if len(self._errors) >= _MAX_KEYS:
                    self._errors.clear()
                entry = self._errors.setdefault(key, [0, text])
                entry[0] += 1
                entry[1] = text
        level = logging.WARNING if level >= logging.WARNING else logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return
            repeats = 0 if entry is None else int(entry[1])
            if len(self._seen) >= _MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
        if repeats:
            text = f"{text} (and {repeats} more like it in the last {self.interval:.0f} s)"
        self.logger.log(level, "%s", text)

    @property
    def last_problem(self) -> str | None:
        """The error the client reported most often (the latest of equals), e.g.
        "Connect to ipv4#127.0.0.1:1 failed: Connection refused"; None if none."""
        with self._lock:
            if not self._errors:
                return None
            count = max(n for n, _ in self._errors.values())
            return [text for n, text in self._errors.values() if n == count][0]

    # confluent-kafka calls `logger.log(level, format, *args)` with a Python level.
    def log(self, level: int, msg: str, *args: Any, **_: Any) -> None:
        try:
            text = msg % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join([str(msg), *map(str, args)])
        self.relay(level, text)


_SHARED = ClientLogRelay()


def shared_relay() -> ClientLogRelay:
    """The relay of the clients that have none of their own (readers, sinks, receivers)."""
    return _SHARED


def with_client_logs(conf: Mapping[str, Any], relay: ClientLogRelay | None = None) -> dict[str, Any]:
    """`conf` for a confluent-kafka client, its logs going through `relay`
    (default: the shared one); a `logger` the application set is kept."""
    out = dict(conf)
    out.setdefault("logger", relay or _SHARED)
    return out


class _KafkaPythonForwarder(logging.Handler):
    def __init__(self, relay: ClientLogRelay) -> None:
        super().__init__()
        self._relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._relay.relay(record.levelno, f"{record.name}: {record.getMessage()}")
        except Exception:  # a log line must never break the client
            self.handleError(record)


_route_lock = threading.Lock()
_routed = False


def route_kafka_python_logs(relay: ClientLogRelay | None = None) -> None:
    """Forward kafka-python's `kafka` loggers through the relay (once per
    process), unless the application gave the `kafka` logger handlers of its own."""
    global _routed
    with _route_lock:
        kafka_logger = logging.getLogger("kafka")
        own = [h for h in kafka_logger.handlers if not isinstance(h, logging.NullHandler)]  # the library adds one
        if _routed or own or not kafka_logger.propagate:
            return
        kafka_logger.addHandler(_KafkaPythonForwarder(relay or _SHARED))
        kafka_logger.propagate = False
        _routed = True
