"""Run JVM services (a Kafka broker, later Flume and HDFS) from jars on Maven Central.

Nothing here knows about a particular service. Two parts:

* `resolve_classpath(pom)` turns a pom's dependency list into a runtime classpath. Maven
  downloads the jars into ``~/.m2/repository`` once; the classpath string is cached in
  ``~/.m2/ingest-classpaths`` under a key made of the pom's bytes and the properties
  passed, behind a file lock so that parallel test workers resolve it only once.
* `JavaService` owns one work directory and the JVMs run in it. Guarantee: a JVM does
  not outlive its owner. It runs in its own process group (a terminal's Ctrl-C does not
  reach it; the owner stops it in order), `stop()` sends SIGTERM to that group and
  SIGKILL after a grace period, every open service is closed at interpreter exit and
  on SIGTERM/SIGHUP, and a pidfile in the work directory lets a later run reap a JVM
  whose owner was killed with SIGKILL (after checking the JVM's command line, so a
  recycled pid is never killed).

Only the standard library is imported here, so that importing this module is cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ingest.errors import (
    MavenError,
    MavenRepositoryUnreachableError,
    ServiceError,
    ServiceStartError,
    ServiceToolMissingError,
    StaleServiceDirError,
)

log = logging.getLogger(__name__)

# Pinned: Maven 3.8 binds no version to the `dependency:` prefix, and some recent
# releases of Maven plugins require Maven 3.9.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

PIDFILE = "service.pid"
# Every JVM gets -D<MARKER_PROPERTY>=<its work directory>: the reaper kills a pid only
# when its command line carries this marker.
MARKER_PROPERTY = "ingest.service.dir"
LOG_TAIL_CHARS = 4000

INSTALL_JAVA = "a JDK 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless)"
INSTALL_MAVEN = "Apache Maven 3.6 or newer (Debian/Ubuntu: apt-get install maven)"


# --------------------------------------------------------------------------- tools


def java_executable() -> str | None:
    """The java launcher to use: $JAVA, else $JAVA_HOME/bin/java, else java on PATH."""
    if os.environ.get("JAVA"):
        return os.environ["JAVA"]
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return os.path.join(home, "bin", "java")
    return shutil.which("java")


def maven_executable() -> str | None:
    """The Maven launcher to use: $MVN, else mvn on PATH."""
    return os.environ.get("MVN") or shutil.which("mvn")


_java_versions: dict[str, int | None] = {}


def java_major_version(java: str | None = None) -> int | None:
    """The major version of a java launcher (8 for 1.8, 17 for 17.0.15), or None when
    it does not run. Cached per launcher path."""
    java = java or java_executable()
    if java is None:
        return None
    if java not in _java_versions:
        try:
            out = subprocess.run(
                [java, "-version"], stdin=subprocess.DEVNULL, capture_output=True,
                text=True, errors="replace", timeout=60,
            )
            _java_versions[java] = parse_java_version(out.stderr + out.stdout)
        except (OSError, subprocess.SubprocessError):
            _java_versions[java] = None
    return _java_versions[java]


def parse_java_version(text: str) -> int | None:
    """Major version from `java -version` output: 'version "1.8.0_392"' is 8,
    'version "17.0.15"' is 17, 'version "21"' is 21."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):
        return int(m.group(2))
    return major


def missing_tools(min_java: int = 17) -> list[str]:
    """What must be installed before a JVM service can start here; empty when nothing."""
    missing = []
    java = java_executable()
    version = java_major_version(java) if java else None
    if java is None or version is None:
        missing.append(INSTALL_JAVA.replace("17", str(min_java)))
    elif version < min_java:
        missing.append(f"{INSTALL_JAVA.replace('17', str(min_java))}; found Java {version} at {java}")
    if maven_executable() is None:
        missing.append(INSTALL_MAVEN)
    return missing


def require_tools(service: str, min_java: int = 17) -> None:
    """Raise ServiceToolMissingError naming what to install, if anything is missing."""
    missing = missing_tools(min_java)
    if missing:
        raise ServiceToolMissingError(
            f"cannot start {service} from Maven Central jars: install " + " and ".join(missing)
        )


# --------------------------------------------------------------------------- classpath


