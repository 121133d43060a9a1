"""The throwaway PostgreSQL server of `ingest.testing.postgres`: a real server on
loopback, ready once it accepts a login; nothing left behind by a stop, a failed
start, or an owner that was terminated or killed; errors that say what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from ingest.errors import ServiceStartError, ServiceToolMissingError
from ingest.testing import postgres
from ingest.testing.jvm import services_root
from ingest.testing.plugin import skip_or_fail
from ingest.testing.postgres import PostgresServer, accepts_login, reap_stale_servers

pytestmark = pytest.mark.postgres

OWNER = textwrap.dedent(
    """
    import time
    from ingest.testing.postgres import PostgresServer
    server = PostgresServer().start()
    print(server.pid, server.port, server.workdir, flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def local_binaries() -> None:
    """These tests start servers of their own, whatever server the session uses."""
    missing = postgres.missing_requirements()
    if missing:
        skip_or_fail("the PostgreSQL launcher tests need " + " and ".join(missing))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    """The pids still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(not gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


def start_owner() -> tuple[subprocess.Popen, int, int, Path]:
    """A process that starts a server and sleeps: (owner, postmaster pid, port, workdir)."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    line = owner.stdout.readline()
    assert line, f"the owner process exited with {owner.wait()} before its server was ready"
    pid, port, workdir = line.split()
    return owner, int(pid), int(port), Path(workdir)


def test_the_session_server_accepts_sql(postgres_dsn: str) -> None:
    try:
        import psycopg
    except ImportError:
        skip_or_fail("this test needs psycopg: pip install 'psycopg[binary]' (part of ingest[test])")
    with psycopg.connect(postgres_dsn) as conn:
        version, = conn.execute("SELECT version()").fetchone()
        address, = conn.execute("SELECT inet_server_addr()::text").fetchone()
    assert version.startswith("PostgreSQL ")
    if not os.environ.get("POSTGRES_DSN"):
        assert address == "127.0.0.1/32"


def test_a_server_listens_on_loopback_only_and_a_stop_leaves_nothing(local_binaries: None) -> None:
    with PostgresServer() as server:
        pid, port, workdir = server.pid, server.port, server.workdir
        assert accepts_login(port)
        listening = [c.laddr for c in psutil.net_connections(kind="inet")
                     if c.pid == pid and c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
        assert (workdir / f".s.PGSQL.{port}").is_socket()
        children = [p.pid for p in psutil.Process(pid).children()]
        assert children, "a running postmaster has background processes"
        assert server.start_seconds is not None and server.start_seconds < 60

    assert wait_gone([pid, *children], timeout=1.0) == []
    assert not workdir.exists()
    assert not accepts_login(port)


def test_a_server_that_cannot_start_raises_with_its_log_and_leaves_nothing(local_binaries: None) -> None:
    before = set(services_root().glob("postgres-*"))
    server = PostgresServer(settings={"shared_buffers": "not-a-size"})
    with pytest.raises(ServiceStartError, match='invalid value for parameter "shared_buffers"') as failure:
        server.start()

    assert "exited with code" in str(failure.value)
    assert not server.running and server.workdir is None
    assert set(services_root().glob("postgres-*")) - before == set()


def test_missing_binaries_name_the_package_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POSTGRES_BINDIR", str(tmp_path))  # holds no initdb

    assert postgres.find_bindir() is None
    assert len(postgres.missing_requirements()) == 1
    with pytest.raises(ServiceToolMissingError, match=r"apt-get install postgresql"):
        PostgresServer().start()


def test_a_terminated_owner_stops_its_server(local_binaries: None) -> None:
    owner, pid, port, workdir = start_owner()
    children = [p.pid for p in psutil.Process(pid).children()]
    owner.send_signal(signal.SIGTERM)

    assert owner.wait(30) == -signal.SIGTERM
    assert wait_gone([pid, *children]) == []
    assert not workdir.exists()


def test_a_server_left_by_a_killed_owner_is_stopped_by_the_next_reaping(local_binaries: None) -> None:
    owner, pid, port, workdir = start_owner()
    owner.kill()
    owner.wait(30)
    assert not gone(pid) and accepts_login(port), "the orphan runs until someone reaps it"
    children = [p.pid for p in psutil.Process(pid).children()]

    assert workdir in reap_stale_servers()
    assert wait_gone([pid, *children]) == []
    assert not workdir.exists()
