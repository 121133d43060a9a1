"""A real Apache Flume 1.11 agent for tests and development.

`FlumeAgent` runs `org.apache.flume.node.Application` from the jars on Maven Central
(docker/flume/pom.xml, resolved once into ~/.m2 by `ingest.testing.jvm`), with an
agent configuration written into its own work directory. It is ready when the log
says every source, channel and sink of the configuration started; on stop (SIGTERM,
escalated to SIGKILL) the JVM goes and the work directory is deleted, also at
interpreter exit and on SIGTERM/SIGHUP (JavaService's guarantees).

Configurations are Flume's own properties. `agent_config` builds one from plain
mappings, and the helpers below give the components the tests use:

    config = agent_config(
        sources={"r1": seq_source(1000, channel="c1")},
        channels={"c1": memory_channel()},
        sinks={"k1": avro_sink("127.0.0.1", port, channel="c1")},
    )
    with FlumeAgent(config) as agent:
        ...

The string ``{workdir}`` in a configuration is replaced by the agent's work directory
(for a file channel's directories or a spooling directory). `plugin_jars` are added
to the classpath as Flume's `plugins.d` would (e.g. our pull sink, see
`ingest.testing.flume_sink`).

Run ``ingest services flume --config FILE`` to start an agent in the foreground.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ingest.errors import ConfigError, ServiceError
from ingest.testing.foreground import serve_in_foreground
from ingest.testing.jvm import (
    JavaService,
    build_jar,
    missing_tools,
    require_tools,
    resolve_classpath,
)
from ingest.testing.kafka import java_dir

FLUME_VERSION = "1.11.0"
MAIN_CLASS = "org.apache.flume.node.Application"

# ~100 MB resident: serial GC and C1 only keep start-up cheap on a 2-core machine.
AGENT_JVM_OPTS = (
    "-Xms32m", "-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
    "-Djava.net.preferIPv4Stack=true", "-Djava.awt.headless=true",
)

# Evidence that a component started. Flume's MonitoredCounterGroup logs the first line
# when a component with counters starts (channels, seq, spooldir and avro sources, the
# avro sink, our pull sink); the null sink says "Null sink k1 started."; the netcat
# source has no counters, and says only that it opened its server socket.
_STARTED = re.compile(r"Component type: (?:SOURCE|CHANNEL|SINK), name: (\S+) started|[Ss]ink (\S+) started")
_NETCAT_LISTENING = re.compile(r"Created serverSocket:\S*:(\d+)\]")
# SIGTERM makes Flume print each counter: "Shutdown Metric for type: CHANNEL, name: c1.
# channel.current.size == 0".
_SHUTDOWN_METRIC = re.compile(r"Shutdown Metric for type: (\w+), name: (\S+)\. (\S+) == (-?\d+)")



def flume_pom() -> Path:
    return java_dir() / "flume" / "pom.xml"


def flume_classpath() -> str:
    """The runtime classpath of a Flume 1.11 agent, resolved from Maven Central once."""
    return resolve_classpath(flume_pom())


def pull_sink_project() -> Path:
    return java_dir() / "flume-sink"


def build_pull_sink_jar(timeout: float = 600.0) -> Path:
    """Our pull sink's jar (docker/flume-sink), built with this machine's JDK and
    Maven once per version of its sources, and cached next to the resolved
    classpaths (~/.m2/ingest-classpaths) under a lock, so parallel sessions build it
    once. The jar is what a user drops into an agent's plugins.d."""
    return build_jar(pull_sink_project(), "ingest-flume-sink-1.0", "the Flume pull sink", timeout)


def pull_sink(port: int, *, channel: str = "c1", host: str = "127.0.0.1", timeout_s: int = 60,
              threads: int = 10) -> dict[str, object]:
    """Our pull sink (needs `build_pull_sink_jar()` among the agent's plugin jars)."""
    return {"type": "io.github.ingest.flume.PullSink", "channel": channel, "hostname": host, "port": port,
            "timeout": timeout_s, "threads": threads}


def missing_requirements() -> list[str]:
    """What must be installed before `FlumeAgent` can run here; empty when nothing."""
    return missing_tools(min_java=11)


# --------------------------------------------------------------------------- configurations


def seq_source(total_events: int, *, channel: str = "c1", batch_size: int = 100) -> dict[str, object]:
    """Flume's sequence generator: bodies "0", "1", ... up to `total_events` - 1."""
    return {"type": "seq", "channels": channel, "totalEvents": total_events, "batchSize": batch_size}


