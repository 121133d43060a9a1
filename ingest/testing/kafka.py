"""A real single-node Kafka broker for tests and development, and small client helpers.

`KafkaBroker` starts Apache Kafka 4.x in KRaft mode (broker and controller in one JVM)
from the jars on Maven Central: no Docker, no Kafka download besides Maven's. It listens
on free ports of 127.0.0.1 only, has the settings single-node transactions need, and is
ready when its log says "Kafka Server started" and it answers a metadata request. When
it stops, its data directory is deleted. The pytest plugin (`ingest.testing.plugin`)
and `ingest services kafka` (`run_forever`) both use it.

Besides its PLAINTEXT listener (what `bootstrap` names), the broker serves the two
ways production clusters are reached, each on a free port of its own: SASL_PLAINTEXT
with SCRAM-SHA-512 (one user, `SCRAM_USER`, with a random password, created when the
storage is formatted) and SSL (TLS, server authentication, with a CA and a broker
certificate for 127.0.0.1/localhost made at start by `ingest.testing.tls` into the
broker's temporary directory). `sasl_settings` and `tls_settings` are the
confluent-kafka settings that reach them; `kafka_python_config()` converts such
settings for kafka-python. They need `cryptography` (the `test` extra); without it
the broker serves PLAINTEXT only, unless `secure_listeners=True` asks for them.

`create_topic`, `produce` and `read_to_end` are helpers for tests, built on
confluent-kafka (the `kafka` extra), which is imported only when they are called.

Run ``python -m ingest.testing.kafka`` to start a broker in the foreground.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import PortInUseError, ServiceError, ServiceStartError, ServiceToolMissingError, StaleServiceDirError
from ingest.install_hint import install_hint
from ingest.testing.foreground import serve_in_foreground
from ingest.testing.jvm import JavaService, free_port, missing_tools, port_is_free, require_tools, resolve_classpath
from ingest.testing.tls import INSTALL_CRYPTOGRAPHY, cryptography_available, make_broker_pki

DEFAULT_KAFKA_VERSION = "4.1.1"

# Kafka's published poms lack the SLF4J binding, so the pom adds log4j-slf4j-impl, whose
# version must match the log4j that release was built with (its dependencies.gradle).
LOG4J_FOR_KAFKA = {"4.1": "2.24.3", "4.2": "2.25.3", "4.3": "2.25.5"}

# A small broker for 2-core test machines: serial GC and C1 only cut start-up CPU, and
# 512 MiB of heap is plenty once the cleaner's dedupe buffer is shrunk (see the
# server.properties template).
BROKER_JVM_OPTS = (
    "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-XX:MaxDirectMemorySize=256m", "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
)
TOOL_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true")

STARTED_LINE = re.compile(r"Kafka Server started")
BIND_FAILED = re.compile(r"Address already in use|BindException")

INSTALL_CLIENT = f"confluent-kafka ({install_hint('kafka')})"

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "ingest"


def java_dir() -> Path:
    """The files the launchers need (poms, config templates). In a checkout this is a
    symlink to the repository's docker/ folder; in a wheel the files are copied."""
    return Path(__file__).resolve().parent / "java"


def kafka_pom() -> Path:
    return java_dir() / "kafka" / "pom.xml"


def log4j_version_for(kafka_version: str) -> str:
    minor = ".".join(kafka_version.split(".")[:2])
    try:
        return LOG4J_FOR_KAFKA[minor]
    except KeyError:
        supported = ", ".join(f"{m}.x" for m in LOG4J_FOR_KAFKA)
        raise ServiceError(
            f"Kafka {kafka_version} is not supported by the launcher; choose one of {supported}"
        ) from None


def kafka_classpath(kafka_version: str = DEFAULT_KAFKA_VERSION) -> str:
    """The runtime classpath of a Kafka broker, resolved from Maven Central once."""
    return resolve_classpath(
        kafka_pom(),
        properties={"kafka.version": kafka_version, "log4j.version": log4j_version_for(kafka_version)},
    )


def missing_requirements() -> list[str]:
    """What must be installed before `KafkaBroker` can run here; empty when nothing."""
    missing = missing_tools(min_java=17)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        missing.append(INSTALL_CLIENT)
    return missing


