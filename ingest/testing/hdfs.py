"""A real single-process HDFS (NameNode + one DataNode, WebHDFS on) for tests and development.

`HdfsCluster` runs Hadoop's `MiniDFSClusterManager` from the `hadoop-client-minicluster`
jars on Maven Central (see docker/hdfs/pom.xml), through `ingest.testing.jvm.JavaService`:
its own work directory holds the cluster's data, its log (hdfs.log), the written
configuration and Jetty's temp files (java.io.tmpdir points there, or Jetty leaves
directories in /tmp); all of it is deleted when the cluster stops. Every listener binds
127.0.0.1 on a free port (the NameNode is started with port 0; the actual WebHDFS port
is read from the configuration the manager writes).

Ready when the manager wrote its details file (after the DataNode registered) and
WebHDFS answers a LISTSTATUS of "/". Expect ~15 s on a quiet 2-core machine.

`url` is the `hdfs://127.0.0.1:<webhdfs port>` that `ingest.storage_hdfs` takes.
Run ``python -m ingest.testing.hdfs`` (or ``ingest services hdfs``) for a cluster in
the foreground.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from ingest.errors import ServiceError
from ingest.install_hint import install_hint
from ingest.testing.foreground import serve_in_foreground
from ingest.testing.jvm import JavaService, missing_tools, require_tools, resolve_classpath

HADOOP_VERSION = "3.5.0"
MAIN_CLASS = "org.apache.hadoop.test.MiniDFSClusterManager"
JVM_OPTS = ("-Xms64m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true")
START_TIMEOUT = 120.0


def java_dir() -> Path:
    return Path(__file__).resolve().parent / "java"


def hdfs_classpath() -> str:
    return resolve_classpath(java_dir() / "hdfs" / "pom.xml", properties={"hadoop.version": HADOOP_VERSION})


def missing_requirements() -> list[str]:
    """What this machine lacks to start a cluster (Java 17, Maven, the `hdfs` client)."""
    missing = missing_tools(min_java=17)
    try:
        import hdfs  # noqa: F401
    except ImportError:
        missing.append(f"the Python `hdfs` client ({install_hint('hdfs')})")
    return missing


def _webhdfs_address(site_xml: Path) -> str | None:
    try:
        root = ET.parse(site_xml).getroot()
    except (OSError, ET.ParseError):
        return None  # not written yet, or being written
    for prop in root.iter("property"):
        if prop.findtext("name") == "dfs.namenode.http-address":
            value = (prop.findtext("value") or "").strip()
            port = value.rsplit(":", 1)[-1]
            return f"127.0.0.1:{port}" if port.isdigit() and port != "0" else None
    return None


def webhdfs_answers(address: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/webhdfs/v1/?op=LISTSTATUS&user.name=ingest",
                                    timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class HdfsCluster:
    """A MiniDFSCluster in its own JVM and work directory (a context manager)."""

    def __init__(self, *, start_timeout: float = START_TIMEOUT) -> None:
        self.start_timeout = start_timeout
        self._service: JavaService | None = None
        self.address: str | None = None
        self.namenode_port: int | None = None

    @property
    def url(self) -> str:
        if self.address is None:
            raise ServiceError("the HDFS cluster is not running")
        return f"hdfs://{self.address}"

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service is not None else None

    @property
    def workdir(self) -> Path | None:
        return self._service.workdir if self._service is not None else None

    @property
    def running(self) -> bool:
        return self._service is not None and self._service.running

    def log_tail(self) -> str:
        return self._service.log_tail() if self._service is not None else ""

    def start(self) -> "HdfsCluster":
        if self.running:
            return self
        require_tools("an HDFS cluster", min_java=17)
        classpath = hdfs_classpath()
        service = JavaService("hdfs").open()
        self._service = service
        work = service.workdir
        (work / "tmp").mkdir()
        shutil.copyfile(java_dir() / "hdfs" / "log4j.properties", work / "log4j.properties")
        site, details = work / "hdfs-site.xml", work / "details.json"

        def ready() -> bool:
            if not details.exists():
                return False
            self.address = self.address or _webhdfs_address(site)
            return self.address is not None and webhdfs_answers(self.address)

        try:
            service.start(
                classpath, MAIN_CLASS,
                ["-format", "-nnport", "0", "-httpport", "0", "-datanodes", "1",
                 "-writeConfig", str(site), "-writeDetails", str(details),
                 "-D", f"hdfs.minidfs.basedir={work / 'dfs'}",
                 "-D", "dfs.datanode.hostname=127.0.0.1",
                 "-D", "dfs.permissions.enabled=false",
                 "-D", "dfs.webhdfs.enabled=true",
                 # One DataNode: a write pipeline must not try to replace it.
                 "-D", "dfs.client.block.write.replace-datanode-on-failure.enable=false",
                 "-D", "dfs.replication=1"],
                jvm_opts=(*JVM_OPTS, f"-Djava.io.tmpdir={work / 'tmp'}",
                          f"-Dlog4j.configuration=file:{work / 'log4j.properties'}"),
                ready=ready, timeout=self.start_timeout,
            )
        except BaseException:
            self.stop()
            raise
        try:
            self.namenode_port = int(json.loads(details.read_text())["namenode_port"])
        except (OSError, ValueError, KeyError):
            self.namenode_port = None
        return self

    def pause(self) -> None:
        """SIGSTOP the cluster (NameNode and DataNode share the JVM): a hung server."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if self.pid is None:
            raise ServiceError("the HDFS cluster is not running")
        os.kill(self.pid, sig)

    def stop(self) -> None:
        """Stop the JVM and delete the work directory (data, logs, temp files)."""
        service, self._service = self._service, None
        self.address = None
        if service is not None:
            if service.running and service.pid is not None:
                os.kill(service.pid, signal.SIGCONT)  # a paused JVM would not act on SIGTERM
            service.close()

    def __enter__(self) -> "HdfsCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"HdfsCluster({self.url if self.address else 'not running'})"


def run_forever() -> int:
    """`ingest services hdfs`: a cluster in the foreground until Ctrl-C or SIGTERM."""
    missing = missing_requirements()
    if missing:
        print("cannot start HDFS: install " + " and ".join(missing), file=sys.stderr)
        return 2
    started = time.monotonic()
    cluster = HdfsCluster()
    return serve_in_foreground(
        cluster, name="HDFS",
        starting=f"Starting HDFS (MiniDFSCluster {HADOOP_VERSION}; the first run downloads its jars with Maven)...",
        usage=lambda: (
            f"HDFS (MiniDFSCluster {HADOOP_VERSION}) ready in {time.monotonic() - started:.1f} s\n"
            f"  url:      {cluster.url}   (WebHDFS; ssc.checkpoint('{cluster.url}/checkpoints/app'))\n"
            f"  namenode: 127.0.0.1:{cluster.namenode_port} (RPC)\n"
            f"  workdir:  {cluster.workdir} (deleted on exit)\n"
            "Ctrl-C stops it."
        ),
    )


if __name__ == "__main__":
    sys.exit(run_forever())
