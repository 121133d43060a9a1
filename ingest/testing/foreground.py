"""A test service served in the foreground: what `ingest services kafka|flume|hdfs|s3` do.

One shape for every service: say what is starting, start it, print how to use it, serve
until SIGINT (Ctrl-C) or SIGTERM, then stop it (which deletes its work directory). The
two signals become an exception for the whole run, so an interruption while the service
starts still stops whatever was started; while cleaning up they are ignored, so a second
Ctrl-C cannot leave the service half-stopped (each service's `stop()` escalates to
SIGKILL on its own).

Exit codes: 0 after a requested stop, 1 when the service could not start or died,
130 when interrupted while starting.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Protocol

from ingest.errors import ConfigError, ServiceError


class ForegroundService(Protocol):
    """What `serve_in_foreground` needs of a service (KafkaBroker, FlumeAgent, ...)."""

    @property
    def running(self) -> bool: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def log_tail(self) -> str: ...


class _Interrupted(BaseException):
    """SIGINT or SIGTERM in `serve_in_foreground`; a BaseException so that no `except
    Exception` on the way swallows it."""


def serve_in_foreground(service: ForegroundService, *, name: str, starting: str,
                        usage: Callable[[], str]) -> int:
    """Start `service` and serve it until SIGINT or SIGTERM; return the exit code.

    `name` names the service in the messages ("Kafka", "HDFS"); `starting` is printed
    before it starts (a first start may download jars); `usage()` is called once it is
    ready and returns how to use it, ending with how to stop it (it may prepare the
    service first, as the S3 server creates its bucket).
    """
    def interrupt(signum, frame):
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            print(starting, flush=True)
            service.start()
        except _Interrupted:
            print("Interrupted while starting; nothing is left running.", file=sys.stderr)
            return 130
        except (ServiceError, ConfigError) as exc:
            print(f"{name} could not start: {exc}", file=sys.stderr)
            return 1
        print(usage(), flush=True)
        try:
            while service.running:
                time.sleep(0.5)
        except _Interrupted:
            print(f"Stopping {name}...", flush=True)
            service.stop()
            print(f"{name} stopped.", flush=True)
            return 0
        print(f"{name} exited unexpectedly; the end of its log:\n{service.log_tail()}", file=sys.stderr)
        return 1
    finally:
        # Ignore further signals while cleaning up, so a second Ctrl-C cannot leave the
        # service half-stopped; stop() escalates to SIGKILL on its own.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            service.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