def _confluent():
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401  (a submodule: not loaded by the package)
    except ImportError:
        raise ServiceToolMissingError(f"the Kafka helpers need {INSTALL_CLIENT}") from None
    return confluent_kafka


def _another_free_port(taken: set[int | None]) -> int:
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def _cluster_id() -> str:
    # Kafka's own form of a random Uuid: URL-safe base64 of 16 bytes, unpadded.
    # Like Kafka's generator, never start with '-': StorageTool would read it as an option.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether a broker at `bootstrap` answers a metadata request and lists itself."""
    admin = _confluent().admin.AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:  # KafkaException: not reachable yet
        return False


class KafkaBroker:
    """A single-node Kafka broker (KRaft, broker and controller in one JVM).

    Use as a context manager, or call `start()` and `stop()`. `port` and
    `controller_port` default to free ports of 127.0.0.1; when the broker then finds a
    port taken (another process won the race), it starts again on new ports, up to
    `attempts` times. `workdir` defaults to a fresh directory deleted on stop; a given
    `workdir` is kept, but its data directory is deleted on stop, and one left behind by
    a killed run is refused (StaleServiceDirError). `overrides` are extra broker
    settings, appended to the server.properties template.

    `secure_listeners`: also serve SASL_PLAINTEXT (SCRAM-SHA-512) and SSL listeners
    (see the module docstring); None (the default) serves them when `cryptography`
    is installed, True requires it, False serves PLAINTEXT only.
    """

    def __init__(
        self,
        kafka_version: str | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, object] | None = None,
        start_timeout: float = 120.0,
        attempts: int = 3,
        die_with_parent: bool = False,
        secure_listeners: bool | None = None,
    ):
        self.kafka_version = kafka_version or DEFAULT_KAFKA_VERSION
        self._port = port
        self._controller_port = controller_port
        self._workdir = workdir
        self.overrides = dict(overrides or {})
        self.start_timeout = start_timeout
        self.attempts = max(1, attempts)
        self.attempts_used = 0
        self.die_with_parent = die_with_parent  # see JavaService.start
        self.port: int | None = None
        self.controller_port: int | None = None
        self.sasl_port: int | None = None
        self.ssl_port: int | None = None
        self.secure_listeners = secure_listeners
        self._scram_password: str | None = None
        self._ca_pem: Path | None = None
        self._service: JavaService | None = None

    # -- what callers use

    @property
    def bootstrap(self) -> str:
        if self.port is None or not self.running:
            raise ServiceError("the Kafka broker is not running; start() it first")
        return f"127.0.0.1:{self.port}"

    @property
    def serves_secure_listeners(self) -> bool:
        """Whether the running broker has its SASL and SSL listeners."""
        return self.running and self.sasl_port is not None and self.ssl_port is not None

    def _secure(self, which: str) -> None:
        if not self.serves_secure_listeners:
            why = ("it is not running" if not self.running else
                   f"it was started without them (secure_listeners=False, or no {INSTALL_CRYPTOGRAPHY})")
            raise ServiceError(f"the Kafka broker has no {which} listener: {why}")

    @property
    def sasl_settings(self) -> dict[str, str]:
        """confluent-kafka settings of the SASL_PLAINTEXT listener (SCRAM-SHA-512).
        A new dict on each call, holding the password: never log it as it is."""
        self._secure("SASL")
        assert self._scram_password is not None
        return {"bootstrap.servers": f"127.0.0.1:{self.sasl_port}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SCRAM_MECHANISM, "sasl.username": SCRAM_USER,
                "sasl.password": self._scram_password}

    @property
    def tls_settings(self) -> dict[str, str]:
        """confluent-kafka settings of the SSL listener: the CA that signed the
        broker's certificate (a PEM file in the broker's directory)."""
        self._secure("SSL")
        return {"bootstrap.servers": f"127.0.0.1:{self.ssl_port}", "security.protocol": "SSL",
                "ssl.ca.location": str(self._ca_pem)}

    @property
    def running(self) -> bool:
        return self._service is not None and self._service.running

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service is not None else None

    @property
    def workdir(self) -> Path | None:
        return self._service.workdir if self._service is not None else None

    @property
    def data_dir(self) -> Path | None:
        return self.workdir / "data" if self._service is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._service.log_path if self._service is not None else None

    def log_tail(self) -> str:
        return self._service.log_tail() if self._service is not None else ""

    # -- lifecycle

    def start(self) -> KafkaBroker:
        if self.running:
            return self
        require_tools("a Kafka broker", min_java=17)
        _confluent()
        if self.secure_listeners and not cryptography_available():
            raise ServiceToolMissingError(f"secure_listeners=True needs {INSTALL_CRYPTOGRAPHY}")
        for port in (self._port, self._controller_port):
            if port is not None and not port_is_free(port):
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is already in use by another process; pick another "
                    f"port, or leave it out to let the broker choose a free one",
                    port=port,
                )
        for key in self.overrides:
            if key in ("listeners", "advertised.listeners", "log.dirs", "process.roles"):
                raise ServiceError(f"override {key!r} is managed by KafkaBroker and cannot be changed")
        classpath = kafka_classpath(self.kafka_version)
        for attempt in range(1, self.attempts + 1):
            self.attempts_used = attempt
            try:
                self._start_once(classpath)
                return self
            except ServiceStartError as exc:
                if not BIND_FAILED.search(exc.log_tail):
                    raise
                chosen = self._port is None or self._controller_port is None
                if chosen and attempt < self.attempts:
                    continue
                raise PortInUseError(
                    f"Kafka could not listen on 127.0.0.1:{self.port} / controller "
                    f"127.0.0.1:{self.controller_port}: the address is already in use"
                    + (f" (tried {attempt} pairs of free ports)" if chosen else "")
                    + f". The end of its log:\n{exc.log_tail}",
                    port=self.port,
                ) from exc
        raise AssertionError("unreachable")

    def _start_once(self, classpath: str) -> None:
        self.port = self._port or free_port()
        self.controller_port = self._controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        secure = self.secure_listeners if self.secure_listeners is not None else cryptography_available()
        self.sasl_port = self.ssl_port = None
        if secure:
            taken = {self.port, self.controller_port}
            self.sasl_port = _another_free_port(taken)
            self.ssl_port = _another_free_port(taken | {self.sasl_port})
        service = JavaService("kafka", workdir=self._workdir).open()
        self._service = service
        try:
            data_dir = service.workdir / "data"
            if data_dir.exists() and any(data_dir.iterdir()):
                raise StaleServiceDirError(
                    f"{data_dir} already holds Kafka data, left by a run that did not stop "
                    f"cleanly; delete it or choose another workdir",
                    path=str(data_dir),
                )
            properties = self._write_config(service.workdir, data_dir)
            scram: list[str] = []
            if secure:
                # The SCRAM user goes into the metadata log with the format: no admin
                # call, and no second JVM, after the broker is up.
                self._scram_password = secrets.token_urlsafe(18)
                scram = ["--add-scram", f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={self._scram_password}]"]
            service.run(
                classpath, "kafka.tools.StorageTool",
                ["format", "--standalone", "-t", _cluster_id(), "-c", properties, *scram],
                jvm_opts=TOOL_JVM_OPTS, timeout=self.start_timeout,
            )
            self._run_broker(classpath)
        except BaseException:
            self._close_service()
            raise

    def _run_broker(self, classpath: str) -> None:
        service = self._service
        assert service is not None
        bootstrap = f"127.0.0.1:{self.port}"
        mark = len(service.log_text())  # a restart's log continues the same file
        service.start(
            classpath, "kafka.Kafka", [str(service.workdir / "server.properties")],
            jvm_opts=(*BROKER_JVM_OPTS, f"-Dlog4j2.configurationFile={service.workdir / 'log4j2.properties'}"),
            ready=lambda: bool(STARTED_LINE.search(service.log_text()[mark:])) and broker_answers(bootstrap),
            timeout=self.start_timeout,
            die_with_parent=self.die_with_parent,
        )

    def stop_process(self) -> None:
        """Stop the broker's JVM (a clean shutdown) but keep its data, ports and
        configuration, so that `start_process()` brings the same broker back:
        what a broker restart looks like to clients."""
        if self._service is None:
            raise ServiceError("the Kafka broker was never started")
        self._service.stop()

    def start_process(self) -> None:
        """Start the JVM stopped by `stop_process()` again, on the same ports and data."""
        if self._service is None:
            raise ServiceError("the Kafka broker was never started")
        if not self._service.running:
            self._run_broker(kafka_classpath(self.kafka_version))

    def _write_config(self, workdir: Path, data_dir: Path) -> Path:
        template = (java_dir() / "kafka" / "server.properties.tmpl").read_text()
        secure = ""
        if self.sasl_port is not None and self.ssl_port is not None:
            secure = f",SASL_PLAINTEXT://127.0.0.1:{self.sasl_port},SSL://127.0.0.1:{self.ssl_port}"
        text = template.format(port=self.port, cport=self.controller_port, data_dir=data_dir,
                               secure_listeners=secure)
        if secure:
            tls_dir = workdir / "tls"
            tls_dir.mkdir(exist_ok=True)
            pki = make_broker_pki(tls_dir)
            self._ca_pem = pki.ca_pem
            text += (java_dir() / "kafka" / "security.properties.tmpl").read_text().format(keystore=pki.keystore_pem)
        if self.overrides:
            text += "\n# overrides\n" + "".join(f"{k}={v}\n" for k, v in self.overrides.items())
        properties = workdir / "server.properties"
        properties.write_text(text)
        shutil.copyfile(java_dir() / "kafka" / "log4j2.properties", workdir / "log4j2.properties")
        return properties

    def _close_service(self) -> None:
        service, self._service = self._service, None
        if service is None:
            return
        try:
            service.stop()
        finally:
            # A workdir passed in outlives the service, its data never does.
            with contextlib.suppress(ServiceError):
                shutil.rmtree(service.workdir / "data", ignore_errors=True)
                shutil.rmtree(service.workdir / "tls", ignore_errors=True)  # keys die with the broker too
            service.close()

    def stop(self) -> None:
        """Stop the broker (clean shutdown, SIGKILL after 15 s) and delete its data."""
        self._close_service()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self.port}" if self.running else "not running"
        return f"KafkaBroker({self.kafka_version!r}, {where})"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Record:
    """One record read back from a topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _as_bytes(data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"record keys and values must be bytes, str or None, not {type(data).__name__}")


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    client_config: Mapping[str, object] | None = None,
) -> None:
    """Create `topic` and return once every partition has a leader, so that producers
    and consumers can use it at once. `config` is the topic's; `client_config`,
    settings of the admin client (e.g. a SASL or TLS listener's)."""
    ck = _confluent()
    admin = ck.admin.AdminClient({"bootstrap.servers": bootstrap, **(client_config or {})})
    new = ck.admin.NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor,
                            config={k: str(v) for k, v in (config or {}).items()})
    future = admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[topic]
    try:
        future.result(timeout=timeout)
    except ck.KafkaException as exc:
        raise ServiceError(f"could not create topic {topic!r} on {bootstrap}: {exc.args[0]}") from exc
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ck.KafkaException):
            meta = admin.list_topics(topic, timeout=max(0.5, min(5.0, deadline - time.monotonic())))
            described = meta.topics.get(topic)
            if (described is not None and described.error is None and len(described.partitions) == partitions
                    and all(p.leader >= 0 for p in described.partitions.values())):
                return
        if time.monotonic() > deadline:
            raise ServiceError(f"topic {topic!r} on {bootstrap} has partitions without a leader after {timeout:.0f} s")
        time.sleep(0.05)


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[object],
    *,
    partition: int | None = None,
    config: Mapping[str, object] | None = None,
    timeout: float = 30.0,
) -> list[tuple[int, int]]:
    """Produce `records` (values, or (key, value) pairs; bytes, str or None) to `topic`,
    to `partition` if given, and flush. Returns (partition, offset) per record, in order;
    raises ServiceError if any record was not acknowledged."""
    ck = _confluent()
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, **(config or {})})
    results: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def delivered(index: int):
        def callback(err, msg):
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                results[index] = (msg.partition(), msg.offset())
        return callback

    for index, record in enumerate(records):
        key, value = record if isinstance(record, tuple) else (None, record)
        results.append(None)
        kwargs = {"partition": partition} if partition is not None else {}
        while True:
            try:
                producer.produce(topic, value=_as_bytes(value), key=_as_bytes(key),
                                 on_delivery=delivered(index), **kwargs)
                break
            except BufferError:  # local queue full: serve deliveries, then retry
                producer.poll(0.1)
    left = producer.flush(timeout)
    if left or errors:
        problems = errors[:5] + ([f"{left} record(s) not acknowledged within {timeout:.0f} s"] if left else [])
        raise ServiceError(f"producing to {topic!r} on {bootstrap} failed: " + "; ".join(problems))
    return [r for r in results if r is not None]


