"""Reaching a Docker engine, and running a private one.

`engine_client()` connects to the engine of ``DOCKER_HOST`` (or the default socket) and
says plainly why it cannot; `has_bridge()` tells an engine with a bridge network (Docker
Desktop, CI runners) from one started without it, where containers use the host's
network.

`PrivateEngine` runs Debian's `dockerd` (package docker.io) as root on a socket, data
root and exec root of its own under one directory, without a bridge and without touching
the firewall: it never meets the machine's own engine, if any, and needs nothing but the
package. CI uses it through::

    python -m ingest.testing.docker_engine start DIR   # prints DOCKER_HOST=unix://DIR/docker.sock
    python -m ingest.testing.docker_engine stop DIR
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ingest.errors import ServiceError, ServiceStartError, ServiceToolMissingError
from ingest.install_hint import install_hint

INSTALL_ENGINE = "Debian/Ubuntu: apt-get install docker.io"

# No bridge, no NAT and no iptables rules: the engine changes nothing on the machine's
# network, so it can run beside anything else. Containers then use --network host.
DOCKERD_FLAGS = (
    "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none",
    "--storage-driver=overlay2",
)


def engine_client(timeout: float = 10.0, otherwise: str = "use another Kafka backend (INGEST_KAFKA_BACKEND=jvm)"):
    """A docker-py client of the engine at DOCKER_HOST (default socket when unset) that
    answered a ping; ServiceError saying where it looked and what to do otherwise
    (`otherwise`: the alternative to a container the message offers)."""
    try:
        import docker
    except ImportError:
        raise ServiceToolMissingError(f"talking to a Docker engine needs docker-py ({install_hint('test')})") from None
    where = os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is not set)"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # DockerException, requests' connection errors
        raise ServiceError(
            f"no Docker engine answers at {where}: {_first_line(exc)}. Start one (for a private engine "
            f"without a bridge: `sudo python -m ingest.testing.docker_engine start DIR` and export the "
            f"DOCKER_HOST it prints), or {otherwise}"
        ) from None
    return client


def engine_answers(timeout: float = 3.0) -> bool:
    try:
        engine_client(timeout).close()
    except ServiceError:
        return False
    return True


def has_bridge(client) -> bool:
    """Whether the engine has Docker's default bridge network (absent with --bridge=none)."""
    return any(n.attrs.get("Driver") == "bridge" for n in client.networks.list(names=["bridge"]))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


class PrivateEngine:
    """A dockerd of our own under `root`: socket root/docker.sock, data root/data,
    exec root/exec, log root/dockerd.log. It outlives the process that started it
    (CI starts it in one command and stops it in another); `stop()` finds it by its
    pid file."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    def command(self, dockerd: str = "dockerd") -> list[str]:
        return [
            dockerd, "-H", self.host,
            "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.pidfile), *DOCKERD_FLAGS,
        ]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 60.0) -> str:
        """Start the engine and return its DOCKER_HOST once it answers a ping."""
        dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin")
        if dockerd is None:
            raise ServiceToolMissingError(f"no dockerd on this machine: install the Docker engine ({INSTALL_ENGINE})")
        if os.geteuid() != 0:
            raise ServiceError("a private Docker engine must be started as root (dockerd needs it); "
                               "run this command with sudo, or start Docker yourself and set DOCKER_HOST")
        longest = self.root / "exec" / "containerd" / "containerd.sock.ttrpc"
        if len(str(longest)) > 100:
            # containerd's sockets live under the exec root; a Unix socket path has at most 107 bytes.
            raise ServiceError(f"{self.root} is too long a path for the engine's Unix sockets (at most "
                               f"{100 - len(str(longest)) + len(str(self.root))} characters): choose a shorter "
                               f"directory, e.g. one made by `mktemp -d /tmp/docker.XXXXXX`")
        if self.socket.exists():
            raise ServiceError(f"{self.socket} exists: an engine already runs there, or one was killed; "
                               f"stop it with `python -m ingest.testing.docker_engine stop {self.root}` first")
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            # Its own session: a Ctrl-C in the starting shell must not reach the engine.
            proc = subprocess.Popen(self.command(dockerd), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self.unmount_leftovers()
                raise ServiceStartError(
                    f"dockerd exited with code {code} while starting; the end of its log "
                    f"({self.log_path}):\n{self.log_tail()}", log_tail=self.log_tail(), exit_code=code)
            if self.socket.exists() and self._answers():
                return self.host
            if time.monotonic() > deadline:
                # Its own process group holds containerd too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                self.unmount_leftovers()
                raise ServiceStartError(
                    f"dockerd did not answer on {self.socket} within {timeout:.0f} s; the end of its log:\n"
                    f"{self.log_tail()}", log_tail=self.log_tail())
            time.sleep(0.1)

    def _answers(self) -> bool:
        import docker

        try:
            client = docker.DockerClient(base_url=self.host, timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # not listening yet
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _signal(pid: int, sig: int) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the engine (SIGTERM, which stops its containers; SIGKILL of its process
        group after `timeout`), then unmount what it left mounted under its directory,
        so that the directory can be deleted. Returns whether one was running."""
        pid = self.pid()
        if pid is None or not self._signal(pid, signal.SIGTERM):
            self.unmount_leftovers()
            return False
        deadline = time.monotonic() + timeout
        while self._alive(pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                break
            time.sleep(0.1)
        self.unmount_leftovers()
        return True

    def unmount_leftovers(self) -> list[str]:
        """Unmount the mounts under the engine's directory (dockerd bind-mounts its data
        root, and leaves it when it dies); deepest first. Returns the mount points."""
        try:
            lines = Path("/proc/self/mountinfo").read_text().splitlines()
        except OSError:
            return []
        prefix = f"{self.root}/"
        # Field 5 is the mount point, with spaces and such escaped as octal.
        points = [p for p in (line.split()[4].encode().decode("unicode_escape") for line in lines)
                  if (p + "/").startswith(prefix)]
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        return points

    @staticmethod
    def _alive(pid: int) -> bool:
        from ingest.testing.jvm import _pid_alive

        # When this process started the engine, reap it: a zombie must not linger.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return _pid_alive(pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest.testing.docker_engine",
                                     description="Start or stop a private Docker engine under DIR (as root).")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("root", help="directory of the engine's socket, data, exec root and log")
    args = parser.parse_args(argv)
    engine = PrivateEngine(args.root)
    try:
        if args.action == "start":
            started = time.monotonic()
            host = engine.start()
            print(f"DOCKER_HOST={host}")
            print(f"Docker engine (pid {engine.pid()}) answered in {time.monotonic() - started:.1f} s; "
                  f"log {engine.log_path}", file=sys.stderr)
        else:
            print("Docker engine stopped." if engine.stop() else "No Docker engine was running there.",
                  file=sys.stderr)
    except ServiceError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
