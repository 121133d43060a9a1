"""The pytest plugin of ingest: a real Kafka broker for tests.

pytest loads this module in every session of an environment where ingest is installed
(entry point ``pytest11``), so importing it must stay cheap: no Kafka client, Docker
or testcontainers import here, and nothing starts until a test asks for a fixture.

Fixtures (session scope, one broker per session):

* ``kafka_bootstrap``: the bootstrap address, "host:port".
* ``kafka_service``: a `KafkaService` saying where that broker came from.
* ``kafka_sasl_bootstrap`` and ``kafka_tls_bootstrap``: dicts of confluent-kafka
  settings (``bootstrap.servers``, ``security.protocol``, ``sasl.mechanism``,
  ``sasl.username``, ``sasl.password``; or ``ssl.ca.location``) that reach a broker
  over SASL_PLAINTEXT with SCRAM-SHA-512 and over TLS; a new dict for each test.
  ``ingest.testing.kafka_python_config(settings)`` converts one for kafka-python.
  They come from the session's broker when it is a local JVM broker (it serves
  those listeners beside PLAINTEXT), else from a second local JVM broker started
  for them; without Java, Maven or `cryptography`, skipped (failed on CI).

The broker is, in this order: the one named by ``KAFKA_BOOTSTRAP_SERVERS``; a broker
in a container (``ingest.testing.containers.KafkaBrokerContainer``, on testcontainers)
when a Docker engine answers a ping and has the image (``INGEST_KAFKA_IMAGE``, default
the project's ``ingest/kafka:<version>``, built by ``ingest services image kafka``; set
``INGEST_USE_DOCKER=0`` to skip Docker); a local broker started from Apache Kafka's jars
on Maven Central (``ingest.testing.kafka.KafkaBroker``; version from
``INGEST_KAFKA_VERSION``). When none is possible, the tests are skipped with what to
install, except on CI (``CI=true``), where they fail.

``INGEST_KAFKA_BACKEND=env|testcontainers|jvm`` forces one of the three: the session
then uses that one or fails saying why, whatever CI says.

``flume_agent`` (function scope) is a factory of real Apache Flume 1.11 agents:
``flume_agent(config, plugin_jars=...)`` starts one with that Flume properties text
(see ``ingest.testing.flume.agent_config`` and its component helpers), waits until its
components report started and returns the ``FlumeAgent``; every agent it started is
stopped and its files deleted when the test ends. ``flume_sink_jar`` (session scope)
is the path of our pull sink's jar, built once per session with Maven.

``postgres_dsn`` (session scope) is the DSN of a real PostgreSQL server:
``POSTGRES_DSN`` if set, else a throwaway server started from the PostgreSQL server
binaries on this machine (``ingest.testing.postgres.PostgresServer``); without them,
skipped with what to install, or failed on CI.

HDFS and S3 (session scope, started on first use):

* ``hdfs_service``: an `ingest.testing.hdfs.HdfsCluster` (MiniDFSCluster with one
  DataNode from Maven Central jars, on free 127.0.0.1 ports, its data, logs and temp
  files in its own work directory, deleted at the end); ``hdfs_url`` its
  ``hdfs://127.0.0.1:<webhdfs port>``; ``hdfs_dir`` (per test) a fresh directory URL
  on it. ``INGEST_HDFS_URL`` names an existing cluster instead (then
  ``hdfs_service`` is skipped: it cannot be paused).
* ``s3_service``: an `ingest.testing.s3.S3Server` (moto's server on a free
  127.0.0.1 port); ``s3_endpoint`` its URL; ``s3_storage_options`` the storage
  options pointing at it; ``s3_bucket`` (per test) a fresh empty bucket.
  ``INGEST_S3_ENDPOINT`` names an existing S3-compatible server instead (with the
  usual AWS_* credentials).

``INGEST_HDFS_BACKEND=env|testcontainers|jvm`` and ``INGEST_S3_BACKEND=env|testcontainers|local``
force a path as ``INGEST_KAFKA_BACKEND`` does; the default order stays env, then the
local launcher. With ``testcontainers`` the session's HDFS and S3 are the same servers
in containers (``ingest.testing.storage_containers``: ``HdfsContainer`` on the image
``INGEST_HDFS_IMAGE``, default ``ingest/hdfs:<hadoop version>``; ``S3Container`` on
``INGEST_S3_IMAGE``, default ``ingest/s3:<moto version>``; built by
``ingest services image hdfs|s3``), which pause and resume like the local ones.

Missing Java/Maven/packages skip the tests with what to install, or fail them on CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

KAFKA_BACKENDS = ("env", "testcontainers", "jvm")
# INGEST_<SERVICE>_BACKEND's choices per service, and the default order when it is unset.
# HDFS and S3 use a container only when asked to: their local launchers start in seconds.
BACKENDS = {
    "kafka": (KAFKA_BACKENDS, "env, testcontainers, jvm"),
    "hdfs": (("env", "testcontainers", "jvm"), "env, jvm"),
    "s3": (("env", "testcontainers", "local"), "env, local"),
}
SERVICE_TITLES = {"kafka": "Kafka", "hdfs": "HDFS", "s3": "S3"}
ARTICLED_TITLES = {"kafka": "a Kafka", "hdfs": "an HDFS", "s3": "an S3"}


@dataclass(frozen=True)
class KafkaService:
    """The broker a session uses. `source` is "env", "testcontainers" or "jvm"; `pid`
    and `workdir` are set for a local JVM broker only, `container` (its name) and
    `image` for a container only. `sasl` and `tls` are the confluent-kafka settings
    of its SASL and TLS listeners, when it has them (a local JVM broker); they
    hold a password, so they stay out of the repr."""

    bootstrap: str
    source: str
    pid: int | None = None
    workdir: str | None = None
    container: str | None = None
    image: str | None = None
    sasl: Mapping[str, str] | None = field(default=None, repr=False)
    tls: Mapping[str, str] | None = field(default=None, repr=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (the kafka_bootstrap fixture)")
    config.addinivalue_line("markers", "postgres: needs a real PostgreSQL server (the postgres_dsn fixture)")
    config.addinivalue_line("markers", "hdfs: needs a real HDFS (the hdfs_url fixture)")
    config.addinivalue_line("markers", "s3: needs a real S3-compatible server (the s3_endpoint fixture)")
    config.addinivalue_line("markers", "flume: needs a real Apache Flume agent (the flume_agent fixture)")
    config.addinivalue_line("markers", "docker: needs a Docker engine (the docker_client fixture)")
    config.addinivalue_line("markers", "jvm_launcher: tests the local JVM broker launcher itself, whatever "
                                       "broker the session uses")


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
        from ingest.testing.docker_engine import engine_answers
    except ImportError:
        return False
    return engine_answers()


def forced_backend(service: str) -> str | None:
    """The backend INGEST_<SERVICE>_BACKEND forces (see BACKENDS), or None for the
    default order; ConfigError for a value that is not one of the service's backends."""
    from ingest.errors import ConfigError

    variable = f"INGEST_{service.upper()}_BACKEND"
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return None
    choices, order = BACKENDS[service]
    if value not in choices:
        raise ConfigError(f"{variable}={value!r} is not {ARTICLED_TITLES[service]} backend: use one of "
                          f"{', '.join(choices)}, or unset it for the default order ({order})")
    return value


