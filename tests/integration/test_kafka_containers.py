"""The testcontainers path of the Kafka service: the container's configuration on both
kinds of engine, the backend switch, the project's image, clean-up of the containers of
dead sessions, and the errors a person meets (no engine, missing image, port taken, a
container that never gets ready).

Tests marked `docker` need an engine (DOCKER_HOST): without one they are skipped, or
fail when INGEST_KAFKA_BACKEND=testcontainers asks for the container path (CI's second
pass, on its private engine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from docker.models.containers import _create_container_args

from ingest.errors import PortInUseError, ServiceError, ServiceStartError
from ingest.testing import containers, jvm
from ingest.testing.containers import (
    LABEL_PID,
    LABEL_SESSION,
    KafkaBrokerContainer,
    Owner,
    owner_is_gone,
    owner_labels,
    remove_orphaned_containers,
)
from ingest.testing.images import kafka_image
from ingest.testing.kafka import DEFAULT_KAFKA_VERSION, broker_answers
from ingest.testing.plugin import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
# A client that never contacts an engine: the configuration tests need none.
OFFLINE = {"version": "1.41"}


def offline_container(**kwargs) -> KafkaBrokerContainer:
    return KafkaBrokerContainer("ingest/kafka:4.1.1", docker_client_kw=OFFLINE, **kwargs)


def engine_request(settings: dict) -> dict:
    """What docker-py sends to the engine for these create() arguments (it refuses
    combinations the engine would, e.g. published ports on the host network)."""
    args = _create_container_args({**settings, "version": "1.41"})
    return {"host_config": dict(args["host_config"]), "ports": args.get("ports"),
            "environment": dict(args["environment"]), "labels": args["labels"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --------------------------------------------------------------------------- configuration


def test_on_a_bridge_the_listener_is_published_on_the_chosen_host_port_and_advertised_there() -> None:
    container = offline_container().configure("bridge", 45123, host_ip="127.0.0.1")

    request = engine_request(container.create_settings())

    assert request["host_config"]["PortBindings"] == {"9092/tcp": [{"HostIp": "127.0.0.1", "HostPort": "45123"}]}
    assert "NetworkMode" not in request["host_config"] or request["host_config"]["NetworkMode"] == "default"
    env = request["environment"]
    assert env["KAFKA_LISTENERS"] == "PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:45123"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:9093"


def test_on_a_remote_bridge_engine_the_port_is_published_on_all_addresses_and_advertised_at_its_host() -> None:
    container = offline_container().configure("bridge", 45124, host_ip="10.1.2.3")

    request = engine_request(container.create_settings())

    assert request["host_config"]["PortBindings"] == {"9092/tcp": [{"HostIp": "", "HostPort": "45124"}]}
    env = request["environment"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://10.1.2.3:45124"


def test_on_the_host_network_nothing_is_published_and_the_broker_listens_on_loopback_ports() -> None:
    container = offline_container().configure("host", 45125, 45126)

    request = engine_request(container.create_settings())

    assert request["host_config"]["NetworkMode"] == "host"
    assert "PortBindings" not in request["host_config"]
    env = request["environment"]
    assert env["KAFKA_LISTENERS"] == "PLAINTEXT://127.0.0.1:45125,CONTROLLER://127.0.0.1:45126"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:45125"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:45126"


def test_the_container_is_a_single_kraft_node_with_single_replica_internal_topics() -> None:
    env = offline_container().configure("host", 45125, 45126).create_settings()["environment"]

    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert len(env["CLUSTER_ID"]) == 22


def test_the_container_is_labelled_with_its_session_and_owning_process() -> None:
    owner = Owner("session-1", 4242, "123456", "host-a")

    labels = offline_container(owner=owner).configure("host", 45125, 45126).create_settings()["labels"]

    assert labels == {LABEL_SESSION: "session-1", LABEL_PID: "4242", containers.LABEL_PID_START: "123456",
                      containers.LABEL_HOST: "host-a", containers.LABEL_SERVICE: "kafka"}


def test_a_container_is_orphaned_once_its_owning_process_is_gone() -> None:
    host = socket.gethostname()
    dead = owner_labels(Owner("s", dead_pid(), "", host), "kafka")
    me = owner_labels(containers.this_owner(), "kafka")
    reused = owner_labels(Owner("s", os.getpid(), "1", host), "kafka")  # same pid, earlier process
    elsewhere = owner_labels(Owner("s", dead_pid(), "", "another-host"), "kafka")

    assert owner_is_gone(dead)
    assert not owner_is_gone(me)
    assert owner_is_gone(reused)
    assert not owner_is_gone(elsewhere), "processes of other hosts cannot be judged from here"


# --------------------------------------------------------------------------- backend choice

INNER_TEST = "def test_it(kafka_service):\n    print('SOURCE', kafka_service.source)\n"


def run_inner(tmp_path: Path, **env_changes: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "INGEST_KAFKA_BACKEND", "PYTEST_ADDOPTS")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "pytest", "-s", "-rA", "-p", "no:cacheprovider", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def test_an_unknown_backend_is_refused_with_the_choices(tmp_path: Path) -> None:
    run = run_inner(tmp_path, INGEST_KAFKA_BACKEND="docker")

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "INGEST_KAFKA_BACKEND='docker' is not a Kafka backend: use one of env, testcontainers, jvm" in run.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_testcontainers_forced_without_an_engine_fails_naming_where_it_looked(tmp_path: Path, ci: str) -> None:
    socket_path = tmp_path / "no-engine.sock"

    run = run_inner(tmp_path, INGEST_KAFKA_BACKEND="testcontainers", DOCKER_HOST=f"unix://{socket_path}", CI=ci)

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert f"no Docker engine answers at unix://{socket_path}" in run.stdout
    assert "INGEST_KAFKA_BACKEND=jvm" in run.stdout, "the message offers another backend"


def test_env_forced_without_kafka_bootstrap_servers_fails(tmp_path: Path) -> None:
    run = run_inner(tmp_path, INGEST_KAFKA_BACKEND="env")

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "INGEST_KAFKA_BACKEND=env, but KAFKA_BOOTSTRAP_SERVERS is not set" in run.stdout


def test_jvm_forced_without_java_fails_even_off_ci(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()  # a PATH with neither java nor mvn

    run = run_inner(tmp_path, INGEST_KAFKA_BACKEND="jvm", PATH=str(tmp_path / "bin"), CI="", JAVA="", JAVA_HOME="",
                    MVN="")

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "INGEST_KAFKA_BACKEND=jvm, but no Kafka broker for these tests" in run.stdout


def test_without_an_engine_the_default_order_falls_back_to_the_jvm_broker(tmp_path: Path) -> None:
    from ingest.testing.kafka import missing_requirements

    missing = missing_requirements()
    if missing:
        skip_or_fail("the fallback test needs " + " and ".join(missing))

    run = run_inner(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock", INGEST_SERVICES_DIR=str(tmp_path))

    assert run.returncode == pytest.ExitCode.OK, run.stdout
    assert "SOURCE jvm" in run.stdout


@pytest.mark.docker
def test_with_an_engine_and_its_image_the_default_order_uses_a_container(
        docker_client, kafka_image_tag: str, tmp_path: Path) -> None:
    run = run_inner(tmp_path)

    assert run.returncode == pytest.ExitCode.OK, run.stdout
    assert "SOURCE testcontainers" in run.stdout


# --------------------------------------------------------------------------- files and commands


def test_the_private_engine_has_its_own_socket_and_roots_and_no_bridge_or_firewall_rules(tmp_path: Path) -> None:
    from ingest.testing.docker_engine import PrivateEngine

    command = PrivateEngine(tmp_path).command()

    assert command[command.index("-H") + 1] == f"unix://{tmp_path}/docker.sock"
    assert command[command.index("--data-root") + 1] == f"{tmp_path}/data"
    assert command[command.index("--exec-root") + 1] == f"{tmp_path}/exec"
    assert command[command.index("--pidfile") + 1] == f"{tmp_path}/dockerd.pid"
    for flag in ("--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"):
        assert flag in command


def test_a_private_engine_starts_answers_and_stops(tmp_path: Path) -> None:
    from ingest.testing.docker_engine import PrivateEngine

    if os.geteuid() != 0 or not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("starting a private Docker engine needs root and dockerd (apt-get install docker.io)")
    root = tempfile.mkdtemp(prefix="ingest-engine-", dir="/tmp")  # Unix socket paths must stay short
    engine = PrivateEngine(root)

    host = engine.start()
    try:
        import docker

        client = docker.DockerClient(base_url=host, timeout=10)
        assert client.ping()
        assert not any(n.name == "bridge" for n in client.networks.list())
        client.close()
        pid = engine.pid()
    finally:
        assert engine.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not jvm._pid_alive(pid)


def test_an_engine_directory_too_long_for_unix_sockets_is_refused_with_a_shorter_choice(tmp_path: Path) -> None:
    from ingest.testing.docker_engine import PrivateEngine

    if os.geteuid() != 0 or not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("starting a private Docker engine needs root and dockerd (apt-get install docker.io)")
    root = tmp_path / ("d" * 80)

    with pytest.raises(ServiceError) as error:
        PrivateEngine(root).start()

    assert "is too long a path for the engine's Unix sockets" in str(error.value)
    assert "mktemp -d /tmp/docker.XXXXXX" in str(error.value)
    assert not root.exists(), "nothing is started or created"


def test_a_second_engine_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    from ingest.testing.docker_engine import PrivateEngine

    if os.geteuid() != 0 or not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        pytest.skip("starting a private Docker engine needs root and dockerd (apt-get install docker.io)")
    (tmp_path / "docker.sock").touch()

    with pytest.raises(ServiceError) as error:
        PrivateEngine(tmp_path).start()

    assert f"{tmp_path}/docker.sock exists" in str(error.value)
    assert f"python -m ingest.testing.docker_engine stop {tmp_path}" in str(error.value)



def test_the_compose_file_parses_and_names_the_locally_built_image_as_the_alternative(tmp_path: Path) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        skip_or_fail("checking docker/compose.yaml needs docker-compose (Debian: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k != "INGEST_KAFKA_IMAGE"}

    def rendered(**extra: str) -> str:
        run = subprocess.run([compose, "-f", str(REPO / "docker" / "compose.yaml"), "config"],
                             env={**env, **extra}, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        return run.stdout

    assert f"image: apache/kafka:{DEFAULT_KAFKA_VERSION}" in rendered()
    assert f"image: {kafka_image()}" in rendered(INGEST_KAFKA_IMAGE=kafka_image())
    text = (REPO / "docker" / "compose.yaml").read_text()
    assert "ingest services image kafka" in text and f"INGEST_KAFKA_IMAGE={kafka_image()}" in text


def cli(*args: str, **env_changes: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingest.cli", *args], env={**os.environ, **env_changes},
                          capture_output=True, text=True, timeout=120)


def test_services_image_needs_the_name_of_a_service() -> None:
    run = cli("services", "image")

    assert run.returncode == 2
    assert "`ingest services image` needs the service whose image to build: one of kafka" in run.stderr


def test_services_image_without_an_engine_says_so(tmp_path: Path) -> None:
    run = cli("services", "image", "kafka", DOCKER_HOST=f"unix://{tmp_path}/none.sock")

    assert run.returncode == 1
    assert f"The kafka image could not be built: no Docker engine answers at unix://{tmp_path}/none.sock" in run.stdout


# --------------------------------------------------------------------------- on an engine


@pytest.fixture(scope="module")
def kafka_image_tag(docker_client) -> str:
    """The project's image, which CI builds before its container pass."""
    from ingest.testing.images import image_present

    tag = kafka_image()
    if not image_present(docker_client, tag):
        skip_or_fail(f"the container tests need {tag}: build it with `ingest services image kafka`")
    return tag