def classpath_cache_dir() -> Path:
    """Where resolved classpath strings are cached: $INGEST_CLASSPATH_CACHE, else
    ~/.m2/ingest-classpaths (next to the jars they name)."""
    env = os.environ.get("INGEST_CLASSPATH_CACHE")
    return Path(env) if env else Path.home() / ".m2" / "ingest-classpaths"


def classpath_key(pom: Path, properties: Mapping[str, str] | None = None) -> str:
    """Cache key of a resolution: a hash of the pom's bytes and the -D properties."""
    digest = hashlib.sha256(Path(pom).read_bytes())
    for name, value in sorted((properties or {}).items()):
        digest.update(f"\0{name}={value}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_cached_classpath(path: Path) -> str | None:
    """The cached classpath if the file exists and every jar it names is still there."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    entries = [e for e in text.split(os.pathsep) if e]
    if all(os.path.exists(e) for e in entries):
        return text
    log.info("classpath cache %s names missing jars; resolving again", path)
    return None


# Lines of Maven output that mean the repository could not be reached, as opposed to an
# artifact that does not exist or a broken pom.
_UNREACHABLE = re.compile(
    r"Could not transfer|transfer failed|UnknownHost|Unknown host|Connection refused"
    r"|Connect to \S+ .*failed|connect timed out|Read timed out|Network is unreachable"
    r"|No route to host|Temporary failure in name resolution|Name or service not known"
    r"|PKIX path building failed|offline mode",
    re.IGNORECASE,
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _tail_lines(text: str, lines: int = 25) -> str:
    return "\n".join(_ANSI.sub("", text).rstrip().splitlines()[-lines:])


def build_jar(project: Path, artifact: str, what: str, timeout: float = 600.0) -> Path:
    """The jar `mvn package` makes of the Maven `project` (target/<artifact>.jar), built
    with this machine's JDK and Maven once per version of its sources, and cached next to
    the resolved classpaths (`classpath_cache_dir()`) under a lock, so parallel sessions
    build it once. `what` names it in errors ("the Flume pull sink")."""
    digest = hashlib.sha256()
    for path in sorted(p for p in project.rglob("*") if p.is_file() and "target" not in p.parts):
        digest.update(str(path.relative_to(project)).encode() + b"\0" + path.read_bytes())
    root = classpath_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    name = artifact.rsplit("-", 1)[0]
    build_dir = root / f"{name}-{digest.hexdigest()[:16]}"
    jar = build_dir / f"{artifact}.jar"
    with _locked(root / f"{name}.lock"):
        if jar.is_file():
            return jar
        mvn = maven_executable()
        if mvn is None:
            raise MavenError(f"cannot build {what}: install Apache Maven 3.6 or newer")
        shutil.rmtree(build_dir, ignore_errors=True)
        proc = subprocess.run(
            [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(project / "pom.xml"),
             f"-Dingest.buildDir={build_dir}", "package"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", timeout=timeout,
        )
        if proc.returncode != 0 or not jar.is_file():
            raise MavenError(f"Maven failed (exit code {proc.returncode}) to build {what} in "
                             f"{project}. Last lines of mvn:\n{_tail_lines(proc.stdout)}")
        return jar


def resolve_classpath(
    pom: str | os.PathLike[str],
    *,
    properties: Mapping[str, str] | None = None,
    maven_args: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 900.0,
) -> str:
    """The runtime classpath of `pom`'s dependencies, resolved once and then cached.

    `properties` become -D options of mvn (and part of the cache key), e.g. to pick
    another version than the pom's default. `maven_args` are passed through (e.g.
    ``-o`` or ``-s settings.xml``). The first call downloads the jars, which can take a
    minute; later calls read the cache and check that each jar still exists.
    """
    pom = Path(pom).resolve()
    if not pom.is_file():
        raise MavenError(f"pom {pom} does not exist; is the package installed with its data files?")
    cache_root = Path(cache_dir) if cache_dir is not None else classpath_cache_dir()
    cache_root.mkdir(parents=True, exist_ok=True)
    stem = f"{pom.parent.name}-{classpath_key(pom, properties)}"
    cache = cache_root / f"{stem}.cp"
    with _locked(cache_root / f"{stem}.lock"):
        cached = _read_cached_classpath(cache)
        if cached is not None:
            return cached
        mvn = maven_executable()
        if mvn is None:
            raise ServiceToolMissingError(f"cannot resolve the jars of {pom}: install {INSTALL_MAVEN}")
        tmp = cache.with_suffix(".tmp")
        cmd = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
            f"{DEPENDENCY_PLUGIN}:build-classpath",
            "-Dmdep.includeScope=runtime",
            f"-Dmdep.outputFile={tmp}",
            *(f"-D{name}={value}" for name, value in sorted((properties or {}).items())),
            *maven_args,
        ]
        log.info("resolving %s with Maven (the first run downloads its jars)", pom)
        started = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
            raise MavenError(
                f"Maven did not finish resolving {pom} within {timeout:.0f} s; a slow or "
                f"stalled download from its repository is the usual cause. Last lines of mvn:\n"
                f"{_tail_lines(output)}"
            ) from None
        if proc.returncode != 0 or not tmp.exists():
            tail = _tail_lines(proc.stdout)
            if _UNREACHABLE.search(proc.stdout):
                raise MavenRepositoryUnreachableError(
                    f"Maven could not download the jars of {pom} from its repository "
                    f"(Maven Central, or the mirror or proxy configured in ~/.m2/settings.xml). "
                    f"Check the network connection and proxy settings, then run again; once "
                    f"downloaded, the jars stay in ~/.m2/repository. Last lines of mvn:\n{tail}"
                )
            raise MavenError(
                f"Maven failed (exit code {proc.returncode}) to resolve the runtime classpath "
                f"of {pom}. Last lines of mvn:\n{tail}"
            )
        tmp.replace(cache)
        log.info("resolved %s in %.1f s", pom, time.monotonic() - started)
        return cache.read_text().strip()


# --------------------------------------------------------------------------- ports


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now. Racy by nature: a caller that
    binds later must be ready to retry with another one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on host:port now. SO_REUSEADDR is set as the JVM
    does, so a port held only by sockets in TIME_WAIT counts as free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------- processes


def services_root() -> Path:
    """Parent of the work directories this module creates: $INGEST_SERVICES_DIR, else
    <tmp>/ingest-services-<uid>. Stale directories are reaped from here."""
    env = os.environ.get("INGEST_SERVICES_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"ingest-services-{os.getuid()}"


def _process_start_time(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot, from /proc), to tell a live
    process from a later one that reuses its pid. None where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    return stat[stat.rindex(")") + 2:].split()[19]


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:  # 0 and -1 would address process groups
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; in containers whose init does not reap orphans it can
    # linger for good, and must not count as a running JVM.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:][:1] != "Z"


def _process_alive(pid: object, start_time: str | None) -> bool:
    if not _pid_alive(pid):
        return False
    if start_time is None:
        return True
    current = _process_start_time(pid)
    return current is None or current == start_time


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _marker(workdir: Path) -> str:
    return f"-D{MARKER_PROPERTY}={workdir}"


def _read_pidfile(workdir: Path) -> dict | None:
    try:
        record = json.loads((workdir / PIDFILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _orphan_pid(workdir: Path, record: Mapping) -> int | None:
    """The pid of the JVM recorded in a pidfile if it is still running and its command
    line carries this directory's marker; None otherwise."""
    pid = record.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return None
    return pid if _marker(workdir) in _cmdline(pid) else None