def kafka_backend() -> str | None:
    """The backend INGEST_KAFKA_BACKEND forces, or None for the default order."""
    return forced_backend("kafka")


def container_forced() -> list[str]:
    """The INGEST_<SERVICE>_BACKEND variables that force testcontainers (an engine is then a must)."""
    variables = [f"INGEST_{service.upper()}_BACKEND" for service in BACKENDS]
    return [v for v in variables if os.environ.get(v, "").strip().lower() == "testcontainers"]


def kafka_image() -> str:
    from ingest.testing.images import kafka_image as project_image

    return os.environ.get("INGEST_KAFKA_IMAGE", "").strip() or project_image(os.environ.get("INGEST_KAFKA_VERSION"))


def _container_unavailable() -> str | None:
    """Why the default order cannot use a container (None when it can): Docker skipped,
    no engine, or no image to run. Only a forced backend turns these into failures."""
    if os.environ.get("INGEST_USE_DOCKER", "").strip().lower() in ("0", "false", "no", "off"):
        return "INGEST_USE_DOCKER=0"
    from ingest.errors import ServiceError
    from ingest.testing.docker_engine import engine_client
    from ingest.testing.images import image_present

    try:
        client = engine_client(timeout=3)
    except ServiceError as exc:
        return str(exc)
    image = kafka_image()
    try:
        if not image_present(client, image) and not os.environ.get("INGEST_KAFKA_IMAGE", "").strip():
            return f"the Docker engine has no image {image} (build it with `ingest services image kafka`)"
    finally:
        client.close()
    return None


