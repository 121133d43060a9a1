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
from typing import Any, Mapping

# librdkafka error names of a handshake that no retry can mend.
CONFLUENT_SECURITY_ERRORS = frozenset({"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL",
                                       "UNSUPPORTED_SASL_MECHANISM", "ILLEGAL_SASL_STATE"})


def explain(cause: str, params: Mapping[str, Any]) -> str | None:
    """What to fix, when `cause` (a client's error text) is an authentication or
    TLS failure; None when it is not one."""
    text = cause.lower()
    mechanism = params.get("sasl.mechanism", params.get("sasl.mechanisms", "GSSAPI"))
    if "unsupported sasl mechanism" in text or "unsupportedsaslmechanism" in text:
        return (f"the broker does not offer SASL mechanism {mechanism!r} ({cause}); set kafka_params"
                f"['sasl.mechanism'] to one of the mechanisms the broker lists (its sasl.enabled.mechanisms)")
    if "authentication failed" in text or "saslauthenticationfailed" in text or "invalid credentials" in text:
        return (f"authentication failed for user {params.get('sasl.username')!r} with SASL mechanism "
                f"{mechanism!r} ({cause}); check kafka_params['sasl.username'] and kafka_params['sasl.password'] "
                "(and that the user exists for that mechanism on the brokers)")
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        ca = params.get("ssl.ca.location")
        where = f"the CA in ssl.ca.location={ca}" if ca else "any CA this machine trusts (no ssl.ca.location set)"
        return (f"certificate verify failed: the broker's certificate is not signed by {where} ({cause}); set "
                "kafka_params['ssl.ca.location'] to the PEM file of the CA that signed the brokers' certificates")
    if "connecting to a plaintext broker listener" in text or "wrong version number" in text:
        return (f"the TLS handshake failed: {params.get('bootstrap.servers')} is not a TLS listener ({cause}); "
                "point kafka_params['bootstrap.servers'] at the brokers' SSL listener, or set "
                "kafka_params['security.protocol'] to the listener's protocol")
    if "sasl" in text and "handshake" in text and "failed" in text:
        return (f"the SASL handshake failed ({cause}); check kafka_params['sasl.mechanism'] and "
                "kafka_params['security.protocol'] against the brokers' listener")
    return None


class ConfluentCauses:
    """An `error_cb` for confluent-kafka clients keeping the last authentication
    or TLS failure (as `explain` tells it), for the call that then fails."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        self._lock = threading.Lock()
        self._last: str | None = None

    def __call__(self, error: Any) -> None:
        told = explain(error.str(), self._params)
        if told is None and error.name() in CONFLUENT_SECURITY_ERRORS:
            told = f"{error.name()}: {error.str()}"
        if told is not None:
            with self._lock:
                self._last = told

    def take(self) -> str | None:
        with self._lock:
            last, self._last = self._last, None
        return last


class KafkaPythonCauses(logging.Handler):
    """Keeps the last authentication or TLS failure kafka-python logs (it raises
    only a timeout), as a context manager around a connecting call. It hears
    what the `kafka` logger lets through: WARNING and above unless the
    application raised that logger's level (or the root's) above WARNING."""

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

    def __enter__(self) -> KafkaPythonCauses:
        self.last = None
        logging.getLogger("kafka").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("kafka").removeHandler(self)