def read_to_end(
    bootstrap: str,
    topic: str,
    *,
    isolation_level: str = "read_committed",
    timeout: float = 30.0,
    config: Mapping[str, object] | None = None,
) -> list[Record]:
    """Every record currently in `topic`, by partition then offset.

    Reads with `read_committed` isolation by default, so records of aborted
    transactions are left out and reading ends at the last stable offset. Uses no
    consumer group and commits nothing.
    """
    ck = _confluent()
    consumer = ck.Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"ingest-read-to-end-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": isolation_level,
        **(config or {}),
    })
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
        described = meta.topics.get(topic)
        if described is None or described.error is not None or not described.partitions:
            reason = described.error if described is not None else "not found"
            raise ServiceError(f"cannot read topic {topic!r} on {bootstrap}: {reason}")
        pending = set()
        for p in sorted(described.partitions):
            low, high = consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=timeout, cached=False)
            if high > low:
                pending.add(p)
        consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in sorted(pending)])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"read_to_end({topic!r}): partitions {sorted(pending)} did not reach their end "
                    f"within {timeout:.0f} s (an open transaction holds read_committed readers back)"
                )
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().code() == ck.KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise ServiceError(f"reading {topic!r} on {bootstrap} failed: {msg.error()}")
            records.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value()))
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


