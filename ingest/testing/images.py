"""Images of the test services, built on the local Docker engine without a registry.

`ingest services image kafka` builds ``ingest/kafka:<kafka version>``, the image the
pytest plugin runs by default; ``ingest services image hdfs`` builds
``ingest/hdfs:<hadoop version>`` (docker/hdfs: the MiniDFSCluster of the local launcher,
on fixed ports a bridge can publish)
and ``ingest services image s3`` ``ingest/s3:<moto version>`` (docker/s3: moto's
server), which the plugin runs with INGEST_HDFS_BACKEND / INGEST_S3_BACKEND=testcontainers;
``ingest services image flume`` builds ``ingest/flume:1.11.0`` (docker/flume: the Flume
jars and our pull sink; for docker/compose.yaml). Each in two steps:

1. the base ``ingest/debian:bookworm``, once per engine: ``debootstrap --variant=minbase``
   writes a Debian root file system (about a minute, 200 MB) that is imported as an
   image. Needs root and Debian's debootstrap package.
2. ``docker/<service>/Dockerfile`` on that base, built with host networking (it works on
   an engine without a bridge): for Kafka, the JRE from Debian's packages and the jars
   that Maven resolves from docker/kafka/pom.xml, the same ones the JVM launcher runs
   (HDFS and Flume alike); for S3, Python from Debian's packages and moto[server] at
   `ingest.testing.s3.MOTO_VERSION`, installed from PyPI.

A second build is answered from the engine's layer cache in seconds. Users with a
registry can skip all this and point ``INGEST_KAFKA_IMAGE`` at an upstream image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import ServiceError, ServiceToolMissingError

DEBIAN_SUITE = "bookworm"
BASE_IMAGE = f"ingest/debian:{DEBIAN_SUITE}"
IMAGE_SERVICES = ("kafka", "hdfs", "s3", "flume")


def kafka_image(kafka_version: str | None = None) -> str:
    """The tag of the project's Kafka image for `kafka_version` (default: the tested one)."""
    from ingest.testing.kafka import DEFAULT_KAFKA_VERSION

    return f"ingest/kafka:{kafka_version or DEFAULT_KAFKA_VERSION}"


def hdfs_image() -> str:
    """The tag of the project's HDFS image (the local launcher's Hadoop version)."""
    from ingest.testing.hdfs import HADOOP_VERSION

    return f"ingest/hdfs:{HADOOP_VERSION}"


def s3_image() -> str:
    """The tag of the project's S3 image (the moto version it installs)."""
    from ingest.testing.s3 import MOTO_VERSION

    return f"ingest/s3:{MOTO_VERSION}"


def flume_image() -> str:
    """The tag of the project's Flume image."""
    from ingest.testing.flume import FLUME_VERSION

    return f"ingest/flume:{FLUME_VERSION}"


@dataclass(frozen=True)
class BuiltImage:
    """What `build_image` did: the tag and id it produced, whether the base image had
    to be made first, how many build steps came from the cache, and the time taken."""

    tag: str
    image_id: str
    base_built: bool
    steps: int
    cached_steps: int
    seconds: float


