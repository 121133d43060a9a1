"""The testcontainers path of HDFS and S3: the containers' configuration, the backend
switches (INGEST_HDFS_BACKEND, INGEST_S3_BACKEND; the local launchers stay the default),
the project's images and the errors a person meets (no engine, missing image, port taken,
a container that exits or never gets ready).

The storage contract itself runs on these containers in CI's second pass:
tests/integration/test_remote_storage.py and test_remote_storage_faults.py with both
backends forced to testcontainers (see .ci/run). Tests marked `docker` need an engine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from docker.models.containers import _create_container_args

from ingest.errors import ConfigError, PortInUseError, ServiceError, ServiceStartError
from ingest.testing.containers import LABEL_SERVICE, LABEL_SESSION
from ingest.testing.images import build_image, hdfs_image, image_present, s3_image
from ingest.testing.plugin import forced_backend, skip_or_fail
from ingest.testing.storage_containers import HdfsContainer, S3Container

OFFLINE = {"version": "1.41"}  # a client that never contacts an engine
REPO = Path(__file__).resolve().parents[2]


def engine_request(settings: dict) -> dict:
    """What docker-py sends to the engine for these create() arguments."""
    args = _create_container_args({**settings, "version": "1.41"})
    return {"host_config": dict(args["host_config"]), "environment": dict(args["environment"]),
            "command": args.get("command"), "labels": args["labels"]}


# --------------------------------------------------------------------------- configuration


def test_hdfs_on_the_host_network_listens_on_the_chosen_loopback_ports_and_publishes_nothing() -> None:
    container = HdfsContainer(hdfs_image(), docker_client_kw=OFFLINE).configure("host", 45201, 45202, 45203)

    request = engine_request(container.create_settings())

    assert request["host_config"]["NetworkMode"] == "host"
    assert "PortBindings" not in request["host_config"]
    assert request["environment"] == {"HDFS_HTTP_PORT": "45201", "HDFS_DATANODE_HTTP_PORT": "45202",
                                      "HDFS_NAMENODE_PORT": "45203", "HDFS_BIND_HOST": "127.0.0.1",
                                      "HDFS_ADVERTISED_HOST": "127.0.0.1"}
    assert request["labels"][LABEL_SERVICE] == "hdfs"


def test_hdfs_on_a_bridge_publishes_webhdfs_and_the_datanode_under_their_own_numbers_on_loopback() -> None:
    container = HdfsContainer(hdfs_image(), docker_client_kw=OFFLINE).configure("bridge", 45201, 45202, 45203)

    request = engine_request(container.create_settings())

    # WebHDFS redirects to the DataNode's own port number: the host must have the same one.
    assert request["host_config"]["PortBindings"] == {
        "45201/tcp": [{"HostIp": "127.0.0.1", "HostPort": "45201"}],
        "45202/tcp": [{"HostIp": "127.0.0.1", "HostPort": "45202"}]}
    env = request["environment"]
    assert env["HDFS_BIND_HOST"] == "0.0.0.0" and env["HDFS_ADVERTISED_HOST"] == "127.0.0.1"


def test_hdfs_on_a_remote_bridge_engine_advertises_the_engines_address() -> None:
    container = HdfsContainer(hdfs_image(), docker_client_kw=OFFLINE).configure(
        "bridge", 45201, 45202, 45203, host_ip="10.1.2.3")

    request = engine_request(container.create_settings())

    assert request["host_config"]["PortBindings"]["45202/tcp"] == [{"HostIp": "", "HostPort": "45202"}]
    assert request["environment"]["HDFS_ADVERTISED_HOST"] == "10.1.2.3"
    assert container.host_ip == "10.1.2.3"


def test_s3_on_a_bridge_publishes_motos_port_on_the_chosen_loopback_port() -> None:
    container = S3Container(s3_image(), docker_client_kw=OFFLINE).configure("bridge", 45203)

    request = engine_request(container.create_settings())

    assert request["host_config"]["PortBindings"] == {"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "45203"}]}
    assert request["command"] == ["-H", "0.0.0.0", "-p", "5000"]
    assert request["labels"][LABEL_SERVICE] == "s3"


def test_s3_on_the_host_network_listens_on_the_chosen_loopback_port_and_publishes_nothing() -> None:
    container = S3Container(s3_image(), docker_client_kw=OFFLINE).configure("host", 45204)

    request = engine_request(container.create_settings())

    assert request["host_config"]["NetworkMode"] == "host"
    assert "PortBindings" not in request["host_config"]
    assert request["command"] == ["-H", "127.0.0.1", "-p", "45204"]


@pytest.mark.parametrize(("variable", "message"), [
    ("INGEST_HDFS_BACKEND", "INGEST_HDFS_BACKEND='docker' is not an HDFS backend: use one of env, testcontainers, "
                            "jvm, or unset it for the default order (env, jvm)"),
    ("INGEST_S3_BACKEND", "INGEST_S3_BACKEND='docker' is not an S3 backend: use one of env, testcontainers, local, "
                          "or unset it for the default order (env, local)"),
])
def test_an_unknown_storage_backend_is_refused_with_the_choices(
        monkeypatch: pytest.MonkeyPatch, variable: str, message: str) -> None:
    monkeypatch.setenv(variable, "docker")

    with pytest.raises(ConfigError) as error:
        forced_backend("hdfs" if "HDFS" in variable else "s3")

    assert str(error.value) == message


INNER_TEST = "def test_it(s3_service):\n    print('S3', type(s3_service).__name__, s3_service.endpoint)\n"


def run_inner(tmp_path: Path, test: str = INNER_TEST, **env_changes: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_inner.py").write_text(test)
    env = {k: v for k, v in os.environ.items()
           if k not in ("INGEST_HDFS_BACKEND", "INGEST_S3_BACKEND", "INGEST_HDFS_URL", "INGEST_S3_ENDPOINT",
                        "PYTEST_ADDOPTS")}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-m", "pytest", "-s", "-rA", "-p", "no:cacheprovider", "test_inner.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


def test_containers_forced_without_an_engine_fail_naming_where_they_looked_and_the_local_backend(
        tmp_path: Path) -> None:
    socket_path = tmp_path / "no-engine.sock"

    run = run_inner(tmp_path, INGEST_S3_BACKEND="testcontainers", DOCKER_HOST=f"unix://{socket_path}", CI="",
                    test="def test_it(s3_endpoint):\n    pass\n")

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "S3 in a container could not be had" in run.stdout
    assert f"no Docker engine answers at unix://{socket_path}" in run.stdout
    assert "INGEST_S3_BACKEND=local" in run.stdout, "the message offers the local backend"


def test_env_forced_without_the_servers_address_fails(tmp_path: Path) -> None:
    run = run_inner(tmp_path, INGEST_HDFS_BACKEND="env", test="def test_it(hdfs_url):\n    pass\n")

    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout
    assert "INGEST_HDFS_BACKEND=env, but INGEST_HDFS_URL is not set" in run.stdout


def test_the_compose_file_names_the_local_hdfs_and_s3_images_with_upstream_ones_as_the_alternative(
        tmp_path: Path) -> None:
    import shutil

    compose = shutil.which("docker-compose")
    if compose is None:
        skip_or_fail("checking docker/compose.yaml needs docker-compose (Debian: apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}

    def images(**extra: str) -> dict[str, str]:
        run = subprocess.run([compose, "-f", str(REPO / "docker" / "compose.yaml"), "config"],
                             env={**env, **extra}, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        # `config` prints each service at two spaces under `services:`, its keys at four.
        found, service, in_services = {}, None, False
        for line in run.stdout.splitlines():
            if not line.startswith(" "):
                in_services = line == "services:"
            elif in_services and line.startswith("  ") and not line.startswith("   "):
                service = line.strip().rstrip(":")
            elif in_services and line.startswith("    image: "):
                found[service] = line.split(": ", 1)[1].strip()
        return found

    default = images()
    assert default["hdfs"] == hdfs_image() and default["s3"] == s3_image()
    assert default["namenode"].startswith("apache/hadoop:") and default["datanode"] == default["namenode"]
    assert images(INGEST_S3_IMAGE="motoserver/moto:5.2.5")["s3"] == "motoserver/moto:5.2.5"
    text = (REPO / "docker" / "compose.yaml").read_text()
    assert "ingest services image hdfs" in text and "ingest services image s3" in text


# --------------------------------------------------------------------------- on an engine


@pytest.fixture(scope="module")
def storage_images(docker_client) -> dict[str, str]:
    """The project's HDFS and S3 images, which CI builds before its container pass."""
    images = {"hdfs": hdfs_image(), "s3": s3_image()}
    for service, tag in images.items():
        if not image_present(docker_client, tag):
            skip_or_fail(f"the container tests need {tag}: build it with `ingest services image {service}`")
    return images