@pytest.fixture
def labelled(docker_client, kafka_image_tag: str):
    """Start idle containers labelled as owned by a given process; removed afterwards."""
    made = []

    def start(owner: Owner):
        container = docker_client.containers.run(
            kafka_image_tag, entrypoint=["sleep", "600"], detach=True, network_mode="host",
            labels=owner_labels(owner, "kafka"))
        made.append(container)
        return container

    yield start
    for container in made:
        try:
            container.remove(force=True)
        except Exception:  # already removed by the test
            pass


def names_of(docker_client, **labels: str) -> set[str]:
    filters = {"label": [f"{k}={v}" for k, v in labels.items()] or [LABEL_SESSION]}
    return {c.name for c in docker_client.containers.list(all=True, filters=filters)}


@pytest.mark.docker
def test_containers_of_a_dead_process_are_removed(docker_client, labelled) -> None:
    orphan = labelled(Owner("dead-session", dead_pid(), "", socket.gethostname()))

    removed = remove_orphaned_containers(docker_client)

    assert orphan.name in removed
    assert names_of(docker_client, **{LABEL_SESSION: "dead-session"}) == set()


@pytest.mark.docker
def test_containers_of_a_live_session_are_left_alone(docker_client, labelled) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        owner = Owner("live-session", live.pid, jvm._process_start_time(live.pid) or "", socket.gethostname())
        kept = labelled(owner)

        removed = remove_orphaned_containers(docker_client)

        assert kept.name not in removed
        kept.reload()
        assert kept.status == "running"
    finally:
        live.kill()
        live.wait()


