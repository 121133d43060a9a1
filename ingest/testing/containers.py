"""Test services in Docker containers, for the pytest plugin's testcontainers path.

`ServiceContainer` holds what every service's container shares (image checks, network
choice, free ports retried when lost, labels and clean-up, readiness with the end of the
log on failure); `KafkaBrokerContainer` is the Kafka broker, and
`ingest.testing.storage_containers` has HDFS and S3.

`KafkaBrokerContainer` is built on testcontainers' generic `DockerContainer`, not on
its `KafkaContainer` (which needs a bridge, fixed ports 9092-9094 on the host network,
and image tags it can parse). It runs one KRaft node configured through KAFKA_*
environment variables in the apache/kafka image's convention, so it drives the
project's own image (``ingest/kafka:<version>``, see `ingest.testing.images`) and
upstream ones alike, with a plaintext listener only.

Two kinds of engine:

* with a bridge network (Docker Desktop, CI runners): the broker listens on 9092 in its
  container, published on a free port of the Docker host and advertised as that port;
* without one (dockerd --bridge=none): the container shares the host's network and the
  broker listens on free ports of 127.0.0.1 directly.

Ports are picked free and a start that loses one to another process is retried on new
ones. `start()` first removes the containers of dead sessions and turns Ryuk off when it
cannot run (see below). The broker is ready when its log says "Kafka Server started" and it answers a
metadata request; a container that exits or stays silent fails with the end of its log.

Clean-up: every container carries labels naming its session (a random id), the process
that owns it (pid, start time, host name). Ryuk removes them when it can run; when it
cannot (no bridge, or its image is absent and no registry answers), each session first
removes the containers whose owning process is gone, such as those of a session killed
with SIGKILL, and leaves alone those of live sessions.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from testcontainers.core.container import DockerContainer

from ingest.errors import PortInUseError, ServiceError, ServiceStartError

LABEL_SESSION = "io.github.ingest.session"
LABEL_PID = "io.github.ingest.pid"
LABEL_PID_START = "io.github.ingest.pid-start"
LABEL_HOST = "io.github.ingest.host"
LABEL_SERVICE = "io.github.ingest.service"

# One id per Python process: every container this process starts belongs to it.
SESSION_ID = uuid.uuid4().hex

CONTAINER_PORT = 9092  # the broker's listener inside its container (bridge networking)
CONTAINER_CONTROLLER_PORT = 9093

STARTED_LINE = re.compile(r"Kafka Server started")
BIND_FAILED = re.compile(r"Address already in use|BindException|port is already allocated")

NETWORK_MODES = ("bridge", "host")

# Single-node settings: one replica of every internal topic, and fast consumer groups.
SINGLE_NODE_ENV = {
    "KAFKA_NODE_ID": "1",
    "KAFKA_PROCESS_ROLES": "broker,controller",
    "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
    "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "KAFKA_NUM_PARTITIONS": "1",
    "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
    "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
    "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
    "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
    "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
    "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
    "KAFKA_LOG_CLEANER_DEDUPE_BUFFER_SIZE": "2097152",
    "KAFKA_NUM_NETWORK_THREADS": "2",
    "KAFKA_NUM_IO_THREADS": "2",
    "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
}


@dataclass(frozen=True)
class Owner:
    """The process a container belongs to, as its labels record it."""

    session: str
    pid: int
    pid_start: str
    host: str


def this_owner() -> Owner:
    from ingest.testing.jvm import _process_start_time

    return Owner(SESSION_ID, os.getpid(), _process_start_time(os.getpid()) or "", socket.gethostname())


def owner_labels(owner: Owner, service: str) -> dict[str, str]:
    return {LABEL_SESSION: owner.session, LABEL_PID: str(owner.pid), LABEL_PID_START: owner.pid_start,
            LABEL_HOST: owner.host, LABEL_SERVICE: service}


def owner_is_gone(labels: Mapping[str, str], host: str | None = None) -> bool:
    """Whether the process that labelled a container has exited. Containers of other
    hosts (a shared remote engine) are never judged gone: their processes are not ours
    to see."""
    from ingest.testing.jvm import _process_alive

    if labels.get(LABEL_HOST) != (host or socket.gethostname()):
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return False
    return not _process_alive(pid, labels.get(LABEL_PID_START) or None)


def remove_orphaned_containers(client) -> list[str]:
    """Remove the containers of sessions whose process is gone; return their names."""
    import docker

    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_SESSION}):
        if owner_is_gone(container.labels):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:  # another session removed it first
                continue
            removed.append(container.name)
    return removed


def ryuk_can_run(client) -> bool:
    """Ryuk needs a bridge (it publishes a port) and its image (no registry may answer)."""
    from testcontainers.core.config import testcontainers_config

    from ingest.testing.docker_engine import has_bridge
    from ingest.testing.images import image_present

    if testcontainers_config.ryuk_disabled:
        return False
    return has_bridge(client) and image_present(client, testcontainers_config.ryuk_image)


def choose_network_mode(client, requested: str | None = None) -> str:
    """"bridge" when the engine has a bridge network, else "host"; `requested` (or
    INGEST_DOCKER_NETWORK) forces one, and a bridge that does not exist is an error."""
    from ingest.testing.docker_engine import has_bridge

    requested = (requested or os.environ.get("INGEST_DOCKER_NETWORK") or "").strip().lower() or None
    if requested is not None and requested not in NETWORK_MODES:
        raise ServiceError(f"INGEST_DOCKER_NETWORK={requested!r} is not a network mode: use bridge or host, "
                           f"or leave it unset to use a bridge when the engine has one")
    bridge = has_bridge(client)
    if requested == "bridge" and not bridge:
        raise ServiceError("INGEST_DOCKER_NETWORK=bridge, but this Docker engine has no bridge network (it was "
                           "started with --bridge=none): use host networking (INGEST_DOCKER_NETWORK=host or unset)")
    return requested or ("bridge" if bridge else "host")


def _log_tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def prepare_session(client) -> tuple[bool, list[str]]:
    """Before a session's first container: remove the containers of dead sessions, and
    turn Ryuk off when it cannot run here (testcontainers would otherwise fail trying to
    pull or publish it). Returns (whether Ryuk is used, names of the containers removed)."""
    from testcontainers.core.config import testcontainers_config

    removed = remove_orphaned_containers(client)
    use_ryuk = ryuk_can_run(client)
    if not use_ryuk:
        testcontainers_config.ryuk_disabled = True
    return use_ryuk, removed


class ServiceContainer(DockerContainer):
    """A test service in a container, on either kind of engine (see the module
    docstring): what the Kafka, HDFS and S3 containers share. A subclass names its
    `service` (its label, and the `ingest services image` argument), `title` (for
    messages) and `image_hint` (how to get an upstream image instead), and implements
    `requested_ports()`, `configure_attempt()` (free ports, environment and command of one
    start attempt), `is_ready(logs)`, `ready_description()` and `ports_text()`.

    `start()` returns once the service is ready or raises: ServiceError when the image
    is missing, PortInUseError when a port given is taken, ServiceStartError (with the
    end of the container's log) when the container exits or is not ready within
    `start_timeout`.
    """

    service = "service"
    title = "the service"
    image_hint = ""

    def __init__(self, image: str, *, network_mode: str | None = None, start_timeout: float = 120.0,
                 attempts: int = 3, owner: Owner | None = None, **kwargs):
        super().__init__(image, **kwargs)
        self._requested_network = network_mode
        self.start_timeout = start_timeout
        self.attempts = max(1, attempts)
        self.attempts_used = 0
        self.owner = owner or this_owner()
        self.network_mode: str | None = None
        self.host_ip = "127.0.0.1"
        self.ryuk_used = False
        self.orphans_removed: list[str] = []

    # -- what a subclass defines

    def requested_ports(self) -> tuple[int | None, ...]:
        """The host ports the caller asked for (None: a free one)."""
        raise NotImplementedError

    def ports_chosen(self, network_mode: str) -> bool:
        """Whether some port of an attempt is picked here, so that a lost one is retried."""
        return None in self.requested_ports()

    def configure_attempt(self, network_mode: str, host_ip: str) -> None:
        raise NotImplementedError

    def is_ready(self, logs: str) -> bool:
        raise NotImplementedError

    def ready_description(self) -> str:
        raise NotImplementedError

    def ports_text(self) -> str:
        raise NotImplementedError

    def choose_network_mode(self, client) -> str:
        return choose_network_mode(client, self._requested_network)

    # -- shared configuration

    def set_network(self, network_mode: str, ports: Mapping[str, object] | None = None) -> None:
        """Host networking (nothing published: docker-py refuses published ports with it),
        or a bridge with `ports` published; and the labels of the owning session."""
        if network_mode not in NETWORK_MODES:
            raise ServiceError(f"network mode {network_mode!r} is not one of {', '.join(NETWORK_MODES)}")
        self.network_mode = network_mode
        kwargs = {k: v for k, v in self._kwargs.items() if k not in ("network_mode", "labels")}
        if network_mode == "host":
            kwargs["network_mode"] = "host"
            self.ports = {}
        else:
            self.ports = dict(ports or {})
        kwargs["labels"] = owner_labels(self.owner, self.service)
        self._kwargs = kwargs

    def publish(self, container_port: int, port: int) -> dict[str, object]:
        """A bridge container's port published on `port` of the Docker host: on loopback
        when the engine is local (a test service has no authentication)."""
        host_ip = self.host_ip
        return {f"{container_port}/tcp": (host_ip, port) if host_ip == "127.0.0.1" else port}

    def create_settings(self) -> dict:
        """The arguments the container is created with (docker-py's containers.create),
        as configured for the next start attempt."""
        return {"image": self.image, "environment": dict(self.env), "ports": dict(self.ports), **self._kwargs}

    # -- lifecycle

    def start(self):
        from ingest.testing.images import image_present
        from ingest.testing.jvm import port_is_free

        client = self.get_docker_client().client
        if not image_present(client, self.image):
            self._pull(client)
        mode = self.choose_network_mode(client)
        self.ryuk_used, self.orphans_removed = prepare_session(client)
        local = mode == "host" or self._docker_host_ip() in ("127.0.0.1", "localhost")
        for port in self.requested_ports():
            if port is not None and local and not port_is_free(port):
                raise PortInUseError(f"port {port} on 127.0.0.1 is already in use by another process; pick "
                                     f"another port, or leave it out to let the container use a free one", port=port)
        chosen = self.ports_chosen(mode)
        for attempt in range(1, self.attempts + 1):
            self.attempts_used = attempt
            host_ip = "127.0.0.1" if mode == "host" else self._docker_host_ip()
            self.host_ip = "127.0.0.1" if host_ip == "localhost" else host_ip
            self.configure_attempt(mode, self.host_ip)
            try:
                self._start_once()
                return self
            except PortInUseError:
                if chosen and attempt < self.attempts:
                    continue
                raise
        raise AssertionError("unreachable")

    def _pull(self, client) -> None:
        """Pull an upstream image; the project's own images come from no registry."""
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        how = f"build it with `ingest services image {self.service}`" + (f", or {self.image_hint}"
                                                                          if self.image_hint else "")
        if self.image.startswith("ingest/"):
            raise ServiceError(f"image {self.image} is not on this Docker engine ({where}): {how}")
        try:
            client.images.pull(self.image)
        except Exception as exc:  # APIError, ImageNotFound, registry unreachable
            raise ServiceError(f"image {self.image} is not on this Docker engine ({where}) and could not be "
                               f"pulled ({str(exc).splitlines()[0][:200]}): {how}") from None

    def _docker_host_ip(self) -> str:
        return self.get_docker_client().host()

    def _start_once(self) -> None:
        import docker

        try:
            super().start()
        except docker.errors.APIError as exc:
            self._remove()
            if BIND_FAILED.search(str(exc)):
                raise PortInUseError(f"the engine could not publish {self.ports_text()}: {exc.explanation}",
                                     port=self.bound_port()) from None
            raise ServiceError(f"the engine refused to start a container of {self.image}: {exc.explanation}") from None
        try:
            self._wait_ready()
        except BaseException:
            self._remove()
            raise

    def _wait_ready(self) -> None:
        container = self.get_wrapped_container()
        deadline = time.monotonic() + self.start_timeout
        while True:
            logs = container.logs().decode(errors="replace")
            if self.is_ready(logs):
                return
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                if BIND_FAILED.search(logs):
                    raise PortInUseError(
                        f"{self.title} in container {container.name} could not listen on {self.ports_text()}: "
                        f"the address is already in use. The end of its log:\n{_log_tail(logs)}",
                        port=self.bound_port())
                raise ServiceStartError(
                    f"container {container.name} ({self.image}) exited with code {code} before {self.title} was "
                    f"ready; the end of its log:\n{_log_tail(logs)}", log_tail=_log_tail(logs), exit_code=code)
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"container {container.name} ({self.image}) did not {self.ready_description()} within "
                    f"{self.start_timeout:.0f} s; the end of its log:\n{_log_tail(logs)}", log_tail=_log_tail(logs))
            time.sleep(0.2)

    def bound_port(self) -> int | None:
        """The main port of the current attempt (for PortInUseError)."""
        return None

    def pause(self) -> None:
        """Freeze the container's processes (a hung server, for fault tests)."""
        self.get_wrapped_container().pause()

    def resume(self) -> None:
        self.get_wrapped_container().unpause()

    def _remove(self) -> None:
        import docker

        container, self._container = self._container, None
        if container is not None:
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        self._remove()
        self.get_docker_client().client.close()


class KafkaBrokerContainer(ServiceContainer):
    """A single-node Kafka broker in a container (see the module docstring).

    `network_mode` is "bridge" or "host" (default: chosen from the engine). `port` is
    the broker's port on the host; `controller_port` its controller's (host
    networking only); both default to free ones. `start()` as `ServiceContainer`'s.
    """

    service = "kafka"
    title = "Kafka"
    image_hint = "set INGEST_KAFKA_IMAGE to an image your registry has (e.g. apache/kafka:4.1.1)"

    def __init__(self, image: str, *, network_mode: str | None = None, port: int | None = None,
                 controller_port: int | None = None, start_timeout: float = 120.0, attempts: int = 3,
                 owner: Owner | None = None, **kwargs):
        super().__init__(image, network_mode=network_mode, start_timeout=start_timeout, attempts=attempts,
                         owner=owner, **kwargs)
        self._requested_port = port
        self._requested_controller_port = controller_port
        self.port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id = _cluster_id()

    # -- configuration (no engine call: the bridge path is tested through it)

    def configure(self, network_mode: str, port: int, controller_port: int | None = None,
                  host_ip: str = "127.0.0.1") -> KafkaBrokerContainer:
        """Set the environment, ports, network and labels of one start attempt."""
        if network_mode not in NETWORK_MODES:
            raise ServiceError(f"network mode {network_mode!r} is not one of {', '.join(NETWORK_MODES)}")
        self.port, self.host_ip = port, host_ip
        self.env = {k: v for k, v in self.env.items() if not k.startswith("KAFKA_") and k != "CLUSTER_ID"}
        self.env.update(SINGLE_NODE_ENV)
        self.env["CLUSTER_ID"] = self.cluster_id
        if network_mode == "host":
            if controller_port is None:
                raise ServiceError("host networking needs a controller port of the host")
            self.controller_port = controller_port
            listen = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
            voters = f"1@127.0.0.1:{controller_port}"
            self.set_network("host")
        else:
            self.controller_port = None  # inside the container's own network namespace
            listen = f"PLAINTEXT://0.0.0.0:{CONTAINER_PORT},CONTROLLER://127.0.0.1:{CONTAINER_CONTROLLER_PORT}"
            voters = f"1@127.0.0.1:{CONTAINER_CONTROLLER_PORT}"
            self.set_network("bridge", self.publish(CONTAINER_PORT, port))
        self.env.update(KAFKA_LISTENERS=listen, KAFKA_CONTROLLER_QUORUM_VOTERS=voters,
                        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{host_ip}:{port}")
        return self

    def requested_ports(self) -> tuple[int | None, ...]:
        return (self._requested_port, self._requested_controller_port)

    def ports_chosen(self, network_mode: str) -> bool:
        return self._requested_port is None or (network_mode == "host" and self._requested_controller_port is None)

    def configure_attempt(self, network_mode: str, host_ip: str) -> None:
        from ingest.testing.jvm import free_port

        port = self._requested_port or free_port()
        cport = None
        if network_mode == "host":
            cport = self._requested_controller_port or free_port()
            while cport == port:
                cport = free_port()
        self.configure(network_mode, port, cport, host_ip)

    def is_ready(self, logs: str) -> bool:
        from ingest.testing.kafka import broker_answers

        return bool(STARTED_LINE.search(logs)) and broker_answers(self.bootstrap, timeout=1.0)

    def ready_description(self) -> str:
        return f"log 'Kafka Server started' and answer at {self.bootstrap}"

    def ports_text(self) -> str:
        return f"port {self.port}" + (f" / controller {self.controller_port}" if self.controller_port else "")

    def bound_port(self) -> int | None:
        return self.port

    @property
    def bootstrap(self) -> str:
        if self.port is None or self._container is None:
            raise ServiceError("the Kafka container is not running; start() it first")
        return f"{self.host_ip}:{self.port}"

    def get_bootstrap_server(self) -> str:  # KafkaContainer's name for it
        return self.bootstrap


def _cluster_id() -> str:
    from ingest.testing.kafka import _cluster_id as new_id

    return new_id()