def in_container(service: str, make: Callable[[], Any]) -> Iterator[Any]:
    """A started `ServiceContainer` of `service` for the session, after removing the
    containers of dead sessions; removed at the end of the session (and by the next
    session when this one is killed). Fails the tests that need it, saying why."""
    from ingest.errors import IngestError
    from ingest.testing.docker_engine import engine_client

    other = {"kafka": "jvm", "hdfs": "jvm", "s3": "local"}[service]
    container = None
    try:
        # No engine: say so in our words, before testcontainers tries.
        engine_client(otherwise=f"use another {SERVICE_TITLES[service]} backend "
                                f"(INGEST_{service.upper()}_BACKEND={other})").close()
        container = make()
        container.start()
    except IngestError as exc:
        if container is not None:
            container.stop()
        pytest.fail(f"{SERVICE_TITLES[service]} in a container could not be had: {exc}", pytrace=False)
    try:
        yield container
    finally:
        container.stop()


def _kafka_in_container() -> Iterator[KafkaService]:
    from ingest.testing.containers import KafkaBrokerContainer

    for container in in_container("kafka", lambda: KafkaBrokerContainer(kafka_image())):
        yield KafkaService(container.bootstrap, "testcontainers", container=container.get_wrapped_container().name,
                           image=container.image)


