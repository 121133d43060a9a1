"""Kafka client properties as users give them (`bootstrap.servers`, `group.id`,
...): checks shared by the direct stream, the Kafka receiver and the Kafka sink,
their conversion to kafka-python's names, and redaction so that secrets never
reach a log line or an error message.

The security checks run when a stream or sink is built, before any connection:
a file named by `ssl.ca.location` (or the client certificate and key) that does
not exist, and a SASL mechanism that is not one Kafka knows, are ConfigErrors
naming the setting. What only the broker can judge (a wrong password, a
certificate it does not trust, a mechanism it does not offer) is a permanent
broker error (`ingest.kafka.calls`), raised on the first attempt."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

from ingest.errors import ConfigError

SECRET_WORDS = ("password", "secret", "jaas", "token", "key.pem", "keystore", "credential")
FORBIDDEN = {
    "enable.auto.commit": "ingest commits offsets itself, only after the data is safe (after the batch commits, or after the block is stored)",
}
OURS = {"auto.offset.reset"}  # used by the driver for partitions without a starting position


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if any(w in k.lower() for w in SECRET_WORDS) else v) for k, v in params.items()}


# Dotted names whose kafka-python keyword is not the name with "_" for ".".
KAFKA_PYTHON_NAMES = {
    "sasl.username": "sasl_plain_username", "sasl.password": "sasl_plain_password",
    "sasl.mechanisms": "sasl_mechanism", "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile", "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")
FILE_SETTINGS = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")


def kafka_python_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """confluent-kafka settings (Kafka's dotted names) as kafka-python keyword
    arguments: `bootstrap.servers` becomes a list, `sasl.username` becomes
    `sasl_plain_username`, `ssl.ca.location` becomes `ssl_cafile`, and so on; any
    other name has its dots turned into underscores. For example::

        KafkaProducer(**kafka_python_config({"bootstrap.servers": "b:9093",
                                             "security.protocol": "SSL",
                                             "ssl.ca.location": "/etc/kafka/ca.pem"}))

    Streams with `client="kafka-python"` take the dotted names and convert them
    themselves; this is for code that builds kafka-python clients of its own."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = KAFKA_PYTHON_NAMES.get(key, key.replace(".", "_"))
        if name == "bootstrap_servers" and isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        out[name] = value
    return out


def connection_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that say how to reach and authenticate to the cluster
    (bootstrap servers, security protocol, SASL, TLS), for a further client of
    the same cluster: a sink's consumer, a dead-letter producer."""
    return {k: v for k, v in params.items()
            if k == "bootstrap.servers" or k.startswith(("security.", "sasl.", "ssl."))}


def check_security(params: Mapping[str, Any], where: str = "kafka_params") -> None:
    """The security settings' checks that need no broker (see the module docstring)."""
    protocol = str(params.get("security.protocol", "PLAINTEXT")).upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"{where}['security.protocol']={params['security.protocol']!r} is not a Kafka security "
                          f"protocol: use one of {', '.join(SECURITY_PROTOCOLS)}")
    for key in ("sasl.mechanism", "sasl.mechanisms"):
        if key in params and str(params[key]).upper() not in SASL_MECHANISMS:
            raise ConfigError(f"{where}[{key!r}]={params[key]!r} is not a SASL mechanism Kafka knows: use one of "
                              f"{', '.join(SASL_MECHANISMS)} (the one your brokers' sasl.enabled.mechanisms offers)")
    for key in FILE_SETTINGS:
        value = params.get(key)
        if value is None or str(value) == "probe":  # "probe": librdkafka looks in the system's usual places
            continue
        if not os.path.isfile(str(value)):
            state = "is a directory, not a file" if os.path.isdir(str(value)) else "does not exist"
            raise ConfigError(f"{where}[{key!r}]: {value} {state}; set {key!r} to the PEM file "
                              + ("of the CA that signed the brokers' certificates" if key == "ssl.ca.location"
                                 else "of the client's certificate" if key == "ssl.certificate.location"
                                 else "of the client's private key"))


def params_fingerprint(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sorted((k, str(v)) for k, v in params.items())).encode()).hexdigest()[:16]


def check_common(params: Mapping[str, Any]) -> dict[str, Any]:
    """Checks every Kafka source needs; returns the params with string keys."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"kafka_params must be a dict of Kafka properties, got {type(params).__name__}")
    out = {str(k): v for k, v in params.items()}
    if not out.get("bootstrap.servers"):
        raise ConfigError("kafka_params needs 'bootstrap.servers' (host:port[,host:port...])")
    for key, why in FORBIDDEN.items():
        if key in out and str(out[key]).lower() not in ("false", "0"):
            raise ConfigError(f"kafka_params[{key!r}]={out[key]!r} is not allowed: {why}")
    reset = str(out.get("auto.offset.reset", "latest")).lower()
    if reset not in ("earliest", "latest", "smallest", "largest", "none", "error"):
        raise ConfigError(f"kafka_params['auto.offset.reset']={reset!r}: use 'earliest', 'latest' or 'none'")
    iso = str(out.get("isolation.level", "read_committed"))
    if iso not in ("read_committed", "read_uncommitted"):
        raise ConfigError(f"kafka_params['isolation.level']={iso!r}: use 'read_committed' or 'read_uncommitted'")
    check_security(out)
    return out