@pytest.mark.docker
def test_a_missing_image_is_an_error_that_says_how_to_build_it(docker_client) -> None:
    container = KafkaBrokerContainer("ingest/kafka:0.0.0-missing")

    with pytest.raises(ServiceError) as error:
        container.start()

    message = str(error.value)
    assert "image ingest/kafka:0.0.0-missing is not on this Docker engine" in message
    assert "ingest services image kafka" in message and "INGEST_KAFKA_IMAGE" in message


@pytest.mark.docker
def test_an_upstream_image_that_cannot_be_pulled_is_an_error_that_names_the_alternatives(docker_client) -> None:
    container = KafkaBrokerContainer("registry.invalid/kafka:1")

    with pytest.raises(ServiceError) as error:
        container.start()

    message = str(error.value)
    assert "image registry.invalid/kafka:1 is not on this Docker engine" in message
    assert "could not be pulled" in message and "ingest services image kafka" in message


@pytest.mark.docker
def test_asking_for_a_bridge_on_an_engine_without_one_is_an_error(docker_client) -> None:
    from ingest.testing.docker_engine import has_bridge

    if has_bridge(docker_client):
        pytest.skip("this engine has a bridge network")

    with pytest.raises(ServiceError) as error:
        containers.choose_network_mode(docker_client, "bridge")

    assert "this Docker engine has no bridge network" in str(error.value)
    assert containers.choose_network_mode(docker_client) == "host"