def _kafka_from_maven_central(forced: bool = False, why_not_container: str = "",
                              secure: bool | None = None) -> Iterator[KafkaService]:
    from ingest.testing import kafka, tls

    missing = kafka.missing_requirements()
    if secure and not tls.cryptography_available():
        missing.append(tls.INSTALL_CRYPTOGRAPHY)
    if missing:
        reason = ("no Kafka broker for these tests: install " + " and ".join(missing)
                  + " so that one starts from Maven Central jars, or start a Docker engine, "
                  "or set KAFKA_BOOTSTRAP_SERVERS=host:port"
                  + (f" (no container either: {why_not_container})" if why_not_container else ""))
        if forced:
            pytest.fail(f"INGEST_KAFKA_BACKEND=jvm, but {reason}", pytrace=False)
        skip_or_fail(reason)
    broker = kafka.KafkaBroker(os.environ.get("INGEST_KAFKA_VERSION") or None, secure_listeners=secure)
    broker.start()
    try:
        secured = broker.serves_secure_listeners
        yield KafkaService(broker.bootstrap, "jvm", pid=broker.pid, workdir=str(broker.workdir),
                           sasl=broker.sasl_settings if secured else None,
                           tls=broker.tls_settings if secured else None)
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
    from ingest.errors import IngestError

    try:
        backend = kafka_backend()
    except IngestError as exc:
        pytest.fail(str(exc), pytrace=False)
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if backend == "env" or (backend is None and external):
        if not external:
            pytest.fail("INGEST_KAFKA_BACKEND=env, but KAFKA_BOOTSTRAP_SERVERS is not set: set it to the "
                        "broker's host:port, or choose another backend", pytrace=False)
        _check_external(external)
        yield KafkaService(external, "env")
    elif backend == "testcontainers":
        # Forced: no fallback, and the engine's own words say what is missing.
        yield from _kafka_in_container()
    elif backend == "jvm":
        yield from _kafka_from_maven_central(forced=True)
    else:
        why_not_container = _container_unavailable()
        if why_not_container is None:
            yield from _kafka_in_container()
        else:
            yield from _kafka_from_maven_central(why_not_container=why_not_container)


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client of the engine at DOCKER_HOST. Without an engine the tests that
    need one are skipped (an engine is optional, even on CI), unless
    INGEST_KAFKA_BACKEND=testcontainers asks for one: then they fail."""
    from ingest.errors import ServiceError
    from ingest.testing.docker_engine import engine_client

    try:
        client = engine_client()
    except ServiceError as exc:
        forced = container_forced()
        if forced:
            pytest.fail(f"{' and '.join(forced)}=testcontainers, but {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_service: KafkaService) -> str:
    """Bootstrap address ("host:port") of a real Kafka broker shared by the session."""
    return kafka_service.bootstrap


@pytest.fixture(scope="session")
def kafka_secure_service(kafka_service: KafkaService) -> Iterator[KafkaService]:
    """A broker with SASL and TLS listeners: the session's own when it has them,
    else a local JVM broker started for them (a broker named by
    KAFKA_BOOTSTRAP_SERVERS, or one in a container, serves PLAINTEXT only)."""
    if kafka_service.sasl is not None and kafka_service.tls is not None:
        yield kafka_service
        return
    yield from _kafka_from_maven_central(secure=True)


@pytest.fixture
def kafka_sasl_bootstrap(kafka_secure_service: KafkaService) -> dict[str, str]:
    """confluent-kafka settings of a SASL_PLAINTEXT (SCRAM-SHA-512) listener: a new dict per test."""
    assert kafka_secure_service.sasl is not None
    return dict(kafka_secure_service.sasl)


@pytest.fixture
def kafka_tls_bootstrap(kafka_secure_service: KafkaService) -> dict[str, str]:
    """confluent-kafka settings of an SSL (TLS) listener, with the CA to trust: a new dict per test."""
    assert kafka_secure_service.tls is not None
    return dict(kafka_secure_service.tls)


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


# -- HDFS and S3 ----------------------------------------------------------------------------


def _external(service: str, variable: str) -> str | None:
    """The external server's address when the session uses it (INGEST_<SERVICE>_BACKEND
    is env, or unset and `variable` is set), else None."""
    from ingest.errors import IngestError

    try:
        backend = forced_backend(service)
    except IngestError as exc:
        pytest.fail(str(exc), pytrace=False)
    external = os.environ.get(variable, "").strip().rstrip("/")
    if backend == "env" and not external:
        pytest.fail(f"INGEST_{service.upper()}_BACKEND=env, but {variable} is not set: set it, or choose another "
                    f"backend", pytrace=False)
    return external if backend == "env" or (backend is None and external) else None


def storage_image(service: str) -> str:
    """The image of the HDFS or S3 container: INGEST_<SERVICE>_IMAGE, else the project's."""
    from ingest.testing import images

    default = images.hdfs_image() if service == "hdfs" else images.s3_image()
    return os.environ.get(f"INGEST_{service.upper()}_IMAGE", "").strip() or default