def _kill_group(pid: int, sig: int) -> None:
    """Signal the process group that `pid` leads; a no-op if it is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def reap_stale_services(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Kill JVMs left behind by killed runs and delete their work directories.

    Only directories under `root` with a pidfile whose owner process is gone are
    touched; a live owner (another test session, another xdist worker) is left alone.
    Returns the directories removed.
    """
    root = Path(root) if root is not None else services_root()
    reaped = []
    if not root.is_dir():
        return reaped
    for pidfile in root.glob(f"*/{PIDFILE}"):
        workdir = pidfile.parent
        record = _read_pidfile(workdir)
        if record is None or _process_alive(record.get("owner_pid"), record.get("owner_start")):
            continue
        pid = _orphan_pid(workdir, record)
        if pid is not None:
            log.warning("killing %s (pid %d) left behind by a killed run in %s", record.get("name"), pid, workdir)
            _kill_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        shutil.rmtree(workdir, ignore_errors=True)
        reaped.append(workdir)
    return reaped


_open_services: set[JavaService] = set()
_registry_lock = threading.Lock()
_exit_hooks_installed = False


def close_all_services() -> None:
    """Close every service this process has open (at exit, on SIGTERM)."""
    with _registry_lock:
        services = list(_open_services)
    for service in services:
        with contextlib.suppress(Exception):
            service.close()


