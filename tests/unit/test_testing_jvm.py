"""ingest.testing.jvm: classpath resolution and caching, and the JavaService promises
(readiness, errors with the log's tail, stopping its own process group, no JVM left
behind by a finished, terminated or killed owner). JVM tests run a tiny Java program,
compiled once per module; no Kafka is involved."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ingest.errors import (
    MavenError,
    MavenRepositoryUnreachableError,
    ServiceStartError,
    StaleServiceDirError,
)
from ingest.testing import jvm
from ingest.testing.jvm import JavaService, classpath_key, reap_stale_services, resolve_classpath

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>t</groupId><artifactId>{artifact}</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
"""

DUMMY = textwrap.dedent(
    """
    public class Dummy {
        public static void main(String[] args) throws Exception {
            switch (args[0]) {
                case "serve":
                    System.out.println("starting");
                    Thread.sleep(200);
                    System.out.println("READY");
                    Thread.sleep(600_000);
                    break;
                case "fail":
                    System.out.println("boom: bad setting x");
                    System.exit(3);
                case "stubborn":
                    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                        try { Thread.sleep(600_000); } catch (InterruptedException e) { }
                    }));
                    System.out.println("READY");
                    Thread.sleep(600_000);
                    break;
                default:
                    Thread.sleep(600_000);
            }
        }
    }
    """
)


def write_pom(folder: Path, artifact: str = "a") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pom = folder / "pom.xml"
    pom.write_text(POM.format(artifact=artifact))
    return pom