def container_names(docker_client) -> set[str]:
    return {c.name for c in docker_client.containers.list(all=True, filters={"label": LABEL_SESSION})}


@pytest.mark.docker
def test_with_an_engine_and_the_image_the_default_stays_the_local_launcher_and_the_switch_uses_a_container(
        docker_client, storage_images: dict[str, str], tmp_path: Path) -> None:
    before = container_names(docker_client)

    default = run_inner(tmp_path)
    forced = run_inner(tmp_path, INGEST_S3_BACKEND="testcontainers")

    assert default.returncode == pytest.ExitCode.OK, default.stdout
    assert "S3 S3Server http://127.0.0.1:" in default.stdout
    assert forced.returncode == pytest.ExitCode.OK, forced.stdout
    assert "S3 S3Container http://127.0.0.1:" in forced.stdout
    assert container_names(docker_client) == before, "the session removed its container"


@pytest.mark.docker
@pytest.mark.parametrize("service", ["hdfs", "s3"])
def test_a_missing_image_is_an_error_that_says_how_to_build_it(docker_client, service: str) -> None:
    container = (HdfsContainer if service == "hdfs" else S3Container)(f"ingest/{service}:0.0.0-missing")

    with pytest.raises(ServiceError) as error:
        container.start()

    assert f"image ingest/{service}:0.0.0-missing is not on this Docker engine" in str(error.value)
    assert f"build it with `ingest services image {service}`" in str(error.value)