@pytest.mark.docker
def test_a_port_already_taken_is_refused_before_any_container_starts(docker_client, kafka_image_tag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = names_of(docker_client)

        with pytest.raises(PortInUseError) as error:
            KafkaBrokerContainer(kafka_image_tag, network_mode="host", port=port).start()

    assert error.value.port == port
    assert f"port {port} on 127.0.0.1 is already in use" in str(error.value)
    assert names_of(docker_client) == before


@pytest.mark.docker
def test_a_port_lost_to_another_process_is_retried_on_new_ports(
        docker_client, kafka_image_tag: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = iter([busy])
        # The first free port handed out is grabbed by someone else before Kafka binds it.
        monkeypatch.setattr(jvm, "free_port", lambda: next(picks, None) or free_port())
        container = KafkaBrokerContainer(kafka_image_tag, network_mode="host")
        try:
            container.start()
            assert container.attempts_used == 2
            assert container.port != busy
            assert broker_answers(container.bootstrap)
            name = container.get_wrapped_container().name
        finally:
            container.stop()
    assert name not in names_of(docker_client)


@pytest.mark.docker
def test_a_container_that_exits_while_starting_fails_with_its_exit_code_and_log(
        docker_client, kafka_image_tag: str) -> None:
    container = KafkaBrokerContainer(kafka_image_tag, network_mode="host").with_kwargs(
        entrypoint=["sh", "-c", "echo 'ERROR no such listener: BOGUS' >&2; exit 3"])
    before = names_of(docker_client)

    with pytest.raises(ServiceStartError) as error:
        container.start()

    assert error.value.exit_code == 3
    assert "ERROR no such listener: BOGUS" in error.value.log_tail
    assert "exited with code 3 before Kafka was ready" in str(error.value)
    assert names_of(docker_client) == before, "the failed container is removed"


@pytest.mark.docker
def test_a_container_that_never_logs_ready_fails_with_the_tail_of_its_log(docker_client, kafka_image_tag: str) -> None:
    container = KafkaBrokerContainer(kafka_image_tag, network_mode="host", start_timeout=2).with_kwargs(
        entrypoint=["sh", "-c", "echo 'still formatting the storage'; exec sleep 600"])
    before = names_of(docker_client)

    with pytest.raises(ServiceStartError) as error:
        container.start()

    assert "did not log 'Kafka Server started'" in str(error.value) and "within 2 s" in str(error.value)
    assert "still formatting the storage" in error.value.log_tail
    assert names_of(docker_client) == before, "the silent container is removed"


@pytest.mark.docker
def test_a_second_image_build_comes_from_the_cache(docker_client, kafka_image_tag: str) -> None:
    from ingest.testing.images import build_image

    built = build_image("kafka", client=docker_client, log=lambda line: None)

    assert built.tag == kafka_image_tag
    assert not built.base_built
    assert built.image_id == docker_client.images.get(kafka_image_tag).id
    assert built.cached_steps >= built.steps - 2, "only ARG and FROM steps are not reported as cached"


SESSION_TESTS = textwrap.dedent(
    """
    import json, os, time

    def test_it(kafka_service):
        with open(os.environ["INNER_RECORD"], "a") as out:
            out.write(json.dumps({"source": kafka_service.source, "container": kafka_service.container}) + "\\n")
        if os.environ.get("INNER_WAIT"):
            time.sleep(300)
    """
)


def container_session(tmp_path: Path, name: str, wait: bool) -> tuple[subprocess.Popen, Path]:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "test_session.py").write_text(SESSION_TESTS)
    record = directory / "record.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "PYTEST_ADDOPTS")}
    env.update(INNER_RECORD=str(record), INGEST_KAFKA_BACKEND="testcontainers", INNER_WAIT="1" if wait else "")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_session.py"],
                            cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, record


def wait_for_record(proc: subprocess.Popen, record: Path) -> dict:
    deadline = time.monotonic() + 180
    while not (record.exists() and record.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the inner session never got its broker"
        time.sleep(0.2)
    return json.loads(record.read_text().splitlines()[0])


@pytest.mark.docker
def test_the_next_session_removes_the_container_of_a_session_killed_with_sigkill(
        docker_client, kafka_image_tag: str, tmp_path: Path) -> None:
    killed, record = container_session(tmp_path, "killed", wait=True)
    try:
        first = wait_for_record(killed, record)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=60)
    assert first["source"] == "testcontainers"
    assert first["container"] in names_of(docker_client), "SIGKILL leaves the container behind"

    following, record = container_session(tmp_path, "following", wait=False)
    output, _ = following.communicate(timeout=240)

    assert following.returncode == 0, output
    second = json.loads(record.read_text().splitlines()[0])
    remaining = names_of(docker_client)
    assert first["container"] not in remaining, "the next session removed the killed session's container"
    assert second["container"] not in remaining, "and its own at its end"