def fake_mvn(tmp_path: Path, jar: Path, exit_code: int = 0, delay: float = 0.0) -> Path:
    """A stand-in for mvn that records each call and writes a classpath of `jar`."""
    script = tmp_path / "fake-mvn"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo called >> {tmp_path / 'mvn-calls'}
        sleep {delay}
        for arg in "$@"; do
          case "$arg" in -Dmdep.outputFile=*) out="${{arg#-Dmdep.outputFile=}}";; esac
        done
        [ {exit_code} -eq 0 ] && printf %s {jar} > "$out"
        echo "[ERROR] fake failure" 
        exit {exit_code}
        """))
    script.chmod(0o755)
    return script


def mvn_calls(tmp_path: Path) -> int:
    calls = tmp_path / "mvn-calls"
    return len(calls.read_text().splitlines()) if calls.exists() else 0


# --------------------------------------------------------------------------- pure logic


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("no version here", None),
    ],
)
def test_java_major_version_is_parsed_from_java_version_output(output: str, major: int | None) -> None:
    assert jvm.parse_java_version(output) == major


def test_classpath_key_changes_with_the_pom_and_the_properties(tmp_path: Path) -> None:
    pom = write_pom(tmp_path / "one")
    other = write_pom(tmp_path / "two", artifact="b")

    key = classpath_key(pom, {"v": "1"})

    assert key == classpath_key(pom, {"v": "1"})
    assert key != classpath_key(pom, {"v": "2"})
    assert key != classpath_key(pom)
    assert key != classpath_key(other, {"v": "1"})
    assert len(key) == 16


def test_free_port_is_bindable_and_a_listening_port_is_not_free() -> None:
    port = jvm.free_port()
    assert jvm.port_is_free(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not jvm.port_is_free(port)


# --------------------------------------------------------------------------- classpath


def test_a_cached_classpath_is_returned_without_running_maven(tmp_path: Path, monkeypatch) -> None:
    jar = tmp_path / "x.jar"
    jar.write_bytes(b"jar")
    monkeypatch.setenv("MVN", str(fake_mvn(tmp_path, jar)))
    pom = write_pom(tmp_path / "svc")
    cache = tmp_path / "cache"

    first = resolve_classpath(pom, cache_dir=cache)
    second = resolve_classpath(pom, cache_dir=cache)

    assert first == second == str(jar)
    assert mvn_calls(tmp_path) == 1
    assert (cache / f"svc-{classpath_key(pom)}.cp").read_text() == str(jar)


def test_a_cache_naming_a_deleted_jar_is_resolved_again(tmp_path: Path, monkeypatch) -> None:
    jar = tmp_path / "x.jar"
    jar.write_bytes(b"jar")
    monkeypatch.setenv("MVN", str(fake_mvn(tmp_path, jar)))
    pom = write_pom(tmp_path / "svc")
    cache = tmp_path / "cache"
    resolve_classpath(pom, cache_dir=cache)

    jar.unlink()
    jar.write_bytes(b"jar again")  # recreated by the second resolution in real life
    (cache / f"svc-{classpath_key(pom)}.cp").write_text(str(tmp_path / "gone.jar"))

    assert resolve_classpath(pom, cache_dir=cache) == str(jar)
    assert mvn_calls(tmp_path) == 2


def test_a_maven_failure_shows_the_end_of_its_output(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MVN", str(fake_mvn(tmp_path, tmp_path / "x.jar", exit_code=1)))
    pom = write_pom(tmp_path / "svc")

    with pytest.raises(MavenError) as error:
        resolve_classpath(pom, cache_dir=tmp_path / "cache")

    assert not isinstance(error.value, MavenRepositoryUnreachableError)
    assert "exit code 1" in str(error.value)
    assert "[ERROR] fake failure" in str(error.value)


def test_parallel_workers_resolve_a_pom_only_once(tmp_path: Path) -> None:
    jar = tmp_path / "x.jar"
    jar.write_bytes(b"jar")
    mvn = fake_mvn(tmp_path, jar, delay=1.0)
    pom = write_pom(tmp_path / "svc")
    code = (
        "import sys; from ingest.testing.jvm import resolve_classpath;"
        f"print(resolve_classpath({str(pom)!r}, cache_dir={str(tmp_path / 'cache')!r}))"
    )
    env = {**os.environ, "MVN": str(mvn)}

    workers = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
               for _ in range(3)]
    outputs = [w.communicate(timeout=60)[0].strip() for w in workers]

    assert outputs == [str(jar)] * 3
    assert mvn_calls(tmp_path) == 1


@pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Apache Maven (apt-get install maven)")
def test_an_unreachable_maven_repository_is_said_plainly(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = tmp_path / "settings.xml"
    settings.write_text(textwrap.dedent(f"""\
        <settings><mirrors><mirror>
          <id>nowhere</id><mirrorOf>*</mirrorOf><url>http://127.0.0.1:{closed}/maven2</url>
        </mirror></mirrors></settings>
        """))
    pom = write_pom(tmp_path / "svc")

    with pytest.raises(MavenRepositoryUnreachableError) as error:
        resolve_classpath(
            pom, cache_dir=tmp_path / "cache",
            maven_args=["-s", str(settings), f"-Dmaven.repo.local={tmp_path / 'repo'}"],
        )

    message = str(error.value)
    assert "could not download the jars" in message
    assert f"127.0.0.1:{closed}" in message  # mvn's own last lines are shown
    assert not list((tmp_path / "cache").glob("*.cp"))


# --------------------------------------------------------------------------- JavaService


@pytest.fixture(scope="module")
def dummy_cp(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("javac") is None or jvm.java_executable() is None:
        pytest.skip("needs a JDK (javac and java): apt-get install openjdk-17-jdk-headless")
    folder = tmp_path_factory.mktemp("dummy")
    (folder / "Dummy.java").write_text(DUMMY)
    subprocess.run(["javac", "-d", str(folder), str(folder / "Dummy.java")], check=True, timeout=120)
    return str(folder)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


def wait_until(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_service_is_ready_when_its_probe_says_so_and_close_removes_everything(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        service.start(dummy_cp, "Dummy", ["serve"], ready=lambda: "READY" in service.log_text(), timeout=30)
        pid, workdir = service.pid, service.workdir
        record = json.loads((workdir / jvm.PIDFILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")

        assert service.running
        assert "READY" in service.log_path.read_text()
        assert record["pid"] == pid and record["owner_pid"] == os.getpid()
        assert f"-Dingest.service.dir={workdir}".encode() in cmdline
        assert os.getpgid(pid) == pid, "the JVM leads its own process group"

    assert service.returncode == 143  # the JVM's exit code after SIGTERM
    assert not pid_alive(pid)
    assert not workdir.exists()


def test_a_service_that_exits_while_starting_raises_with_its_log_tail(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        with pytest.raises(ServiceStartError) as error:
            service.start(dummy_cp, "Dummy", ["fail"], ready=lambda: False, timeout=30)

        assert error.value.exit_code == 3
        assert "boom: bad setting x" in error.value.log_tail
        assert "dummy exited with code 3" in str(error.value)
        assert "boom: bad setting x" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_service_not_ready_in_time_is_stopped(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        with pytest.raises(ServiceStartError) as error:
            service.start(dummy_cp, "Dummy", ["silent"], ready=lambda: False, timeout=1)
        pid = service.pid

        assert "not ready within 1 s" in str(error.value)
        assert not service.running
        assert not pid_alive(pid)


def test_an_interruption_while_waiting_stops_the_jvm(dummy_cp: str, tmp_path: Path) -> None:
    def interrupted() -> bool:
        raise KeyboardInterrupt

    with JavaService("dummy", root=tmp_path) as service:
        with pytest.raises(KeyboardInterrupt):
            service.start(dummy_cp, "Dummy", ["silent"], ready=interrupted)
        assert not pid_alive(service.pid)


def test_stop_kills_a_jvm_that_ignores_sigterm_after_the_grace_period(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        service.start(dummy_cp, "Dummy", ["stubborn"], ready=lambda: "READY" in service.log_text(), timeout=30)
        started = time.monotonic()
        code = service.stop(grace=1.0)

        assert code == -signal.SIGKILL
        assert time.monotonic() - started < 10
        assert not service.running


def test_a_failing_tool_raises_with_its_output(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        with pytest.raises(ServiceStartError) as error:
            service.run(dummy_cp, "Dummy", ["fail"])
    assert error.value.exit_code == 3
    assert "boom: bad setting x" in str(error.value)


OWNER = textwrap.dedent(
    """
    import sys, time
    from ingest.testing.jvm import JavaService
    service = JavaService("dummy", root=sys.argv[1]).open()
    service.start(sys.argv[2], "Dummy", ["serve"], ready=lambda: "READY" in service.log_text(), timeout=60)
    print(service.pid, service.workdir, flush=True)
    if sys.argv[3] == "exit":
        sys.exit(0)  # without closing: atexit must stop the JVM
    time.sleep(600)
    """
)


def start_owner(tmp_path: Path, dummy_cp: str, how: str) -> tuple[subprocess.Popen, int, Path]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "root"), dummy_cp, how],
                             stdout=subprocess.PIPE, text=True)
    pid, workdir = owner.stdout.readline().split()
    return owner, int(pid), Path(workdir)


def test_an_owner_that_exits_without_closing_stops_its_jvm(dummy_cp: str, tmp_path: Path) -> None:
    owner, pid, workdir = start_owner(tmp_path, dummy_cp, "exit")

    assert owner.wait(timeout=60) == 0
    assert not pid_alive(pid)
    assert not workdir.exists()


def test_an_owner_terminated_by_sigterm_stops_its_jvm(dummy_cp: str, tmp_path: Path) -> None:
    owner, pid, workdir = start_owner(tmp_path, dummy_cp, "wait")
    assert pid_alive(pid)

    owner.terminate()

    assert owner.wait(timeout=60) == -signal.SIGTERM
    assert not pid_alive(pid)
    assert not workdir.exists()


def test_the_jvm_of_a_killed_owner_is_reaped_by_the_next_run(dummy_cp: str, tmp_path: Path) -> None:
    owner, pid, workdir = start_owner(tmp_path, dummy_cp, "wait")
    owner.kill()
    owner.wait(timeout=30)
    assert pid_alive(pid), "SIGKILL gives the owner no chance to clean up"

    reaped = reap_stale_services(tmp_path / "root")

    assert reaped == [workdir]
    assert wait_until(lambda: not pid_alive(pid))
    assert not workdir.exists()


def test_the_reaper_leaves_a_live_owners_service_alone(dummy_cp: str, tmp_path: Path) -> None:
    with JavaService("dummy", root=tmp_path) as service:
        service.start(dummy_cp, "Dummy", ["serve"], ready=lambda: "READY" in service.log_text(), timeout=30)

        assert reap_stale_services(tmp_path) == []
        assert service.running
        assert service.workdir.exists()


def test_the_reaper_never_kills_a_process_that_reuses_a_recorded_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    workdir = tmp_path / "dummy-stale"
    workdir.mkdir()
    (workdir / jvm.PIDFILE).write_text(json.dumps({"name": "dummy", "pid": stranger.pid, "owner_pid": dead_owner.pid}))
    try:
        assert reap_stale_services(tmp_path) == [workdir]
        assert stranger.poll() is None, "a pid without our marker is not ours to kill"
        assert not workdir.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_a_given_workdir_in_use_by_a_live_owner_is_refused(dummy_cp: str, tmp_path: Path) -> None:
    workdir = tmp_path / "mine"
    with JavaService("dummy", workdir=workdir) as first:
        first.start(dummy_cp, "Dummy", ["serve"], ready=lambda: "READY" in first.log_text(), timeout=30)

        with pytest.raises(StaleServiceDirError) as error:
            JavaService("dummy", workdir=workdir).open()

        assert f"is in use by dummy of process {os.getpid()}" in str(error.value)
        assert first.running
    assert workdir.exists(), "a directory passed in is kept"
    assert not (workdir / jvm.PIDFILE).exists()
