"""`ingest demo`: the seed notes' example, runnable with no services.

A built-in line generator serves log-like lines on a local TCP port; the job
reads them with `socket_text_stream`, keeps the lines containing "error" and
prints them batch by batch, exactly as in the seed:

    ssc = StreamingContext(batch_interval=1.0)
    lines = ssc.socket_text_stream("localhost", 7777)
    lines.filter(lambda line: "error" in line).pprint()
    ssc.start()
    ssc.await_termination()

It stops by itself after `duration` seconds, or on Ctrl-C, and prints a summary.
"""

from __future__ import annotations

import errno
import itertools
import logging
import random
import socket
import threading
import time
from typing import Any

from ingest.context import StreamingContext
from ingest.errors import ConfigError
from ingest.listener import BatchCompleted, StreamingListener

log = logging.getLogger("ingest.demo")

_LEVELS = ["INFO"] * 6 + ["DEBUG"] * 2 + ["WARN", "error"]
_SERVICES = ["checkout", "search", "auth", "inventory", "billing"]
_MESSAGES = {
    "INFO": ["request served in {ms} ms", "user {user} logged in", "cache warmed ({n} keys)"],
    "DEBUG": ["retrying fetch of item {n}", "pool size {n}"],
    "WARN": ["slow query: {ms} ms", "queue depth {n}"],
    "error": ["error: payment declined for order {n}", "error: timeout calling {service} after {ms} ms",
              "error: connection reset by peer ({user})"],
}


class LineGenerator:
    """A TCP server on 127.0.0.1 that writes log-like lines to each client at
    `rate` lines per second. Owns its threads; `close()` stops and joins them."""

    def __init__(self, port: int = 7777, rate: float = 20.0, seed: int | None = None) -> None:
        try:
            self._server = socket.create_server(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on 127.0.0.1 is already in use: stop the program using it, "
                    "or run the demo on another port (ingest demo --port 0 picks a free one)") from None
            raise
        self.port = self._server.getsockname()[1]
        self._rate = rate
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.lines_sent = 0
        self._accept_thread = threading.Thread(target=self._accept, name="demo-line-generator")
        self._accept_thread.start()

    def _line(self, seq: int) -> str:
        r = self._random
        level = r.choice(_LEVELS)
        text = r.choice(_MESSAGES[level]).format(
            ms=r.randint(3, 4000), user=f"u{r.randint(1, 999)}", n=r.randint(1, 99999), service=r.choice(_SERVICES))
        stamp = time.strftime("%H:%M:%S")
        return f"{stamp} {seq:06d} {level:<5} [{r.choice(_SERVICES)}] {text}"

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="demo-line-writer")
            with self._lock:
                self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        interval = 1.0 / self._rate
        next_at = time.monotonic()
        with conn:
            for seq in itertools.count():
                if self._stop.is_set():
                    return
                try:
                    conn.sendall((self._line(seq) + "\n").encode())
                except OSError:
                    return
                with self._lock:
                    self.lines_sent += 1
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._accept_thread.join()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join()
        self._server.close()


class _Counter(StreamingListener):
    def __init__(self) -> None:
        self.batches = 0
        self.records = 0

    def on_batch_completed(self, event: BatchCompleted) -> None:
        self.batches += 1
        self.records += event.info.num_records


def run_demo(port: int = 7777, duration: float = 10.0, rate: float = 20.0, batch_interval: float = 1.0) -> int:
    if duration <= 0:
        raise ConfigError(f"--duration must be positive, got {duration}")
    generator = LineGenerator(port, rate)
    try:
        print(f"ingest demo: line generator on 127.0.0.1:{generator.port} ({rate:g} lines/s); "
              f"printing lines that contain 'error' for {duration:g} s (Ctrl-C stops early)\n", flush=True)
        ssc = StreamingContext(batch_interval=batch_interval)
        counter = _Counter()
        ssc.add_listener(counter)
        errors = [0]
        lines = ssc.socket_text_stream("127.0.0.1", generator.port, name="demo-lines")
        error_lines = lines.filter(lambda line: "error" in line)
        error_lines.pprint()
        error_lines.count().foreach_batch(lambda batch: errors.__setitem__(0, errors[0] + sum(batch.collect())))
        ssc.start()
        try:
            ssc.await_termination(timeout=duration)
        except KeyboardInterrupt:  # only if signal handlers could not be installed
            pass
        ssc.stop(graceful=True)
        ssc.await_termination(timeout=0)
        print(f"ingest demo: {counter.records} lines received in {counter.batches} batches, "
              f"{errors[0]} of them contain 'error'", flush=True)
        return 0
    finally:
        generator.close()


__all__: list[Any] = ["LineGenerator", "run_demo"]
