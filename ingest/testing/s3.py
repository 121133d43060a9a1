"""A real S3-compatible server on loopback for tests and development: moto's server mode.

`S3Server` runs ``python -m moto.server`` (the `moto[server]` test extra) as a child
process on a free 127.0.0.1 port, in its own process group, with its output in a log
file of its own work directory; it is ready when ``GET /moto-api/`` answers. moto
implements the S3 REST protocol, conditional writes included (`If-None-Match: *` gives
412 to all but one of racing writers), so the S3 backend's commit protocol is tested
against the same HTTP exchanges as AWS, not a mock of boto3.

`stop()` stops it (SIGTERM, then SIGKILL) and deletes its work directory; `pause()` and
`resume()` send SIGSTOP/SIGCONT (a hung server, for fault tests).

Run ``python -m ingest.testing.s3`` (or ``ingest services s3``) for one in the
foreground. Credentials: any key pair (moto does not check them by default).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from ingest.errors import ServiceError, ServiceStartError
from ingest.install_hint import install_hint
from ingest.testing.foreground import serve_in_foreground
from ingest.testing.jvm import free_port, services_root

START_TIMEOUT = 30.0
# The moto release the S3 image installs (`ingest services image s3`, tag ingest/s3:<this>):
# the one the local launcher's tests run with (pyproject's test extra, moto[server]>=5.1).
MOTO_VERSION = "5.2.5"
# Dummy credentials for the emulator: botocore refuses to sign without some.
TEST_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing-secret",
                    "region": "us-east-1"}


def missing_requirements() -> list[str]:
    missing = []
    for module, what in (("moto.server", f"moto's server ({install_hint('test')})"),
                         ("boto3", f"boto3 ({install_hint('s3')})")):
        try:
            __import__(module)
        except ImportError:
            missing.append(what)
    return missing


def server_answers(endpoint: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class S3Endpoint:
    """What a test does with a moto server at `self.endpoint`, wherever it runs (a child
    process here, a container in `ingest.testing.storage_containers`)."""

    endpoint: str

    def create_bucket(self, name: str | None = None) -> str:
        """A new empty bucket; returns its name."""
        name = name or f"test-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=TEST_CREDENTIALS["aws_access_key_id"],
                            aws_secret_access_key=TEST_CREDENTIALS["aws_secret_access_key"],
                            region_name=TEST_CREDENTIALS["region"])

    def storage_options(self) -> dict[str, str]:
        """The options that point an `s3://` storage at this server."""
        return {"endpoint_url": self.endpoint, **TEST_CREDENTIALS}


class S3Server(S3Endpoint):
    """moto's S3 server in a child process (a context manager)."""

    def __init__(self, *, start_timeout: float = START_TIMEOUT, env: dict[str, str] | None = None) -> None:
        """`env`: extra environment of the server, e.g. INITIAL_NO_AUTH_ACTION_COUNT=0
        to make moto check credentials (unknown keys are then refused)."""
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self.port: int | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:  # type: ignore[override]
        if self.port is None:
            raise ServiceError("the S3 server is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "s3.log"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, AssertionError):
            return ""

    def start(self) -> "S3Server":
        if self.running:
            return self
        root = services_root()
        root.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="s3-", dir=root))
        for attempt in range(3):  # a free port can be taken between choosing and binding
            self.port = free_port()
            with open(self.log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    start_new_session=True, env={**os.environ, **self.env})
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                if server_answers(self.endpoint):
                    return self
                time.sleep(0.1)
            code = self._proc.poll()
            self._kill()
            if code is None or "Address already in use" not in self.log_tail():
                tail = self.log_tail()
                self.stop()
                raise ServiceStartError(
                    f"moto's S3 server {'exited with code ' + str(code) if code is not None else 'was not ready'}"
                    f" within {self.start_timeout:.0f} s; the end of its log:\n{tail}", log_tail=tail)
        self.stop()
        raise ServiceStartError("moto's S3 server found no free port in 3 attempts")

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        if not self.running:
            raise ServiceError("the S3 server is not running")
        os.killpg(self._proc.pid, sig)  # type: ignore[union-attr]

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGCONT)  # a paused server would not act on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    def stop(self) -> None:
        """Stop the server and delete its work directory."""
        self._kill()
        self.port = None
        workdir, self.workdir = self.workdir, None
        if workdir is not None and not os.environ.get("INGEST_KEEP_SERVICE_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_forever() -> int:
    """`ingest services s3`: a server in the foreground until Ctrl-C or SIGTERM."""
    missing = missing_requirements()
    if missing:
        print("cannot start an S3 server: install " + " and ".join(missing), file=sys.stderr)
        return 2
    server = S3Server()

    def usage() -> str:
        bucket = server.create_bucket("ingest")
        return (f"S3 (moto) ready\n  endpoint: {server.endpoint}\n  bucket:   {bucket}\n"
                f"  use: ssc.checkpoint('s3://{bucket}/app', storage_options={{'endpoint_url': "
                f"'{server.endpoint}'}}) with any AWS key pair (e.g. AWS_ACCESS_KEY_ID=testing "
                "AWS_SECRET_ACCESS_KEY=testing)\nCtrl-C stops it (its data is lost).")

    return serve_in_foreground(server, name="S3", starting="Starting S3 (moto's server)...", usage=usage)


if __name__ == "__main__":
    sys.exit(run_forever())