def _on_termination(signum: int, frame: object) -> None:
    # Stop our JVMs, then die of the same signal as the default action would have.
    close_all_services()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_exit_hooks() -> None:
    """atexit always; SIGTERM/SIGHUP handlers only where the default action (dying
    without running atexit) is in force, so an application's own handlers win."""
    global _exit_hooks_installed
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    atexit.register(close_all_services)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:
                signal.signal(sig, _on_termination)


def _die_with(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux
    prctl PR_SET_PDEATHSIG), and exit at once if the parent died before that was set."""
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)
    return preexec


_PR_SET_PDEATHSIG = 1


class JavaService:
    """A work directory and the JVM processes run in it, as a context manager.

    ``open()`` creates the directory (a fresh one under `services_root()`, or claims the
    `workdir` given), writes the pidfile and reaps stale directories of killed runs.
    ``run()`` runs a one-shot tool; ``start()`` starts the long-running JVM and waits
    until `ready()` says so; ``stop()`` stops it; ``close()`` stops it and deletes the
    directory if this service created it (a `workdir` passed in is kept: only the
    pidfile goes).
    """

    def __init__(
        self,
        name: str,
        *,
        workdir: str | os.PathLike[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        keep_workdir: bool | None = None,
        java: str | None = None,
    ):
        self.name = name
        self._given_workdir = Path(workdir).resolve() if workdir is not None else None
        self._root = Path(root) if root is not None else None
        if keep_workdir is None:
            keep_workdir = bool(os.environ.get("INGEST_KEEP_SERVICE_DIRS"))
        self.keep_workdir = keep_workdir
        self._java = java
        self._workdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_handle = None

    # -- directory

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ServiceError(f"{self.name}: open() the service before using its work directory")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def open(self) -> JavaService:
        if self._workdir is not None:
            return self
        if self._given_workdir is None:
            root = self._root or services_root()
            root.mkdir(parents=True, exist_ok=True)
            reap_stale_services(root)
            workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=root)).resolve()
        else:
            workdir = self._given_workdir
            self._check_not_stale(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        self._write_pidfile(None)
        with _registry_lock:
            _open_services.add(self)
        _install_exit_hooks()
        return self

    def _check_not_stale(self, workdir: Path) -> None:
        record = _read_pidfile(workdir)
        if record is None:
            return
        owner = record.get("owner_pid")
        if _process_alive(owner, record.get("owner_start")):
            raise StaleServiceDirError(
                f"{workdir} is in use by {record.get('name', 'a service')} of process {owner}; "
                f"stop that process or choose another directory",
                path=str(workdir),
            )
        pid = _orphan_pid(workdir, record)
        if pid is not None:
            raise StaleServiceDirError(
                f"{workdir} belongs to a run that was killed, and its {record.get('name', 'JVM')} "
                f"(pid {pid}) is still running. Stop it with `kill -- -{pid}`, then delete the "
                f"directory or choose another one",
                path=str(workdir),
            )
        raise StaleServiceDirError(
            f"{workdir} holds the state of a {record.get('name', 'service')} run that did not stop "
            f"cleanly (its owner, process {owner}, was killed). Delete the directory or choose "
            f"another one; it is not reused, because its data may not match a fresh start",
            path=str(workdir),
        )

    def _write_pidfile(self, pid: int | None) -> None:
        record = {
            "name": self.name,
            "pid": pid,
            "owner_pid": os.getpid(),
            "owner_start": _process_start_time(os.getpid()),
        }
        tmp = self.workdir / f".{PIDFILE}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.workdir / PIDFILE)

    # -- processes

    def _command(self, classpath: str, main_class: str, args: Sequence[str], jvm_opts: Sequence[str]) -> list[str]:
        java = self._java or java_executable()
        if java is None:
            raise ServiceToolMissingError(f"cannot start {self.name}: install {INSTALL_JAVA}")
        return [java, _marker(self.workdir), *jvm_opts, "-cp", classpath, main_class, *map(str, args)]

    def run(
        self,
        classpath: str,
        main_class: str,
        args: Sequence[str] = (),
        *,
        jvm_opts: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> str:
        """Run a one-shot JVM tool in the work directory; return its output, or raise
        ServiceStartError with that output when it fails."""
        cmd = self._command(classpath, main_class, args, jvm_opts)
        try:
            proc = subprocess.run(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output or ""
            raise ServiceStartError(
                f"{self.name}: {main_class} did not finish within {timeout:.0f} s. Its output:\n"
                f"{output[-LOG_TAIL_CHARS:]}",
                log_tail=output[-LOG_TAIL_CHARS:],
            ) from None
        if proc.returncode != 0:
            tail = proc.stdout[-LOG_TAIL_CHARS:]
            raise ServiceStartError(
                f"{self.name}: {main_class} failed with exit code {proc.returncode} in "
                f"{self.workdir}. Its output:\n{tail}",
                log_tail=tail,
                exit_code=proc.returncode,
            )
        return proc.stdout

    def start(
        self,
        classpath: str,
        main_class: str,
        args: Sequence[str] = (),
        *,
        jvm_opts: Sequence[str] = (),
        ready: Callable[[], bool] | None = None,
        timeout: float = 90.0,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = False,
    ) -> JavaService:
        """Start the service's JVM and return once `ready()` is true.

        die_with_parent: the JVM gets SIGKILL when the thread that started it ends
        (Linux's parent-death signal), so a parent killed with SIGKILL leaves nothing
        running. Only for a service started by a process's main thread, like
        `ingest services kafka`: the signal follows the starting thread, not the process.

        Raises ServiceStartError with the tail of the log when the JVM exits first or
        is not ready within `timeout` seconds; the JVM is stopped in both cases, and on
        any interruption (KeyboardInterrupt included) while waiting.
        """
        if self._proc is not None and self._proc.poll() is None:
            raise ServiceError(f"{self.name} is already running (pid {self._proc.pid})")
        self.open()
        cmd = self._command(classpath, main_class, args, jvm_opts)
        self._log_handle = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log_handle,
            stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(env) if env is not None else None,
            preexec_fn=_die_with(os.getpid()) if die_with_parent else None,
        )
        self._write_pidfile(self._proc.pid)
        deadline = time.monotonic() + timeout
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    tail = self.log_tail()
                    raise ServiceStartError(
                        f"{self.name} exited with code {code} while starting; the end of its log "
                        f"{self.log_path}:\n{tail}",
                        log_tail=tail,
                        exit_code=code,
                    )
                if ready is None or ready():
                    return self
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    raise ServiceStartError(
                        f"{self.name} was not ready within {timeout:.0f} s; the end of its log "
                        f"{self.log_path}:\n{tail}",
                        log_tail=tail,
                    )
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, ServiceError):
            return ""

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]

    def stop(self, grace: float = 15.0) -> int | None:
        """Stop the JVM: SIGTERM to its process group, SIGKILL after `grace` seconds
        (or at once on a second interruption). Returns its exit code."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                _kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, proc.pid, grace)
                    _kill_group(proc.pid, signal.SIGKILL)
                    proc.wait()
        except BaseException:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
            if self._workdir is not None and self._workdir.exists() and proc.poll() is not None:
                self._write_pidfile(None)
        return proc.returncode

    def close(self) -> None:
        """Stop the JVM, then delete the work directory if this service created it
        (else only its pidfile). Safe to call more than once."""
        try:
            self.stop()
        finally:
            with _registry_lock:
                _open_services.discard(self)
            workdir, self._workdir = self._workdir, None
            if workdir is not None:
                if self._given_workdir is None and not self.keep_workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        (workdir / PIDFILE).unlink()

    def __enter__(self) -> JavaService:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JavaService({self.name!r}, workdir={self._workdir}, pid={self.pid})"
