"""HDFS and S3 in Docker containers, for the pytest plugin's testcontainers path.

Both are `ServiceContainer`s (ingest.testing.containers): the same image checks, free
ports retried when lost, session labels and clean-up of dead sessions' containers, and
the same errors (a missing image names `ingest services image hdfs|s3`; a container that
exits or never gets ready shows the end of its log) as the Kafka container.

* `HdfsContainer` runs the project's ``ingest/hdfs:<hadoop version>`` image: the
  MiniDFSCluster of `ingest.testing.hdfs`, WebHDFS on, with every HTTP port fixed by
  the image's launcher. On the host's network it listens on free ports of 127.0.0.1; on
  a bridge, WebHDFS (the NameNode's HTTP port) and the DataNode's HTTP port, where WebHDFS
  redirects each read and write, are published under the same numbers, since the
  DataNode advertises its own port (and the Docker host's address).
* `S3Container` runs ``ingest/s3:<moto version>`` (moto's server) or the upstream
  motoserver/moto image, which share entry point and port: on the host's network bound
  to 127.0.0.1, or on a bridge with its port 5000 published on loopback.

Ready when the service answers over HTTP (WebHDFS LISTSTATUS of "/" after the cluster
logged "Started MiniDFSCluster"; moto's /moto-api/).
"""

from __future__ import annotations

import re

from ingest.errors import ServiceError
from ingest.testing.containers import Owner, ServiceContainer
from ingest.testing.s3 import S3Endpoint

HDFS_STARTED_LINE = re.compile(r"Started MiniDFSCluster")
S3_CONTAINER_PORT = 5000  # moto's port in its container (bridge networking), as upstream


class HdfsContainer(ServiceContainer):
    """A MiniDFSCluster (NameNode and one DataNode, WebHDFS on) in a container.

    `port` is the NameNode's HTTP port, which serves WebHDFS; `datanode_port` the
    DataNode's HTTP port, where WebHDFS redirects reads and writes; `namenode_port` the
    NameNode's RPC port. All are ports of the Docker host, free ones by default. `url`
    is the ``hdfs://`` URL that `ingest.storage_hdfs` takes.
    """

    service = "hdfs"
    title = "HDFS"

    def __init__(self, image: str, *, network_mode: str | None = None, port: int | None = None,
                 datanode_port: int | None = None, namenode_port: int | None = None, start_timeout: float = 120.0,
                 attempts: int = 3, owner: Owner | None = None, **kwargs):
        super().__init__(image, network_mode=network_mode, start_timeout=start_timeout, attempts=attempts,
                         owner=owner, **kwargs)
        self._requested = (port, datanode_port, namenode_port)
        self.port: int | None = None
        self.datanode_port: int | None = None
        self.namenode_port: int | None = None

    def configure(self, network_mode: str, port: int, datanode_port: int, namenode_port: int,
                  host_ip: str = "127.0.0.1") -> HdfsContainer:
        """Set the environment, ports, network and labels of one start attempt (no engine call).

        The DataNode advertises `host_ip` and its own port number, so on a bridge the
        HTTP ports are published under the same numbers; the RPC port stays inside."""
        self.port, self.datanode_port, self.namenode_port, self.host_ip = port, datanode_port, namenode_port, host_ip
        self.env.update(HDFS_HTTP_PORT=str(port), HDFS_DATANODE_HTTP_PORT=str(datanode_port),
                        HDFS_NAMENODE_PORT=str(namenode_port), HDFS_ADVERTISED_HOST=host_ip,
                        HDFS_BIND_HOST="127.0.0.1" if network_mode == "host" else "0.0.0.0")
        if network_mode == "host":
            self.set_network("host")
        else:
            self.set_network("bridge", {**self.publish(port, port), **self.publish(datanode_port, datanode_port)})
        return self

    def requested_ports(self) -> tuple[int | None, ...]:
        return self._requested

    def configure_attempt(self, network_mode: str, host_ip: str) -> None:
        from ingest.testing.jvm import free_port

        ports: list[int] = []
        for requested in self._requested:
            port = requested or free_port()
            while port in ports:
                port = free_port()
            ports.append(port)
        self.configure(network_mode, *ports, host_ip=host_ip)

    @property
    def address(self) -> str:
        if self.port is None or self._container is None:
            raise ServiceError("the HDFS container is not running; start() it first")
        return f"{self.host_ip}:{self.port}"

    @property
    def url(self) -> str:
        return f"hdfs://{self.address}"

    def is_ready(self, logs: str) -> bool:
        from ingest.testing.hdfs import webhdfs_answers

        return bool(HDFS_STARTED_LINE.search(logs)) and webhdfs_answers(self.address)

    def ready_description(self) -> str:
        return f"log 'Started MiniDFSCluster' and answer WebHDFS at {self.address}"

    def ports_text(self) -> str:
        return (f"port {self.port} (WebHDFS) / {self.datanode_port} (DataNode HTTP) / {self.namenode_port} "
                f"(NameNode RPC)")

    def bound_port(self) -> int | None:
        return self.port


class S3Container(ServiceContainer, S3Endpoint):
    """moto's S3 server in a container. `port` is its port on the host (default: a free
    one); `endpoint` its URL; `client()`, `storage_options()` and `create_bucket()` as
    `ingest.testing.s3.S3Server`'s."""

    service = "s3"
    title = "moto's S3 server"
    image_hint = "set INGEST_S3_IMAGE to an image your registry has (e.g. motoserver/moto:5.2.5)"

    def __init__(self, image: str, *, network_mode: str | None = None, port: int | None = None,
                 start_timeout: float = 60.0, attempts: int = 3, owner: Owner | None = None, **kwargs):
        super().__init__(image, network_mode=network_mode, start_timeout=start_timeout, attempts=attempts,
                         owner=owner, **kwargs)
        self._requested_port = port
        self.port: int | None = None

    def configure(self, network_mode: str, port: int, host_ip: str = "127.0.0.1") -> S3Container:
        """Set the command, ports, network and labels of one start attempt (no engine call)."""
        self.port, self.host_ip = port, host_ip
        if network_mode == "host":
            self.set_network("host")
            self._command = ["-H", "127.0.0.1", "-p", str(port)]
        else:
            self.set_network("bridge", self.publish(S3_CONTAINER_PORT, port))
            self._command = ["-H", "0.0.0.0", "-p", str(S3_CONTAINER_PORT)]
        return self

    def requested_ports(self) -> tuple[int | None, ...]:
        return (self._requested_port,)

    def configure_attempt(self, network_mode: str, host_ip: str) -> None:
        from ingest.testing.jvm import free_port

        self.configure(network_mode, self._requested_port or free_port(), host_ip)

    def create_settings(self) -> dict:
        return {**super().create_settings(), "command": list(self._command or [])}

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        if self.port is None or self._container is None:
            raise ServiceError("the S3 container is not running; start() it first")
        return f"http://{self.host_ip}:{self.port}"

    def is_ready(self, logs: str) -> bool:
        from ingest.testing.s3 import server_answers

        return server_answers(self.endpoint)

    def ready_description(self) -> str:
        return f"answer at {self.endpoint}/moto-api/"

    def ports_text(self) -> str:
        return f"port {self.port}"

    def bound_port(self) -> int | None:
        return self.port
