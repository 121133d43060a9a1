"""Broker calls with a deadline, retrying what is worth retrying.

Every driver-side call to Kafka (list topics, watermarks, committed offsets,
commits) goes through `call()`: one attempt is bounded by the time left (and
by `max_attempt`), a retriable failure (a broker restarting, a coordinator
moving, a leader election: `NOT_COORDINATOR`, "No leaders found", transport
errors) is tried again with a growing delay, and a permanent one (an
authorization failure, an invalid argument) is raised at once. When the
deadline passes the last cause is raised, named, so a caller never waits
without a bound and never fails without saying why.

The clients translate their library's exceptions into `BrokerCallError` with
`retriable_confluent` / `retriable_kafka_python`; nothing here imports a client.
A refused authentication or TLS handshake is permanent too, but neither client
raises it from the call that met it (it ends in a transport error or a timeout):
the clients find it with `ingest.kafka.security` and raise it as permanent.
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

from ingest.errors import SourceError

T = TypeVar("T")

MIN_ATTEMPT = 0.5  # seconds: a shorter attempt cannot even reach a broker


class BrokerCallError(SourceError):
    """A call to the cluster failed; `retriable` says whether trying again may succeed."""

    def __init__(self, message: str, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def call(what: str, attempt: Callable[[float], T], *, timeout: float | None = None, deadline: float | None = None,
         max_attempt: float = 15.0, first_delay: float = 0.2, max_delay: float = 15.0,
         on_retry: Callable[[BrokerCallError, float], None] | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] = time.sleep) -> T:
    """`attempt(seconds)` until it returns, raises a permanent error, or the
    deadline (`timeout` seconds from now, or the absolute `deadline` on
    `clock`) passes; then the last cause is raised as a BrokerCallError
    saying for how long it was tried. `on_retry(error, delay)` hears of each
    retriable failure before the pause."""
    if (timeout is None) == (deadline is None):
        raise TypeError("call() takes exactly one of timeout= or deadline=")
    started = clock()
    end = started + timeout if timeout is not None else deadline
    assert end is not None
    delay = first_delay
    while True:
        try:
            return attempt(max(MIN_ATTEMPT, min(max_attempt, end - clock())))
        except BrokerCallError as exc:
            if not exc.retriable:
                raise
            if clock() + delay > end:
                raise BrokerCallError(f"could not {what} for {clock() - started:.0f} s: {exc}",
                                      retriable=True) from exc
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
            delay = min(delay * 2, max_delay)


# librdkafka error names that no retry can mend: the configuration or the
# permissions must change first.
_CONFLUENT_PERMANENT = frozenset({
    "TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED",
    "SASL_AUTHENTICATION_FAILED", "_AUTHENTICATION", "_INVALID_ARG", "_UNSUPPORTED_FEATURE", "INVALID_GROUP_ID",
    "_SSL", "UNSUPPORTED_VERSION", "_INVALID_TYPE", "INVALID_REQUEST",
    "UNSUPPORTED_SASL_MECHANISM", "ILLEGAL_SASL_STATE",
})


def retriable_confluent(error: Any) -> bool:
    """For a confluent-kafka `KafkaError` (or a `KafkaException` carrying one)."""
    err = error.args[0] if isinstance(error, BaseException) and error.args else error
    if not hasattr(err, "name"):
        return True  # a bare exception (e.g. a future's timeout): the broker may answer next time
    if err.fatal():
        return False
    return err.name() not in _CONFLUENT_PERMANENT


def retriable_kafka_python(error: BaseException) -> bool:
    """kafka-python marks retriable errors itself; connection and timeout
    errors are worth retrying too, authorization and authentication are not."""
    name = type(error).__name__
    if "Authorization" in name or "Authentication" in name or "SaslMechanism" in name or "SaslState" in name:
        return False
    return bool(getattr(error, "retriable", False)) or name in (
        "KafkaConnectionError", "NoBrokersAvailable", "KafkaTimeoutError", "NodeNotReadyError",
        "CommitFailedError", "BrokerNotAvailableError", "MetadataEmptyBrokerList")
