"""The pytest plugin of ingest: a real Kafka broker for tests.

pytest loads this module in every session of an environment where ingest is installed
(entry point ``pytest11``), so importing it must stay cheap: no Kafka client, Docker
or testcontainers import here, and nothing starts until a test asks for a fixture.

Fixtures (session scope, one broker per session):

* ``kafka_bootstrap``: the bootstrap address, "host:port".
* ``kafka_service``: a `KafkaService` saying where that broker came from.

The broker is, in this order: the one named by ``KAFKA_BOOTSTRAP_SERVERS``; a
testcontainers Kafka container when a Docker engine answers a ping (set
``INGEST_USE_DOCKER=0`` to skip Docker); a local broker started from Apache Kafka's
jars on Maven Central (``ingest.testing.kafka.KafkaBroker``; version from
``INGEST_KAFKA_VERSION``). When none is possible, the tests are skipped with what to
install, except on CI (``CI=true``), where they fail.

``postgres_dsn`` (session scope) is the DSN of a real PostgreSQL server:
``POSTGRES_DSN`` if set, else a throwaway server started from the PostgreSQL server
binaries on this machine (``ingest.testing.postgres.PostgresServer``); without them,
skipped with what to install, or failed on CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

DOCKER_IMAGE = "confluentinc/cp-kafka:7.9.2"

# Single-node settings the Confluent image does not set by itself; without the
# transaction-state ones, init_transactions() fails on one broker.
DOCKER_SINGLE_NODE_ENV = {
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
}


@dataclass(frozen=True)
class KafkaService:
    """The broker a session uses. `source` is "env", "docker" or "jvm"; `pid` and
    `workdir` are set for a local JVM broker only."""

    bootstrap: str
    source: str
    pid: int | None = None
    workdir: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (the kafka_bootstrap fixture)")
    config.addinivalue_line("markers", "postgres: needs a real PostgreSQL server (the postgres_dsn fixture)")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def on_ci() -> bool:
    return _truthy(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """A service the tests need is missing: a clear skip locally, a failure on CI,
    where a missing service must never pass silently."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def docker_engine_answers() -> bool:
    """Whether a Docker engine answers a ping. A `docker` CLI on PATH proves nothing."""
    if os.environ.get("INGEST_USE_DOCKER", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # DockerException, connection errors: no engine
        return False


def _kafka_in_docker() -> Iterator[KafkaService]:
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers <= 4.14
        from testcontainers.kafka import KafkaContainer
    container = KafkaContainer(os.environ.get("INGEST_KAFKA_IMAGE", DOCKER_IMAGE)).with_kraft()
    for name, value in DOCKER_SINGLE_NODE_ENV.items():
        container.with_env(name, value)
    try:
        container.start(timeout=120)
        yield KafkaService(container.get_bootstrap_server(), "docker")
    finally:
        container.stop()


def _kafka_from_maven_central() -> Iterator[KafkaService]:
    from ingest.testing import kafka

    missing = kafka.missing_requirements()
    if missing:
        skip_or_fail(
            "no Kafka broker for these tests: install " + " and ".join(missing)
            + " so that one starts from Maven Central jars, or start a Docker engine, "
            "or set KAFKA_BOOTSTRAP_SERVERS=host:port"
        )
    broker = kafka.KafkaBroker(os.environ.get("INGEST_KAFKA_VERSION") or None)
    broker.start()
    try:
        yield KafkaService(broker.bootstrap, "jvm", pid=broker.pid, workdir=str(broker.workdir))
    finally:
        broker.stop()


def _check_external(bootstrap: str) -> None:
    """A broker named on purpose must answer: say so once, instead of letting every
    test time out on its own."""
    from ingest.errors import ServiceError
    from ingest.testing import kafka

    try:
        answers = kafka.broker_answers(bootstrap, timeout=5.0)
    except ServiceError:  # no client library to ask with: let the tests find out
        return
    if not answers:
        raise ServiceError(
            f"KAFKA_BOOTSTRAP_SERVERS={bootstrap} does not answer a metadata request within 5 s; "
            f"start that broker, or unset the variable to let the tests start one"
        )


@pytest.fixture(scope="session")
def kafka_service() -> Iterator[KafkaService]:
    """The session's Kafka broker (see the module docstring for where it comes from)."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        _check_external(external)
        yield KafkaService(external, "env")
    elif docker_engine_answers():
        yield from _kafka_in_docker()
    else:
        yield from _kafka_from_maven_central()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    """Bootstrap address ("host:port") of a real Kafka broker shared by the session."""
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a real PostgreSQL server shared by the session: ``POSTGRES_DSN`` if set,
    else a throwaway local server, stopped and deleted at the end of the session."""
    external = os.environ.get("POSTGRES_DSN", "").strip()
    if external:
        yield external
        return
    from ingest.testing import postgres

    missing = postgres.missing_requirements()
    if missing:
        skip_or_fail("no PostgreSQL server for these tests: install " + " and ".join(missing)
                     + ", or set POSTGRES_DSN to a server's DSN")
    with postgres.PostgresServer() as server:
        yield server.dsn
