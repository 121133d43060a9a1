"""Kafka security settings without a broker: the checks made when a stream or sink
is built, the conversion to kafka-python's names, the redaction of secrets, and
how each client's words for a refused handshake are told to the user (the
real broker's answers: tests/integration/test_kafka_security.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingest import ConfigError
from ingest.kafka.config import check_common, kafka_python_config, redact
from ingest.kafka.security import ConfluentCauses, KafkaPythonCauses, explain

SASL = {"bootstrap.servers": "b1:9096,b2:9096", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "etl", "sasl.password": "pw-secret-1", "ssl.key.password": "key-secret-2"}


def test_kafka_python_config_renames_what_kafka_python_spells_differently() -> None:
    assert kafka_python_config({**SASL, "ssl.ca.location": "/ca.pem", "ssl.certificate.location": "/c.pem",
                                "ssl.key.location": "/k.pem", "client.id": "x"}) == {
        "bootstrap_servers": ["b1:9096", "b2:9096"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "etl", "sasl_plain_password": "pw-secret-1",
        "ssl_password": "key-secret-2", "ssl_cafile": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
        "client_id": "x"}


def test_secrets_are_redacted() -> None:
    shown = redact(SASL)
    assert shown["sasl.password"] == shown["ssl.key.password"] == "***"
    assert shown["sasl.username"] == "etl"


@pytest.mark.parametrize("setting", ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location"])
def test_a_file_setting_naming_no_file_is_a_config_error(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ConfigError, match=rf"kafka_params\['{setting}'\]: .*nope.pem does not exist; set"):
        check_common({**SASL, setting: str(tmp_path / "nope.pem")})
    with pytest.raises(ConfigError, match="is a directory, not a file"):
        check_common({**SASL, setting: str(tmp_path)})


def test_existing_files_and_probe_pass(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    check_common({**SASL, "ssl.ca.location": str(ca)})
    check_common({**SASL, "ssl.ca.location": "probe"})


def test_an_unknown_protocol_or_mechanism_is_a_config_error_that_hides_no_secret() -> None:
    with pytest.raises(ConfigError, match="use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL") as caught:
        check_common({**SASL, "security.protocol": "TLS"})
    assert "pw-secret-1" not in str(caught.value)
    with pytest.raises(ConfigError, match="'SCRAM-SHA-1' is not a SASL mechanism"):
        check_common({**SASL, "sasl.mechanisms": "SCRAM-SHA-1"})


@pytest.mark.parametrize("cause, says, setting", [
    ("sasl_ssl://b1:9096/bootstrap: SASL authentication error: Authentication failed during authentication due "
     "to invalid credentials with SASL mechanism SCRAM-SHA-512", "authentication failed for user 'etl'",
     "['sasl.password']"),
    ("Bootstrap connection to bootstrap-0 failed: [Error 58] SaslAuthenticationFailedError: Authentication failed",
     "authentication failed", "['sasl.username']"),
    ("SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL mechanism: broker's supported "
     "mechanisms: SCRAM-SHA-512", "does not offer SASL mechanism 'SCRAM-SHA-512'", "['sasl.mechanism']"),
    ("Bootstrap connection to bootstrap-0 failed: [Error 33] UnsupportedSaslMechanismError",
     "does not offer SASL mechanism", "['sasl.mechanism']"),
    ("ssl://b1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
     "certificate verify failed", "['ssl.ca.location']"),
    ("KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
     "certificate verify failed", "['ssl.ca.location']"),
    ("SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker "
     "listener?", "is not a TLS listener", "['bootstrap.servers']"),
])
def test_each_refused_handshake_is_told_with_the_setting_to_fix(cause: str, says: str, setting: str) -> None:
    told = explain(cause, SASL)
    assert told is not None and says in told and f"kafka_params{setting}" in told
    assert "pw-secret-1" not in told and "key-secret-2" not in told
    assert f"producer_config{setting}" in (explain(cause, SASL, "producer_config") or "")


def test_other_failures_are_not_taken_for_refused_handshakes() -> None:
    assert explain("b1:9096/bootstrap: Connect to ipv4#10.0.0.1:9096 failed: Connection refused", SASL) is None
    assert explain("Broker: Not coordinator", SASL) is None


class FakeError:
    def __init__(self, name: str, text: str) -> None:
        self._name, self._text = name, text

    def name(self) -> str:
        return self._name

    def str(self) -> str:
        return self._text


def test_confluent_causes_keep_the_last_refusal_once() -> None:
    causes = ConfluentCauses(SASL)
    causes(FakeError("_TRANSPORT", "Connect to ipv4#10.0.0.1:9096 failed: Connection refused"))
    assert causes.take() is None
    causes(FakeError("_AUTHENTICATION", "SASL authentication error: Authentication failed"))
    causes(FakeError("_ALL_BROKERS_DOWN", "1/1 brokers are down"))
    assert "authentication failed" in (causes.take() or "")
    assert causes.take() is None


def test_kafka_python_causes_hear_the_kafka_logger_while_attached() -> None:
    causes = KafkaPythonCauses(SASL)
    logger = logging.getLogger("kafka.net.manager")
    logger.warning("Bootstrap connection failed: [Error 58] SaslAuthenticationFailedError: x")
    assert causes.last is None  # not attached yet
    causes.attach()
    try:
        logger.warning("Bootstrap connection failed: [Error 58] SaslAuthenticationFailedError: x")
        assert "authentication failed" in (causes.last or "")
    finally:
        causes.detach()
    assert causes.last is None
    logger.warning("Bootstrap connection failed: [Error 58] SaslAuthenticationFailedError: x")
    assert causes.last is None