# --------------------------------------------------------------------------- CLI


def run_forever(kafka_version: str | None = None) -> int:
    """Start a broker, print how to use it, and serve until SIGINT or SIGTERM.

    Returns the process exit code: 0 after a requested stop, 1 when the broker could
    not start or died, 130 when interrupted while starting.
    """
    broker = KafkaBroker(kafka_version, die_with_parent=True)  # a SIGKILLed `ingest services kafka` takes it along
    return serve_in_foreground(
        broker, name="Kafka",
        starting=f"Starting Kafka {broker.kafka_version} (the first run downloads its jars with Maven)...",
        usage=lambda: (
            f"Kafka {broker.kafka_version} is running at {broker.bootstrap} "
            f"(pid {broker.pid}, data in {broker.data_dir}, log {broker.log_path}).\n"
            f"Use it from another shell with:\n\n"
            f"    export KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}\n\n"
            + _secure_listeners_note(broker)
            + "Press Ctrl-C to stop it; its data is deleted when it stops."
        ),
    )


def _secure_listeners_note(broker: KafkaBroker) -> str:
    """Where the SASL and TLS listeners are; their settings, password included,
    go to a file only its owner reads, never to the terminal."""
    if not broker.serves_secure_listeners or broker.workdir is None:
        return ""
    path = broker.workdir / "client-settings.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps({"sasl": broker.sasl_settings, "tls": broker.tls_settings}, indent=2))
    return (f"SASL_PLAINTEXT ({SCRAM_MECHANISM}, user {SCRAM_USER}) listens at 127.0.0.1:{broker.sasl_port}, "
            f"SSL at 127.0.0.1:{broker.ssl_port};\ntheir confluent-kafka settings (with the password and the CA "
            f"file) are in {path}.\n\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ingest.testing.kafka",
        description="Run a single-node Kafka broker on 127.0.0.1 until interrupted.",
    )
    parser.add_argument("--kafka-version", default=None,
                        help=f"Apache Kafka release (default {DEFAULT_KAFKA_VERSION})")
    args = parser.parse_args(argv)
    return run_forever(args.kafka_version)


if __name__ == "__main__":
    sys.exit(main())
