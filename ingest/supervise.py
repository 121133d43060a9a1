"""`ingest run --supervise`: keep a job running across failures.

The supervisor runs the job as a child process (`python -m ingest.cli run ...`
with the same options) and waits for it:

- exit 0: the job finished; the supervisor exits 0.
- exit 2: bad usage or configuration; restarting cannot help, so it exits 2.
- any other failure (an error, a crash, a kill): it logs the cause (the
  child's last error line on stderr, else how it ended) and starts the job
  again after a delay that doubles with each failure in the window
  (`restart_delay_s`, 2x, 4x, ... up to `max_restart_delay_s`). With
  `StreamingContext.get_or_create` the new run resumes from the checkpoint.
- more than `max_restarts` failures within `restart_window_s` seconds: it
  gives up and exits with the last failure's status (never 0).

SIGTERM and SIGINT (Ctrl-C) are forwarded to the child, which stops
gracefully (a second one stops it at once, as without the supervisor); once
asked to stop, the supervisor restarts nothing and exits with the child's
status. The child runs in a session of its own, so a Ctrl-C in a terminal
reaches it once, through the supervisor, and not twice.

The supervisor owns two things: the child (waited for before `run` returns)
and the thread that copies the child's stderr to its own (joined with it).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Sequence

from ingest.errors import ConfigError

log = logging.getLogger("ingest.supervise")

USAGE_ERROR = 2  # the exit code of `ingest` for bad usage or configuration (see ingest.cli)

# Lines of the job's own log that are not errors: "12:00:00 INFO    ingest.batches: ...".
_QUIET_LOG_LINE = re.compile(rb"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING)\s")


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    """Restarts allowed within `restart_window_s`; one more failure gives up."""
    restart_window_s: float = 600.0
    restart_delay_s: float = 1.0
    """Delay before the first restart; doubled for each further failure in the window."""
    max_restart_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be an integer >= 0, got {self.max_restarts!r}")
        for option, value in (("--restart-window", self.restart_window_s), ("--restart-delay", self.restart_delay_s),
                              ("max_restart_delay_s", self.max_restart_delay_s)):
            if not value > 0:
                raise ConfigError(f"{option} must be a positive number of seconds, got {value!r}")

    def delay(self, failures_in_window: int) -> float:
        return min(self.max_restart_delay_s, self.restart_delay_s * 2 ** max(0, failures_in_window - 1))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it (128 + signal for a kill)."""
    return 128 - returncode if returncode < 0 else returncode


class _StderrCopier:
    """Copies the child's stderr to ours line by line and keeps the last line
    that is not a quiet log line: the error the child died with, if it said."""

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        self._source, self._sink = source, sink
        self.last_error_line: str | None = None
        self._thread = threading.Thread(target=self._copy, name="ingest-supervise-stderr")
        self._thread.start()

    def _copy(self) -> None:
        with self._source:
            for line in iter(self._source.readline, b""):
                try:
                    self._sink.write(line)
                    self._sink.flush()
                except (OSError, ValueError):  # our stderr is gone: keep draining the child's
                    pass
                text = line.strip()
                if text and not _QUIET_LOG_LINE.match(text):
                    self.last_error_line = text.decode("utf-8", "replace")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)  # a grandchild that kept the pipe open must not hang us


class Supervisor:
    def __init__(self, command: Sequence[str], policy: RestartPolicy, *,
                 clock: Callable[[], float] = time.monotonic, stderr: BinaryIO | None = None) -> None:
        self.command = list(command)
        self.policy = policy
        self._clock = clock
        self._stderr = stderr if stderr is not None else sys.stderr.buffer
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop for good: forward `signum` to the running child, restart nothing."""
        self._stop.set()
        with self._lock:
            child = self._child
        if child is not None and child.poll() is None:
            log.info("forwarding %s to the job (pid %d)", signal.Signals(signum).name, child.pid)
            child.send_signal(signum)

    def run(self) -> int:
        """Run the job until it succeeds, is stopped, or fails too often;
        returns the exit status for the supervisor's process."""
        failures: deque[float] = deque()
        while True:
            returncode, cause = self._run_once()
            status = exit_status(returncode)
            if self._stop.is_set():
                log.info("the job %s after the stop request; not restarting", describe_exit(returncode))
                return status
            if returncode == 0:
                log.info("the job finished (exit code 0)")
                return 0
            if returncode == USAGE_ERROR:
                log.error("the job %s (bad usage or configuration: %s); not restarting, since a restart "
                          "would fail the same way", describe_exit(returncode), cause)
                return status
            now = self._clock()
            failures.append(now)
            while failures and failures[0] < now - self.policy.restart_window_s:
                failures.popleft()
            if len(failures) > self.policy.max_restarts:
                log.error("the job %s: %s. Giving up: %d failures within %.0f s (--max-restarts %d, "
                          "--restart-window %.0f)", describe_exit(returncode), cause, len(failures),
                          self.policy.restart_window_s, self.policy.max_restarts, self.policy.restart_window_s)
                return status or 1
            delay = self.policy.delay(len(failures))
            log.warning("the job %s: %s. Restarting it in %.1f s (restart %d of at most %d within %.0f s)",
                        describe_exit(returncode), cause, delay, len(failures), self.policy.max_restarts,
                        self.policy.restart_window_s)
            if self._stop.wait(delay):
                log.info("stop requested while waiting to restart; not restarting")
                return status

    def _run_once(self) -> tuple[int, str]:
        self.runs += 1
        child = subprocess.Popen(self.command, stderr=subprocess.PIPE, start_new_session=True)
        copier = _StderrCopier(child.stderr, self._stderr)  # type: ignore[arg-type]
        with self._lock:
            self._child = child
        log.info("started the job (run %d, pid %d): %s", self.runs, child.pid, " ".join(self.command))
        if self._stop.is_set():  # a stop request that came while starting it
            child.send_signal(signal.SIGTERM)
        try:
            returncode = child.wait()
        finally:
            with self._lock:
                self._child = None
            copier.join(5.0)
        return returncode, copier.last_error_line or "no error line on its stderr"


def child_command(argv: Sequence[str], app: str) -> list[str]:
    """`python -m ingest.cli` with the same arguments minus the supervisor's
    own options (those before the application file; what follows it belongs
    to the application)."""
    argv = list(argv)
    own_with_value = ("--max-restarts", "--restart-window", "--restart-delay")
    try:
        app_at = argv.index(app, argv.index("run") + 1)
    except ValueError:
        raise ConfigError(f"cannot find the application {app!r} in the command line {argv!r}") from None
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if i < app_at:
            if skip:
                skip = False
                continue
            if arg == "--supervise" or any(arg.startswith(o + "=") for o in own_with_value):
                continue
            if arg in own_with_value:
                skip = True
                continue
        out.append(arg)
    return [sys.executable, "-m", "ingest.cli", *out]


def supervise(argv: Sequence[str], app: str, policy: RestartPolicy) -> int:
    """Run `ingest <argv>` without the supervisor's options under a
    `Supervisor`, forwarding SIGTERM and SIGINT to it (main thread only)."""
    supervisor = Supervisor(child_command(argv, app), policy)
    previous: dict[int, Any] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("%s received: stopping the job", signal.Signals(signum).name)
        supervisor.request_stop(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, on_signal)
    try:
        return supervisor.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = ["RestartPolicy", "Supervisor", "child_command", "supervise"]
