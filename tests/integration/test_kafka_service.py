"""The Kafka service for tests: the plugin's broker, the helpers, and the launcher's
promises (one broker per session, nothing left behind, clear errors)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from ingest.errors import PortInUseError, ServiceStartError, StaleServiceDirError
from ingest.testing import kafka
from ingest.testing.kafka import KafkaBroker, create_topic, produce, read_to_end
from ingest.testing.plugin import skip_or_fail

pytestmark = [
    pytest.mark.kafka,
    # kafka-python loads its protocol schemas with a deprecated importlib.resources call.
    pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning"),
]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    name = unique("topic")
    create_topic(kafka_bootstrap, name)
    return name


@pytest.fixture
def local_jvm() -> None:
    """Tests of the local launcher itself need Java and Maven, whatever broker the
    session uses."""
    missing = kafka.missing_requirements()
    if missing:
        skip_or_fail("the Kafka launcher tests need " + " and ".join(missing))


# --------------------------------------------------------------------------- clients


def test_confluent_kafka_produces_and_consumes(kafka_bootstrap: str, topic: str) -> None:
    from confluent_kafka import Consumer, Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0

    consumer = Consumer({
        "bootstrap.servers": kafka_bootstrap,
        "group.id": unique("group"),
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    received = []
    deadline = time.monotonic() + 30
    try:
        while len(received) < 3 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                received.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    assert received == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]


def test_kafka_python_produces_and_consumes(kafka_bootstrap: str, topic: str) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        offsets = [producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode()).get(timeout=30).offset
                   for i in range(3)]
    finally:
        producer.close()
    assert offsets == [0, 1, 2]

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=unique("group"),
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    received = []
    try:
        for msg in consumer:
            received.append((msg.key, msg.value))
            if len(received) == 3:
                break
    finally:
        consumer.close()
    assert received == [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2")]


def test_read_committed_sees_committed_transactions_only(kafka_bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("tx")})
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed-1")
    producer.produce(topic, value=b"committed-2")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted-1")
    producer.flush(30)  # the aborted records really reach the log
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed-3")
    producer.commit_transaction(30)

    committed = [r.value for r in read_to_end(kafka_bootstrap, topic)]
    everything = [r.value for r in read_to_end(kafka_bootstrap, topic, isolation_level="read_uncommitted")]

    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    assert everything == [b"committed-1", b"committed-2", b"aborted-1", b"committed-3"]


def test_kafka_python_read_committed_skips_an_aborted_transaction(kafka_bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer
    from kafka import KafkaConsumer, TopicPartition

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("tx")})
    producer.init_transactions(60)
    producer.begin_transaction()
    producer.produce(topic, value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"kept")
    producer.commit_transaction(30)

    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, isolation_level="read_committed",
                             enable_auto_commit=False, consumer_timeout_ms=10_000)
    values = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        for msg in consumer:  # the aborted record precedes "kept": it would come first
            values.append(msg.value)
            if msg.value == b"kept":
                break
    finally:
        consumer.close()
    assert values == [b"kept"]


# --------------------------------------------------------------------------- helpers


def test_create_topic_returns_with_a_leader_for_every_partition(kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    name = unique("parts")
    create_topic(kafka_bootstrap, name, partitions=4, config={"retention.ms": "3600000"})

    described = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(name, timeout=10).topics[name]
    assert sorted(described.partitions) == [0, 1, 2, 3]
    assert all(p.leader >= 0 for p in described.partitions.values())


def test_produce_and_read_to_end_round_trip_keys_values_and_partitions(kafka_bootstrap: str) -> None:
    name = unique("roundtrip")
    create_topic(kafka_bootstrap, name, partitions=3)

    placed = produce(kafka_bootstrap, name, ["a", ("key", "b"), None, b"\x00raw"], partition=2)
    records = read_to_end(kafka_bootstrap, name)

    assert placed == [(2, 0), (2, 1), (2, 2), (2, 3)]
    assert [(r.partition, r.offset, r.key, r.value) for r in records] == [
        (2, 0, None, b"a"),
        (2, 1, b"key", b"b"),
        (2, 2, None, None),
        (2, 3, None, b"\x00raw"),
    ]


def test_read_to_end_of_an_empty_topic_is_empty(kafka_bootstrap: str, topic: str) -> None:
    assert read_to_end(kafka_bootstrap, topic, timeout=10) == []


# --------------------------------------------------------------------------- lifecycle

INNER_TESTS = textwrap.dedent(
    """
    import json, os, time

    def record(kafka_service, test):
        with open(os.environ["INNER_RECORD"], "a") as out:
            out.write(json.dumps({"test": test, "source": kafka_service.source, "pid": kafka_service.pid,
                                  "workdir": kafka_service.workdir, "bootstrap": kafka_service.bootstrap}) + "\\n")

    def test_first(kafka_service):
        record(kafka_service, "first")

    def test_second(kafka_bootstrap, kafka_service):
        record(kafka_service, "second")

    def test_waits_to_be_interrupted(kafka_service):
        if os.environ.get("INNER_WAIT"):
            record(kafka_service, "waiting")
            time.sleep(300)
    """
)


def _inner_session(tmp_path: Path, wait: bool) -> tuple[subprocess.Popen, Path, Path]:
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    record = tmp_path / "record.jsonl"
    services = tmp_path / "services"
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "INGEST_KAFKA_BACKEND", "PYTEST_ADDOPTS")}
    env.update(INNER_RECORD=str(record), INGEST_SERVICES_DIR=str(services), INGEST_USE_DOCKER="0")
    if wait:
        env["INNER_WAIT"] = "1"
    # SIGINT raises KeyboardInterrupt as in a terminal even when this suite was
    # started with `&` from a script: such a process inherits an ignored SIGINT,
    # and Python then leaves it ignored.
    run_pytest = ("import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
                  "sys.exit(pytest.main(sys.argv[1:]))")
    proc = subprocess.Popen(
        [sys.executable, "-c", run_pytest, "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return proc, record, services


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(text in part for part in proc.info["cmdline"] or ()):
            found.append(proc.info["pid"])
    return found


@pytest.mark.jvm_launcher
def test_broker_starts_once_per_session_and_nothing_remains_after_it(tmp_path: Path, local_jvm: None) -> None:
    proc, record, services = _inner_session(tmp_path, wait=False)
    output, _ = proc.communicate(timeout=240)

    assert proc.returncode == 0, output
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["test"] for line in lines] == ["first", "second"]
    assert {line["source"] for line in lines} == {"jvm"}
    assert len({line["pid"] for line in lines}) == 1, "one broker for the whole session"
    assert len({line["workdir"] for line in lines}) == 1
    pid, workdir = lines[0]["pid"], lines[0]["workdir"]
    assert Path(workdir).parent == services
    assert not psutil.pid_exists(pid)
    assert _processes_mentioning(workdir) == []
    assert not Path(workdir).exists()
    assert list(services.iterdir()) == []


@pytest.mark.jvm_launcher
def test_interrupted_session_leaves_no_broker_behind(tmp_path: Path, local_jvm: None) -> None:
    proc, record, services = _inner_session(tmp_path, wait=True)
    try:
        deadline = time.monotonic() + 180
        while not (record.exists() and "waiting" in record.read_text()):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the inner session never reached its waiting test"
            time.sleep(0.2)
        waiting = [json.loads(line) for line in record.read_text().splitlines()][-1]
        pid, workdir = waiting["pid"], waiting["workdir"]
        assert "kafka.Kafka" in psutil.Process(pid).cmdline()

        proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends to pytest
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "KeyboardInterrupt" in output
    assert not psutil.pid_exists(pid)
    assert _processes_mentioning(workdir) == []
    assert not Path(workdir).exists()
    assert list(services.iterdir()) == []


@pytest.mark.jvm_launcher
def test_run_forever_serves_a_broker_until_sigterm_then_cleans_up(tmp_path: Path, local_jvm: None) -> None:
    env = {**os.environ, "INGEST_SERVICES_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "ingest.testing.kafka"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("export KAFKA_BOOTSTRAP_SERVERS=" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        bootstrap = lines[-1].split("=", 1)[1].strip()
        name = unique("cli")
        create_topic(bootstrap, name)
        produce(bootstrap, name, ["through the CLI broker"])
        assert [r.value for r in read_to_end(bootstrap, name)] == [b"through the CLI broker"]
        while not any("client-settings.json" in line for line in lines):  # the SASL and TLS listeners' settings
            lines.append(proc.stdout.readline())
        settings = json.loads(Path(lines[-1].split(" are in ")[1].strip().rstrip(".")).read_text())
        assert settings["sasl"]["sasl.password"] not in "".join(lines)
        for secured in (settings["sasl"], settings["tls"]):
            assert [r.value for r in read_to_end(secured["bootstrap.servers"], name, config=secured)] == \
                [b"through the CLI broker"]

        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 0, rest
    assert bootstrap.startswith("127.0.0.1:")
    assert "Kafka stopped." in rest
    assert list(tmp_path.iterdir()) == [], "the broker's directory is deleted"


@pytest.mark.jvm_launcher
@pytest.mark.parametrize("ci", ["", "true"])
def test_without_java_and_maven_kafka_tests_skip_locally_and_fail_on_ci(tmp_path: Path, ci: str) -> None:
    (tmp_path / "test_needs_kafka.py").write_text("def test_it(kafka_bootstrap):\n    pass\n")
    (tmp_path / "bin").mkdir()  # a PATH with neither java nor mvn
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "INGEST_KAFKA_BACKEND", "JAVA", "JAVA_HOME", "MVN", "PYTEST_ADDOPTS")}
    env.update(PATH=str(tmp_path / "bin"), INGEST_USE_DOCKER="0", CI=ci)

    run = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "test_needs_kafka.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    reason = "install a JDK 17 or newer"
    assert reason in run.stdout and "Apache Maven" in run.stdout and "KAFKA_BOOTSTRAP_SERVERS" in run.stdout
    if ci:
        assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
        assert "1 error" in run.stdout and "CI=true" in run.stdout
    else:
        assert run.returncode == pytest.ExitCode.OK, run.stdout
        assert "1 skipped" in run.stdout


@pytest.mark.jvm_launcher
def test_the_plugin_is_registered_and_importing_it_loads_no_client_or_docker() -> None:
    code = (
        "import sys, importlib.metadata as md;"
        "eps = [e.value for e in md.entry_points(group='pytest11') if e.name == 'ingest'];"
        "import ingest.testing.plugin;"
        "heavy = ('confluent_kafka', 'kafka', 'docker', 'testcontainers', 'ingest.testing.kafka');"
        "print(eps, sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['ingest.testing.plugin'] []"


@pytest.mark.jvm_launcher
def test_a_kafka_bootstrap_servers_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "test_needs_kafka.py").write_text("def test_it(kafka_bootstrap):\n    pass\n")
    port = _free()  # nobody listens there
    env = {k: v for k, v in os.environ.items() if k not in ("INGEST_KAFKA_BACKEND", "PYTEST_ADDOPTS")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{port}"

    run = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "test_needs_kafka.py"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port} does not answer" in run.stdout


# --------------------------------------------------------------------------- errors


@pytest.mark.jvm_launcher
def test_a_port_already_taken_is_refused_before_starting(local_jvm: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(PortInUseError) as error:
            KafkaBroker(port=port).start()

    assert error.value.port == port
    assert f"port {port} on 127.0.0.1 is already in use" in str(error.value)


@pytest.mark.jvm_launcher
def test_a_port_lost_to_another_process_is_retried_on_new_ports(
    local_jvm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INGEST_SERVICES_DIR", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        # The first free port handed out is grabbed by someone else before Kafka binds it.
        monkeypatch.setattr(kafka, "free_port", lambda: next(picks, None) or _free())

        with KafkaBroker() as broker:
            assert broker.attempts_used == 2
            assert broker.port != busy
            assert kafka.broker_answers(broker.bootstrap)
            workdir = broker.workdir
    assert not workdir.exists()
    assert list(tmp_path.iterdir()) == []


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.jvm_launcher
def test_a_broker_that_fails_to_start_reports_the_end_of_its_log(
    local_jvm: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INGEST_SERVICES_DIR", str(tmp_path))
    broker = KafkaBroker(overrides={"authorizer.class.name": "org.example.NoSuchAuthorizer"})

    with pytest.raises(ServiceStartError) as error:
        broker.start()

    assert error.value.exit_code not in (None, 0)
    assert "kafka exited with code" in str(error.value)
    assert "org.example.NoSuchAuthorizer" in error.value.log_tail
    assert "org.example.NoSuchAuthorizer" in str(error.value)
    assert not broker.running
    assert list(tmp_path.iterdir()) == []


@pytest.mark.jvm_launcher
def test_a_data_directory_left_by_a_killed_run_is_refused(local_jvm: None, tmp_path: Path) -> None:
    workdir = tmp_path / "kafka"
    (workdir / "data").mkdir(parents=True)
    (workdir / "data" / "meta.properties").write_text("node.id=1\n")
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    (workdir / "service.pid").write_text(json.dumps({"name": "kafka", "pid": None, "owner_pid": dead_owner.pid}))

    with pytest.raises(StaleServiceDirError) as error:
        KafkaBroker(workdir=workdir).start()

    assert error.value.path == str(workdir)
    assert "did not stop cleanly" in str(error.value)
    assert (workdir / "data" / "meta.properties").read_text() == "node.id=1\n", "nothing is deleted"