def _server_for_session(service: str, make: Callable[[], Any], make_container: Callable[[], Any],
                        missing_requirements: Callable[[], list[str]], *, local_backend: str, what: str,
                        external_var: str, external: str, starts_how: str, name: str) -> Iterator[Any]:
    """The session's server for `service`, stopped at its end: a container when
    INGEST_<SERVICE>_BACKEND=testcontainers, else a local one (`make()`). Skipped when
    `external_var` names an external one (a test asking for the server itself wants one it
    can pause), or, with what to install, when this machine lacks what it needs."""
    if _external(service, external_var) is not None:
        pytest.skip(f"{external_var} names an external {external}; this test needs one it can pause")
    if forced_backend(service) == "testcontainers":
        yield from in_container(service, make_container)
        return
    from ingest.errors import IngestError

    missing = missing_requirements()
    if missing:
        reason = (f"no {what} for these tests: install " + " and ".join(missing)
                  + f"{starts_how}, or set {external_var}")
        if forced_backend(service) == local_backend:
            pytest.fail(f"INGEST_{service.upper()}_BACKEND={local_backend}, but {reason}", pytrace=False)
        skip_or_fail(reason)
    server = make()
    try:
        server.start()
    except IngestError as exc:
        pytest.fail(f"{name} did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hdfs_service():
    """The session's HDFS: a MiniDFSCluster from Maven Central jars, or the same in a
    container with INGEST_HDFS_BACKEND=testcontainers (see the module docstring)."""
    from ingest.testing import hdfs

    def container() -> Any:
        from ingest.testing.storage_containers import HdfsContainer

        return HdfsContainer(storage_image("hdfs"))

    yield from _server_for_session("hdfs", hdfs.HdfsCluster, container, hdfs.missing_requirements,
                                   local_backend="jvm", what="HDFS", external_var="INGEST_HDFS_URL",
                                   external="cluster",
                                   starts_how=" so that a MiniDFSCluster starts from Maven Central jars",
                                   name="the HDFS minicluster")


@pytest.fixture(scope="session")
def hdfs_url(request: pytest.FixtureRequest) -> str:
    """``hdfs://host:port`` (the NameNode's WebHDFS address) of the session's HDFS."""
    return _external("hdfs", "INGEST_HDFS_URL") or request.getfixturevalue("hdfs_service").url


@pytest.fixture
def hdfs_dir(hdfs_url: str) -> str:
    """A fresh directory URL on the session's HDFS, for one test."""
    import uuid

    return f"{hdfs_url}/tests/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_service():
    """The session's S3 server: moto's in a child process, or in a container with
    INGEST_S3_BACKEND=testcontainers (see the module docstring)."""
    from ingest.testing import s3

    def container() -> Any:
        from ingest.testing.storage_containers import S3Container

        return S3Container(storage_image("s3"))

    yield from _server_for_session("s3", s3.S3Server, container, s3.missing_requirements,
                                   local_backend="local", what="S3 server", external_var="INGEST_S3_ENDPOINT",
                                   external="server", starts_how="", name="moto's S3 server")


@pytest.fixture(scope="session")
def s3_endpoint(request: pytest.FixtureRequest) -> str:
    """The URL of the session's S3-compatible server."""
    return _external("s3", "INGEST_S3_ENDPOINT") or request.getfixturevalue("s3_service").endpoint


@pytest.fixture(scope="session")
def s3_storage_options(s3_endpoint: str) -> dict:
    """Storage options for `s3://` locations on the session's server (endpoint and,
    for the local emulator, its dummy credentials)."""
    if _external("s3", "INGEST_S3_ENDPOINT") is not None:
        return {"endpoint_url": s3_endpoint}
    from ingest.testing.s3 import TEST_CREDENTIALS

    return {"endpoint_url": s3_endpoint, **TEST_CREDENTIALS}


@pytest.fixture
def s3_bucket(s3_storage_options: dict) -> str:
    """A fresh, empty bucket for one test."""
    import uuid

    import boto3

    opts = dict(s3_storage_options)
    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=opts.get("endpoint_url"), region_name=opts.get("region", "us-east-1"),
                 aws_access_key_id=opts.get("aws_access_key_id"),
                 aws_secret_access_key=opts.get("aws_secret_access_key")).create_bucket(Bucket=name)
    return name
@pytest.fixture
def flume_agent():
    """A factory of real Flume 1.11 agents: ``flume_agent(config, **options)`` returns a
    started ``ingest.testing.flume.FlumeAgent``; all are stopped after the test."""
    from ingest.testing import flume

    missing = flume.missing_requirements()
    if missing:
        skip_or_fail("no Flume agent for these tests: install " + " and ".join(missing)
                     + " so that one starts from Maven Central jars")
    agents: list = []

    def start(config: str, **options):
        agent = flume.FlumeAgent(config, **options)
        agents.append(agent)
        return agent.start()

    try:
        yield start
    finally:
        for agent in reversed(agents):
            agent.stop()


@pytest.fixture(scope="session")
def flume_sink_jar() -> str:
    """Our Flume pull sink's jar, built with Maven once (cached across sessions)."""
    from ingest.testing import flume

    missing = flume.missing_requirements()
    if missing:
        skip_or_fail("cannot build the Flume pull sink: install " + " and ".join(missing))
    return str(flume.build_pull_sink_jar())