def image_present(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_base_image(client, log: Callable[[str], None] = print) -> bool:
    """Make ``ingest/debian:bookworm`` if the engine lacks it; returns whether it did."""
    if image_present(client, BASE_IMAGE):
        return False
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise ServiceToolMissingError(
            f"building {BASE_IMAGE} needs debootstrap (Debian/Ubuntu: apt-get install debootstrap); "
            f"or import any Debian {DEBIAN_SUITE} root file system with `docker import` under that tag"
        )
    if os.geteuid() != 0:
        raise ServiceError(f"building {BASE_IMAGE} runs debootstrap, which needs root: run this command with sudo")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ingest-debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        log(f"Building {BASE_IMAGE} with debootstrap --variant=minbase {DEBIAN_SUITE} (about a minute)...")
        run = subprocess.run([debootstrap, "--variant=minbase", DEBIAN_SUITE, str(rootfs)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
            raise ServiceError(f"debootstrap {DEBIAN_SUITE} failed with code {run.returncode} (is a Debian "
                               f"mirror reachable?); the end of its output:\n{tail}")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            repository, tag = BASE_IMAGE.split(":")
            client.api.import_image(src=tar.stdout, repository=repository, tag=tag, stream_src=True)
        finally:
            tar.stdout.close()
            tar.wait()
        if tar.returncode != 0:
            raise ServiceError(f"archiving the root file system of {BASE_IMAGE} failed (tar exit code {tar.returncode})")
    log(f"Built {BASE_IMAGE} in {time.monotonic() - started:.0f} s.")
    return True


def _copy_files(directory: Path, service: str, names: tuple[str, ...]) -> None:
    from ingest.testing.kafka import java_dir

    for name in names:
        shutil.copy2(java_dir() / service / name, directory / name)


def _copy_jars(classpath: str, libs: Path) -> None:
    """The jars of a Maven-resolved classpath into the build context; same names and
    contents on every build, so the COPY layer is cached."""
    libs.mkdir(parents=True)
    for jar in classpath.split(os.pathsep):
        if jar:
            shutil.copyfile(jar, libs / Path(jar).name)


def _kafka_context(directory: Path, kafka_version: str) -> None:
    from ingest.testing.kafka import kafka_classpath

    _copy_files(directory, "kafka", ("Dockerfile", "kafka-start", "log4j2.properties"))
    _copy_jars(kafka_classpath(kafka_version), directory / "libs")


def _hdfs_context(directory: Path) -> None:
    """Dockerfile, entry point and logging from docker/hdfs; libs/ the jars of
    docker/hdfs/pom.xml (hadoop-client-minicluster), as the local launcher runs them, and
    the image's launcher (docker/hdfs-launcher), built with Maven."""
    from ingest.testing.hdfs import hdfs_classpath
    from ingest.testing.jvm import build_jar
    from ingest.testing.kafka import java_dir

    _copy_files(directory, "hdfs", ("Dockerfile", "hdfs-start", "log4j.properties"))
    _copy_jars(hdfs_classpath(), directory / "libs")
    launcher = build_jar(java_dir() / "hdfs-launcher", "ingest-hdfs-launcher-1.0", "the HDFS image's launcher")
    (directory / "launcher").mkdir()
    shutil.copyfile(launcher, directory / "launcher" / "ingest-hdfs-launcher.jar")


def pip_ca_bundle() -> Path | None:
    """The CA bundle the host's pip is configured to trust (PIP_CERT, else the `cert` of
    a pip.conf), or None when it uses its defaults. The S3 image's pip trusts the same,
    so a build behind a TLS-inspecting proxy works as pip does on the host."""
    import configparser

    configured = os.environ.get("PIP_CERT", "").strip()
    if not configured:
        for conf in (Path("/etc/pip.conf"), Path.home() / ".config" / "pip" / "pip.conf", Path.home() / ".pip" / "pip.conf"):
            parser = configparser.ConfigParser()
            try:
                parser.read(conf)
            except configparser.Error:
                continue
            configured = parser.get("global", "cert", fallback="").strip() or configured
    return Path(configured) if configured and Path(configured).is_file() else None


def _s3_context(directory: Path) -> None:
    """Dockerfile from docker/s3, and pip-ca.pem (see `pip_ca_bundle`; empty for none)."""
    _copy_files(directory, "s3", ("Dockerfile",))
    bundle = pip_ca_bundle()
    (directory / "pip-ca.pem").write_bytes(bundle.read_bytes() if bundle else b"")


def _flume_context(directory: Path) -> None:
    """Dockerfile, entry point, logging and default agent from docker/flume; lib/ the
    jars of docker/flume/pom.xml; plugins.d/ingest/lib/ our pull sink, built with Maven."""
    from ingest.testing.flume import build_pull_sink_jar, flume_classpath

    _copy_files(directory, "flume", ("Dockerfile", "flume-start", "log4j2.xml", "agent.properties"))
    _copy_jars(flume_classpath(), directory / "libs")
    plugin = directory / "plugins.d" / "ingest" / "lib"
    plugin.mkdir(parents=True)
    shutil.copyfile(build_pull_sink_jar(), plugin / "ingest-flume-sink.jar")


@dataclass(frozen=True)
class Recipe:
    """How to build one service's image: its tag, what it holds (for the log), the
    Dockerfile's build arguments and what fills the build context."""

    tag: str
    description: str
    buildargs: dict[str, str]
    fill_context: Callable[[Path], None]


def recipe(service: str, kafka_version: str | None = None) -> Recipe:
    """The recipe of `service`'s image; ServiceError for a service without one."""
    if service == "kafka":
        from ingest.testing.kafka import DEFAULT_KAFKA_VERSION, log4j_version_for

        version = kafka_version or DEFAULT_KAFKA_VERSION
        log4j_version_for(version)  # refuses an unsupported release before anything is built
        return Recipe(kafka_image(version), f"JRE from Debian's packages, Kafka {version} jars from Maven Central",
                      {"BASE": BASE_IMAGE, "KAFKA_VERSION": version},
                      lambda directory: _kafka_context(directory, version))
    if service == "hdfs":
        from ingest.testing.hdfs import HADOOP_VERSION

        return Recipe(hdfs_image(), f"JRE from Debian's packages, Hadoop {HADOOP_VERSION} minicluster jars from "
                                    f"Maven Central", {"BASE": BASE_IMAGE, "HADOOP_VERSION": HADOOP_VERSION},
                      _hdfs_context)
    if service == "s3":
        from ingest.testing.s3 import MOTO_VERSION

        return Recipe(s3_image(), f"Python from Debian's packages, moto[server]=={MOTO_VERSION} from PyPI",
                      {"BASE": BASE_IMAGE, "MOTO_VERSION": MOTO_VERSION}, _s3_context)
    if service == "flume":
        from ingest.testing.flume import FLUME_VERSION

        return Recipe(flume_image(), f"JRE from Debian's packages, Flume {FLUME_VERSION} jars from Maven Central, "
                                     f"our pull sink", {"BASE": BASE_IMAGE, "FLUME_VERSION": FLUME_VERSION},
                      _flume_context)
    raise ServiceError(f"no image recipe for service {service!r}; choose one of {', '.join(IMAGE_SERVICES)}")


def build_image(service: str = "kafka", kafka_version: str | None = None, *, client=None,
                log: Callable[[str], None] = print) -> BuiltImage:
    """Build the image of `service` on the engine of DOCKER_HOST (see the module docstring)."""
    from ingest.testing.docker_engine import engine_client

    plan = recipe(service, kafka_version)
    tag, description, buildargs, fill_context = plan.tag, plan.description, plan.buildargs, plan.fill_context
    own_client = client is None
    client = client or engine_client(timeout=600)
    started = time.monotonic()
    try:
        base_built = build_base_image(client, log)
        log(f"Building {tag} ({description})...")
        with tempfile.TemporaryDirectory(prefix="ingest-image-") as tmp:
            fill_context(Path(tmp))
            steps, cached, image_id, output = 0, 0, "", []
            for chunk in client.api.build(path=tmp, tag=tag, network_mode="host", rm=True, forcerm=True,
                                          decode=True, buildargs=buildargs):
                if "error" in chunk:
                    tail = "\n".join("".join(output).splitlines()[-15:])
                    raise ServiceError(f"building {tag} failed: {chunk['error'].strip()}\n{tail}")
                text = chunk.get("stream", "")
                output.append(text)
                if text.startswith("Step "):
                    steps += 1
                elif "Using cache" in text:
                    cached += 1
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
        image_id = image_id or client.images.get(tag).id
    finally:
        if own_client:
            client.close()
    built = BuiltImage(tag, image_id, base_built, steps, cached, time.monotonic() - started)
    log(f"Built {tag} ({image_id[:19]}) in {built.seconds:.1f} s: "
        + ("base image made with debootstrap, " if base_built else f"base {BASE_IMAGE} reused, ")
        + f"{cached} of {steps} build steps from the cache.")
    return built


def run_build(service: str, kafka_version: str | None = None) -> int:
    """`ingest services image SERVICE`: build, print what was built; exit code."""
    try:
        built = build_image(service, kafka_version, log=lambda line: print(line, flush=True))
    except ServiceError as exc:
        print(f"The {service} image could not be built: {exc}", flush=True)
        return 1
    print(json.dumps({"tag": built.tag, "id": built.image_id, "seconds": round(built.seconds, 1)}))
    return 0