@pytest.mark.docker
def test_a_port_already_taken_is_refused_before_any_container_starts(
        docker_client, storage_images: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = container_names(docker_client)

        with pytest.raises(PortInUseError) as error:
            S3Container(storage_images["s3"], network_mode="host", port=port).start()

    assert error.value.port == port and f"port {port} on 127.0.0.1 is already in use" in str(error.value)
    assert container_names(docker_client) == before


@pytest.mark.docker
def test_an_hdfs_container_that_exits_while_starting_fails_with_its_exit_code_and_log(
        docker_client, storage_images: dict[str, str]) -> None:
    container = HdfsContainer(storage_images["hdfs"]).with_kwargs(
        entrypoint=["sh", "-c", "echo 'java.io.IOException: NameNode is not formatted.' >&2; exit 4"])
    before = container_names(docker_client)

    with pytest.raises(ServiceStartError) as error:
        container.start()

    assert error.value.exit_code == 4
    assert "exited with code 4 before HDFS was ready" in str(error.value)
    assert "NameNode is not formatted" in error.value.log_tail
    assert container_names(docker_client) == before, "the failed container is removed"


@pytest.mark.docker
def test_an_s3_container_that_never_answers_fails_with_the_tail_of_its_log(
        docker_client, storage_images: dict[str, str]) -> None:
    container = S3Container(storage_images["s3"], start_timeout=2).with_kwargs(
        entrypoint=["sh", "-c", "echo 'loading the backends'; exec sleep 600"])
    before = container_names(docker_client)

    with pytest.raises(ServiceStartError) as error:
        container.start()

    assert "did not answer at http://127.0.0.1:" in str(error.value) and "within 2 s" in str(error.value)
    assert "loading the backends" in error.value.log_tail
    assert container_names(docker_client) == before, "the silent container is removed"


@pytest.mark.docker
@pytest.mark.parametrize("service", ["hdfs", "s3"])
def test_a_second_image_build_comes_from_the_cache(docker_client, storage_images: dict[str, str],
                                                   service: str) -> None:
    built = build_image(service, client=docker_client, log=lambda line: None)

    assert built.tag == storage_images[service]
    assert not built.base_built
    assert built.image_id == docker_client.images.get(built.tag).id
    # ARG and FROM steps are not all reported as cached; every other step is.
    args = sum(1 for line in (REPO / "docker" / service / "Dockerfile").read_text().splitlines()
               if line.startswith(("ARG ", "FROM ")))
    assert built.cached_steps >= built.steps - args