def netcat_source(port: int, *, channel: str = "c1", host: str = "127.0.0.1") -> dict[str, object]:
    """One event per line written to host:port (Flume answers each line "OK")."""
    return {"type": "netcat", "channels": channel, "bind": host, "port": port}


def spooldir_source(directory: str, *, channel: str = "c1") -> dict[str, object]:
    """One event per line of each file dropped into `directory`."""
    return {"type": "spooldir", "channels": channel, "spoolDir": directory}


def memory_channel(*, capacity: int = 100_000, transaction_capacity: int = 1000) -> dict[str, object]:
    return {"type": "memory", "capacity": capacity, "transactionCapacity": transaction_capacity}


def file_channel(name: str = "c1", *, transaction_capacity: int = 1000) -> dict[str, object]:
    """Flume's durable channel, its files in the agent's work directory."""
    return {"type": "file", "checkpointDir": f"{{workdir}}/{name}/checkpoint",
            "dataDirs": f"{{workdir}}/{name}/data", "transactionCapacity": transaction_capacity}


def avro_sink(host: str, port: int, *, channel: str = "c1", batch_size: int = 100,
              timeout_ms: int = 5000) -> dict[str, object]:
    """Flume's Avro sink, which pushes to an Avro source (or to `flume_stream`)."""
    return {"type": "avro", "channel": channel, "hostname": host, "port": port, "batch-size": batch_size,
            "connect-timeout": timeout_ms, "request-timeout": timeout_ms}


def avro_source(port: int, *, channel: str = "c1", host: str = "127.0.0.1") -> dict[str, object]:
    """Flume's Avro source: what a Flume-to-Flume hop delivers to."""
    return {"type": "avro", "channels": channel, "bind": host, "port": port}


def null_sink(*, channel: str = "c1", batch_size: int = 100) -> dict[str, object]:
    return {"type": "null", "channel": channel, "batchSize": batch_size}


def agent_config(*, sources: Mapping[str, Mapping[str, object]], channels: Mapping[str, Mapping[str, object]],
                 sinks: Mapping[str, Mapping[str, object]], name: str = "a1") -> str:
    """Flume properties of one agent named `name` with these components (each a
    mapping of its settings, "type" included)."""
    if not sources or not channels or not sinks:
        raise ConfigError("a Flume agent needs at least one source, one channel and one sink")
    lines = [f"{name}.sources = {' '.join(sources)}", f"{name}.channels = {' '.join(channels)}",
             f"{name}.sinks = {' '.join(sinks)}"]
    for kind, components in (("sources", sources), ("channels", channels), ("sinks", sinks)):
        for component, settings in components.items():
            if "type" not in settings:
                raise ConfigError(f"Flume {kind[:-1]} {component!r} has no type")
            lines.extend(f"{name}.{kind}.{component}.{key} = {value}" for key, value in settings.items())
    return "\n".join(lines) + "\n"


def components_of(config: str, name: str = "a1") -> list[str]:
    """The source, channel and sink names declared for agent `name`."""
    names: list[str] = []
    for line in config.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in (f"{name}.sources", f"{name}.channels", f"{name}.sinks"):
            names.extend(value.split())
    return names


def _setting(config: str, key: str) -> str | None:
    for line in config.splitlines():
        k, sep, value = line.partition("=")
        if sep and k.strip() == key:
            return value.strip()
    return None


# --------------------------------------------------------------------------- the agent


