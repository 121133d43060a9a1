"""Authentication and TLS failures: recognised in each client's words, told
with the setting to fix, and never retried.

Neither client raises the cause of a failed SASL or TLS handshake from the
call that met it: confluent-kafka reports it to `error_cb` (served by `poll`)
and the call ends in a generic transport failure or timeout; kafka-python logs
it and times out. `ConfluentCauses` (an `error_cb`) and `KafkaPythonCauses` (a
logging handler on the `kafka` logger, attached while a client connects) keep
the last such cause, and `explain` turns it into a message naming what failed
(authentication failed / certificate verify failed / the SASL mechanism) and
the setting to change. Secrets are never part of it: the messages come from the
clients, which do not print passwords, and the settings named are names only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

from ingest.errors import SourceError

FIRST_CONTACT_SLICE = 1.0  # seconds of one metadata request while the cluster never answered


class HandshakeRefusedError(SourceError):
    """The brokers refused this client's authentication or TLS handshake: no
    retry mends it; a setting must change (the message names it)."""

# librdkafka error names of a handshake that no retry can mend.
CONFLUENT_SECURITY_ERRORS = frozenset({"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL",
                                       "UNSUPPORTED_SASL_MECHANISM", "ILLEGAL_SASL_STATE"})


def explain(cause: str, params: Mapping[str, Any], where: str = "kafka_params") -> str | None:
    """What to fix, when `cause` (a client's error text) is an authentication or
    TLS failure; None when it is not one. `where` names the settings' dict."""
    text = cause.lower()
    mechanism = params.get("sasl.mechanism", params.get("sasl.mechanisms", "GSSAPI"))
    if "unsupported sasl mechanism" in text or "unsupportedsaslmechanism" in text:
        return (f"the broker does not offer SASL mechanism {mechanism!r} ({cause}); set {where}"
                f"['sasl.mechanism'] to one of the mechanisms the broker lists (its sasl.enabled.mechanisms)")
    if "authentication failed" in text or "saslauthenticationfailed" in text or "invalid credentials" in text:
        return (f"authentication failed for user {params.get('sasl.username')!r} with SASL mechanism "
                f"{mechanism!r} ({cause}); check {where}['sasl.username'] and {where}['sasl.password'] "
                "(and that the user exists for that mechanism on the brokers)")
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        ca = params.get("ssl.ca.location")
        trusted = f"the CA in ssl.ca.location={ca}" if ca else "any CA this machine trusts (no ssl.ca.location set)"
        return (f"certificate verify failed: the broker's certificate is not signed by {trusted} ({cause}); set "
                f"{where}['ssl.ca.location'] to the PEM file of the CA that signed the brokers' certificates")
    if "connecting to a plaintext broker listener" in text or "wrong version number" in text:
        return (f"the TLS handshake failed: {params.get('bootstrap.servers')} is not a TLS listener ({cause}); "
                f"point {where}['bootstrap.servers'] at the brokers' SSL listener, or set "
                f"{where}['security.protocol'] to the listener's protocol")
    if "sasl" in text and "handshake" in text and "failed" in text:
        return (f"the SASL handshake failed ({cause}); check {where}['sasl.mechanism'] and "
                f"{where}['security.protocol'] against the brokers' listener")
    return None


def confluent_refusal(error: Any, params: Mapping[str, Any], where: str = "kafka_params") -> str | None:
    """`explain` for a confluent-kafka `KafkaError`: None unless it is a refused handshake."""
    told = explain(error.str(), params, where)
    if told is None and error.name() in CONFLUENT_SECURITY_ERRORS:
        told = f"{error.name()}: {error.str()}"
    return told


class ConfluentCauses:
    """An `error_cb` for confluent-kafka clients keeping the last authentication
    or TLS failure (as `explain` tells it), for the call that then fails."""

    def __init__(self, params: Mapping[str, Any], where: str = "kafka_params") -> None:
        self._params = dict(params)
        self._where = where
        self._lock = threading.Lock()
        self._last: str | None = None

    def __call__(self, error: Any) -> None:
        told = confluent_refusal(error, self._params, self._where)
        if told is not None:
            with self._lock:
                self._last = told

    def take(self) -> str | None:
        with self._lock:
            last, self._last = self._last, None
        return last


class KafkaPythonCauses(logging.Handler):
    """Keeps the last authentication or TLS failure kafka-python logs (it raises
    only a timeout). Attached to the `kafka` logger from a client's first call
    until the cluster answered (`attach`/`detach`): kafka-python may log the
    cause after the call that met it gave up, and the next attempt must still
    see it. It hears what the `kafka` logger lets through: WARNING and above,
    unless the application raised that logger's level (or the root's)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(logging.WARNING)
        self._params = dict(params)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            told = explain(record.getMessage(), self._params)
        except Exception:  # noqa: BLE001 - a log record we cannot read tells us nothing
            return
        if told is not None:
            self.last = told

    def attach(self) -> None:
        logging.getLogger("kafka").addHandler(self)  # a no-op when already attached

    def detach(self) -> None:
        logging.getLogger("kafka").removeHandler(self)
        self.last = None


def is_secured(params: Mapping[str, Any]) -> bool:
    return str(params.get("security.protocol", "PLAINTEXT")).upper() != "PLAINTEXT"


DIAGNOSIS_TIME = 2.0  # seconds a second opinion may take


def refusal_seen_by_confluent(params: Mapping[str, Any]) -> str | None:
    """Why the brokers refused these settings' handshake, asked of librdkafka,
    or None (no refusal seen within DIAGNOSIS_TIME, or confluent-kafka missing).

    A broker may close the connection after a failed SASL exchange without an
    answer kafka-python can read (it then logs only "socket disconnected");
    librdkafka reports the same refusal by name. Both clients come with the
    `kafka` extra; only the settings that say how to reach the cluster are used."""
    try:
        import confluent_kafka as ck
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return None
    from ingest.kafka.config import connection_settings

    causes = ConfluentCauses(params)
    try:
        admin = AdminClient({**connection_settings(params), "error_cb": causes, "log_level": 0})
    except (ck.KafkaException, ValueError, TypeError):
        return None
    try:
        first_contact(admin, causes, DIAGNOSIS_TIME, str(params.get("bootstrap.servers")))
    except HandshakeRefusedError as exc:
        return str(exc).split(": ", 1)[1]
    except ck.KafkaException:
        return None
    return None


def first_contact(handle: Any, causes: ConfluentCauses, seconds: float, where: str) -> float:
    """Reach the cluster through a confluent-kafka `handle` (admin client,
    producer or consumer that uses `causes` as its error_cb) in short metadata
    requests, serving error_cb between them, so that a handshake the brokers
    refuse is a `HandshakeRefusedError` after about a second instead of a
    timeout retried for minutes. Returns the seconds left of `seconds`; raises
    the client's last KafkaException when the time is up without an answer."""
    import confluent_kafka as ck

    end = time.monotonic() + seconds
    while True:
        try:
            handle.list_topics(timeout=max(0.1, min(FIRST_CONTACT_SLICE, end - time.monotonic())))
            return max(0.1, end - time.monotonic())
        except ck.KafkaException as exc:
            handle.poll(0)
            cause = causes.take()
            if cause is not None:
                raise HandshakeRefusedError(f"cannot reach {where}: {cause}") from exc
            if time.monotonic() >= end:
                raise
