"""A throwaway PostgreSQL server for tests, from the server binaries on this machine.

`PostgresServer` runs `initdb` into a fresh work directory under `services_root()`,
then `postgres` on a free port of 127.0.0.1 (TCP on loopback only; its unix socket
lives in the work directory), and is ready once a real login succeeds. The database
superuser is ``postgres`` with trust authentication, so `dsn` needs no password.
Durability is switched off (fsync, synchronous_commit, full_page_writes): the data
lives as long as the server and is deleted when it stops.

PostgreSQL refuses to run as root; as root, `initdb` and `postgres` run as an
unprivileged user (``$INGEST_POSTGRES_OS_USER``, else ``postgres``, the user the Debian
package creates, else ``nobody``) that owns the work directory.

Guarantee: the server does not outlive its owner. The postmaster is our direct child
in its own process group; `stop()` asks for a fast shutdown and kills the postmaster
and its children after a grace period; open servers are stopped at interpreter exit
and on SIGTERM/SIGHUP (the hooks `ingest.testing.jvm` installs for its services), and
a server left behind by an owner killed with SIGKILL is stopped and its directory
deleted the next time a server starts.

Only the standard library is imported here.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from ingest.errors import PortInUseError, ServiceError, ServiceStartError, ServiceToolMissingError
from ingest.testing import jvm
from ingest.testing.jvm import LOG_TAIL_CHARS, free_port, services_root

log = logging.getLogger(__name__)

INSTALL_SERVER = (
    "the PostgreSQL server binaries initdb and postgres (Debian/Ubuntu: apt-get install postgresql; "
    "they are looked for in /usr/lib/postgresql/<version>/bin, $POSTGRES_BINDIR and PATH)"
)
SUPERUSER = "postgres"
DATABASE = "postgres"
OWNER_FILE = "owner.json"  # not jvm's PIDFILE: jvm's reaper must leave these directories alone
BIND_FAILED = re.compile(r"could not bind|Address already in use|could not create any TCP/IP sockets")
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "50",
}


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`: $POSTGRES_BINDIR, else the
    newest /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), else PATH."""
    def complete(d: Path) -> bool:
        return all(os.access(d / tool, os.X_OK) for tool in ("initdb", "postgres"))

    env = os.environ.get("POSTGRES_BINDIR")
    if env:
        return Path(env) if complete(Path(env)) else None
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")])
    for candidate in reversed(versions):
        if complete(Path(candidate)):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb and complete(Path(initdb).parent):
        return Path(initdb).parent
    return None


def missing_requirements() -> list[str]:
    """What must be installed before a server can start here; empty when nothing."""
    return [] if find_bindir() is not None else [INSTALL_SERVER]


