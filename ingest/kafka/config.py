"""Kafka client properties as users give them (`bootstrap.servers`, `group.id`,
...): checks shared by the direct stream and the Kafka receiver, and redaction
so that secrets never reach a log line or an error message."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ingest.errors import ConfigError

SECRET_WORDS = ("password", "secret", "jaas", "token", "key.pem", "keystore", "credential")
FORBIDDEN = {
    "enable.auto.commit": "ingest commits offsets itself, only after the data is safe (after the batch commits, or after the block is stored)",
}
OURS = {"auto.offset.reset"}  # used by the driver for partitions without a starting position


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("***" if any(w in k.lower() for w in SECRET_WORDS) else v) for k, v in params.items()}


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
    return out