class FlumeAgent:
    """One Flume 1.11 agent running `config` (Flume properties text).

    `name` is the agent name the properties use. `plugin_jars` join the classpath.
    `start_timeout` bounds the wait for every component to report started. Use as a
    context manager, or call `start()` and `stop()`.
    """

    def __init__(self, config: str, *, name: str = "a1", plugin_jars: Sequence[str | os.PathLike[str]] = (),
                 start_timeout: float = 120.0, jvm_opts: Sequence[str] = AGENT_JVM_OPTS) -> None:
        if not isinstance(config, str) or not config.strip():
            raise ConfigError("FlumeAgent: config must be the agent's Flume properties text")
        self.name = name
        self.components = components_of(config, name)
        if not self.components:
            raise ConfigError(f"FlumeAgent: the config declares no sources, channels or sinks for agent {name!r} "
                              f"(lines like '{name}.sources = r1'); is `name` the agent name it uses?")
        self.config = config
        # A netcat source shows it started only by the port it listens on.
        self._netcat_ports = {
            component: int(_setting(config, f"{name}.sources.{component}.port") or 0)
            for component in self.components
            if _setting(config, f"{name}.sources.{component}.type") == "netcat"
        }
        self.plugin_jars = [str(Path(j).resolve()) for j in plugin_jars]
        for jar in self.plugin_jars:
            if not os.path.isfile(jar):
                raise ConfigError(f"FlumeAgent: plugin jar {jar} does not exist")
        self.start_timeout = start_timeout
        self.jvm_opts = tuple(jvm_opts)
        self._service: JavaService | None = None
        self._final_log = ""

    @property
    def running(self) -> bool:
        return self._service is not None and self._service.running

    @property
    def pid(self) -> int | None:
        return self._service.pid if self._service is not None else None

    @property
    def workdir(self) -> Path:
        if self._service is None:
            raise ServiceError("the Flume agent is not started")
        return self._service.workdir

    def log_text(self) -> str:
        """The agent's log so far (after stop: the whole log, kept in memory)."""
        return self._service.log_text() if self._service is not None else self._final_log

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]

    def started_components(self) -> set[str]:
        """The components whose start the log shows so far."""
        text = self.log_text()
        started = {m.group(1) or m.group(2) for m in _STARTED.finditer(text)}
        listening = {int(p) for p in _NETCAT_LISTENING.findall(text)}
        started.update(c for c, port in self._netcat_ports.items() if port in listening)
        return started

    def start(self) -> FlumeAgent:
        if self.running:
            return self
        require_tools("a Flume agent", min_java=11)
        classpath = os.pathsep.join([flume_classpath(), *self.plugin_jars])
        service = JavaService("flume").open()
        self._service = service
        try:
            workdir = service.workdir
            shutil.copyfile(java_dir() / "flume" / "log4j2.xml", workdir / "log4j2.xml")
            conf = workdir / "agent.properties"
            conf.write_text(self.config.replace("{workdir}", str(workdir)))
            wanted = set(self.components)
            service.start(
                classpath, MAIN_CLASS, ["-n", self.name, "-f", str(conf), "--no-reload-conf"],
                jvm_opts=[*self.jvm_opts, f"-Dlog4j2.configurationFile={workdir / 'log4j2.xml'}"],
                ready=lambda: wanted <= self.started_components(), timeout=self.start_timeout,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the agent's log matches `pattern` (a regular expression)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if time.monotonic() > deadline:
                raise ServiceError(f"the Flume agent's log did not show {pattern!r} within {timeout:.0f} s; "
                                   f"its end:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the agent (SIGTERM: Flume stops its components and prints its counters)
        and delete its work directory. The log stays readable through `log_text()`."""
        service, self._service = self._service, None
        if service is None:
            return
        try:
            service.stop(grace=20.0)
        finally:
            self._final_log = service.log_text()
            service.close()

    def shutdown_metrics(self) -> dict[tuple[str, str], dict[str, int]]:
        """The counters Flume printed when it stopped, by (type, component):
        e.g. ``metrics[("CHANNEL", "c1")]["channel.current.size"]``."""
        metrics: dict[tuple[str, str], dict[str, int]] = {}
        for m in _SHUTDOWN_METRIC.finditer(self.log_text()):
            metrics.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = int(m.group(4))
        return metrics

    def __enter__(self) -> FlumeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FlumeAgent({self.name!r}, pid={self.pid}, components={self.components})"


def run_forever(config_file: str, name: str = "a1", plugin_jars: Sequence[str] = ()) -> int:
    """Start an agent with the configuration in `config_file` and serve until SIGINT or
    SIGTERM. Returns 0 after a requested stop, 1 when the agent could not start or
    died, 130 when interrupted while starting."""
    try:
        config = Path(config_file).read_text()
    except OSError as exc:
        print(f"cannot read the Flume configuration {config_file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        agent = FlumeAgent(config, name=name, plugin_jars=plugin_jars)
    except ConfigError as exc:
        print(f"Flume could not start: {exc}", file=sys.stderr)
        return 1
    return serve_in_foreground(
        agent, name="Flume",
        starting=f"Starting Flume {FLUME_VERSION} agent {name} (the first run downloads its jars with Maven)...",
        usage=lambda: (
            f"Flume agent {name} is running (pid {agent.pid}, work directory {agent.workdir}); components "
            f"{', '.join(agent.components)} started. Press Ctrl-C to stop it; its files are deleted when it "
            f"stops."
        ),
    )