def _server_account() -> pwd.struct_passwd | None:
    """The user to run the server as: None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    names = [os.environ.get("INGEST_POSTGRES_OS_USER"), "postgres", "nobody"]
    for name in filter(None, names):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServiceError(
        "running as root, and PostgreSQL refuses to: create an unprivileged user for it "
        "(useradd --system postgres) or name one in INGEST_POSTGRES_OS_USER"
    )


# --------------------------------------------------------------------------- readiness


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def accepts_login(port: int, user: str = SUPERUSER, database: str = DATABASE,
                  host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """Whether the server logs `user` into `database` without a password: one
    protocol-3 session up to ReadyForQuery, then Terminate. False while the server
    is starting up ("the database system is starting up") or not listening."""
    body = struct.pack("!i", 3 << 16) + b"".join(
        k + b"\0" + v.encode() + b"\0" for k, v in ((b"user", user), (b"database", database))) + b"\0"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack("!i", len(body) + 4) + body)
            while True:
                kind, length = struct.unpack("!ci", _recv_exact(sock, 5))
                payload = _recv_exact(sock, length - 4)
                if kind == b"Z":
                    sock.sendall(b"X" + struct.pack("!i", 4))
                    return True
                if kind == b"E" or (kind == b"R" and struct.unpack("!i", payload[:4])[0] != 0):
                    return False  # an error, or a password is asked for
    except (OSError, struct.error):
        return False


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (PostgreSQL's backends run in sessions of their own,
    so signalling the postmaster's process group does not reach them)."""
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            if int(text[text.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(Path(stat).parent.name))
    return out


def _kill_tree(pid: int) -> None:
    """SIGKILL the postmaster and its children. It is stopped first, so it cannot fork
    a child between our listing them and killing it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    jvm._kill_group(pid, signal.SIGKILL)


def reap_stale_servers(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Stop servers left behind by owners that were killed, and delete their
    directories. A directory whose owner still runs is left alone. Returns the
    directories removed."""
    root = Path(root) if root is not None else services_root()
    reaped = []
    for owner_file in root.glob(f"postgres-*/{OWNER_FILE}"):
        workdir = owner_file.parent
        try:
            record = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            continue
        if jvm._process_alive(record.get("owner_pid"), record.get("owner_start")):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((workdir / "data" / "postmaster.pid").read_text().split()[0])
            # Only a postmaster of this very directory: pids get recycled.
            if jvm._pid_alive(pid) and str(workdir / "data") in jvm._cmdline(pid):
                log.warning("stopping PostgreSQL (pid %d) left behind by a killed run in %s", pid, workdir)
                os.kill(pid, signal.SIGQUIT)  # immediate shutdown: children and shared memory go too
                deadline = time.monotonic() + 10
                while jvm._pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if jvm._pid_alive(pid):
                    _kill_tree(pid)
        shutil.rmtree(workdir, ignore_errors=True)
        reaped.append(workdir)
    return reaped


class PostgresServer:
    """A PostgreSQL server of its own for a test session; a context manager.

    `port` defaults to a free port of 127.0.0.1; when the server then finds it taken
    (another process won the race), it starts again on a new one, up to `attempts`
    times. `settings` are extra `-c name=value` server settings.
    """

    def __init__(self, *, port: int | None = None, bindir: str | os.PathLike[str] | None = None,
                 settings: dict[str, str] | None = None, start_timeout: float = 60.0,
                 attempts: int = 3, keep_workdir: bool | None = None):
        self._port = port
        self._bindir = Path(bindir) if bindir is not None else None
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.start_timeout = start_timeout
        self.attempts = max(1, attempts)
        if keep_workdir is None:
            keep_workdir = bool(os.environ.get("INGEST_KEEP_SERVICE_DIRS"))
        self.keep_workdir = keep_workdir
        self.port: int | None = None
        self.workdir: Path | None = None
        self.start_seconds: float | None = None
        """Seconds `start()` took, initdb included."""
        self._proc: subprocess.Popen | None = None

    # -- what callers use

    @property
    def dsn(self) -> str:
        if not self.running:
            raise ServiceError("the PostgreSQL server is not running; start() it first")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        return self.workdir / "data" if self.workdir is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "postgres.log" if self.workdir is not None else None

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] if self.log_path else ""
        except OSError:
            return ""

    # -- lifecycle

    def start(self) -> PostgresServer:
        if self.running:
            return self
        bindir = self._bindir or find_bindir()
        if bindir is None:
            raise ServiceToolMissingError(f"cannot start PostgreSQL: install {INSTALL_SERVER}")
        account = _server_account()
        started = time.monotonic()
        for attempt in range(1, self.attempts + 1):
            try:
                self._start_once(bindir, account)
                self.start_seconds = time.monotonic() - started
                log.info("PostgreSQL ready at 127.0.0.1:%d in %.2f s (%s)", self.port, self.start_seconds, self.workdir)
                return self
            except ServiceStartError as exc:
                if not BIND_FAILED.search(exc.log_tail):
                    raise
                if self._port is None and attempt < self.attempts:
                    continue
                raise PortInUseError(
                    f"PostgreSQL could not listen on 127.0.0.1:{self.port}: the address is already in use"
                    + (f" (tried {attempt} free ports)" if self._port is None else "")
                    + f". The end of its log:\n{exc.log_tail}",
                    port=self.port,
                ) from exc
        raise AssertionError("unreachable")

    def _start_once(self, bindir: Path, account: pwd.struct_passwd | None) -> None:
        root = services_root()
        root.mkdir(parents=True, exist_ok=True)
        reap_stale_servers(root)
        self.workdir = Path(tempfile.mkdtemp(prefix="postgres-", dir=root)).resolve()
        (self.workdir / OWNER_FILE).write_text(json.dumps(
            {"owner_pid": os.getpid(), "owner_start": jvm._process_start_time(os.getpid())}))
        with jvm._registry_lock:
            jvm._open_services.add(self)
        jvm._install_exit_hooks()
        run_as: dict = {}
        if account is not None:
            # The server's user must reach its directory: traverse the root, own the rest.
            root.chmod(root.stat().st_mode | 0o111)
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        self.port = self._port or free_port()
        try:
            initdb = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace", timeout=self.start_timeout,
                start_new_session=True, **run_as,
            )
            if initdb.returncode != 0:
                tail = initdb.stdout[-LOG_TAIL_CHARS:]
                raise ServiceStartError(
                    f"initdb ({bindir / 'initdb'}) failed with exit code {initdb.returncode} in "
                    f"{self.workdir}" + (f" running as user {account.pw_name}" if account else "")
                    + f". Its output:\n{tail}", log_tail=tail, exit_code=initdb.returncode)
            options = [arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]
            with open(self.log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                     "-k", str(self.workdir), *options],
                    cwd=self.workdir, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                    stderr=subprocess.STDOUT, start_new_session=True, **run_as,
                )
            self._wait_ready()
        except subprocess.TimeoutExpired:
            self.close()
            raise ServiceStartError(f"initdb did not finish within {self.start_timeout:.0f} s in {self.workdir}")
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not accepts_login(self.port):
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                raise ServiceStartError(
                    f"PostgreSQL exited with code {code} while starting; the end of its log "
                    f"{self.log_path}:\n{tail}", log_tail=tail, exit_code=code)
            if time.monotonic() > deadline:
                tail = self.log_tail()
                raise ServiceStartError(
                    f"PostgreSQL did not accept a login on 127.0.0.1:{self.port} within "
                    f"{self.start_timeout:.0f} s; the end of its log {self.log_path}:\n{tail}", log_tail=tail)
            time.sleep(0.05)

    def stop(self, grace: float = 10.0) -> int | None:
        """Stop the server: a fast shutdown (SIGINT: sessions are ended, not waited
        for, unlike SIGTERM's smart shutdown), SIGKILL of the postmaster and its
        children after `grace` seconds or on an interruption. Returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGINT)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    log.warning("PostgreSQL (pid %d) did not shut down within %.0f s; killing it", proc.pid, grace)
                    _kill_tree(proc.pid)
                    proc.wait()
        except BaseException:
            _kill_tree(proc.pid)
            proc.wait()
            raise
        return proc.returncode

    def close(self) -> None:
        """Stop the server and delete its directory. Safe to call more than once."""
        try:
            self.stop()
        finally:
            with jvm._registry_lock:
                jvm._open_services.discard(self)
            workdir, self.workdir = self.workdir, None
            if workdir is not None:
                if self.keep_workdir:
                    with contextlib.suppress(FileNotFoundError):
                        (workdir / OWNER_FILE).unlink()
                else:
                    shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self.port}" if self.running else "not running"
        return f"PostgresServer({where}, workdir={self.workdir})"
