"""The socket receiver: lines of text from a TCP server.

The receiver connects to `host:port` and reads newline-separated lines (a line
may arrive split over many packets; `\\r\\n` and `\\n` both end a line). When
the server closes the connection or cannot be reached, the receiver is
restarted with backoff and reconnects. TCP keepalive is on, and a connection
that delivers nothing for `read_timeout` seconds (default 60; None to wait
forever) is dropped and reopened with a warning: a half-open connection (the
peer vanished without closing) never blocks the receiver for good.

Lines that are not valid in the encoding are skipped and reported
(`errors="report"`), kept with replacement characters (`"replace"`), or stop
the stream (`"strict"`). Reports of skipped lines (undecodable or longer than
`max_line_bytes`) are throttled: the first 10 of each minute one by one, then
one summary with the count; `metrics()` keeps the totals.

A socket cannot be replayed: records are durable once stored (with the
write-ahead log on), but whatever the server sent that was not yet received
when the process died is lost.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
from typing import Any

from ingest.errors import ConfigError, ReceiverError, StateError, StorageError
from receivers.receiver import Receiver
from receivers.report_throttle import ReportThrottle

log = logging.getLogger("receivers.socket")

ERROR_POLICIES = ("report", "replace", "strict")

# Bad lines reported one by one per interval; the rest go into one summary.
BAD_LINES_REPORTED = 10
BAD_LINES_INTERVAL_S = 60.0

# TCP keepalive: probe after 30 s idle, every 10 s, give up after 3 probes
# (where the platform lets us set them; else the system's defaults).
KEEPALIVE = (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))


class SocketTextReceiver(Receiver[str]):
    def __init__(self, host: str, port: int, *, encoding: str = "utf-8", errors: str = "report",
                 connect_timeout: float = 10.0, read_timeout: float | None = 60.0, max_line_bytes: int = 1 << 20,
                 name: str | None = None) -> None:
        super().__init__(name or f"socket {host}:{port}")
        if not isinstance(host, str) or not host:
            raise ConfigError(f"socket_text_stream: host must be a non-empty string, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"socket_text_stream: port must be an integer in 1..65535, got {port!r}")
        if errors not in ERROR_POLICIES:
            raise ConfigError(f"socket_text_stream: errors must be one of {ERROR_POLICIES}, got {errors!r}")
        if read_timeout is not None and (isinstance(read_timeout, bool) or not isinstance(read_timeout, (int, float))
                                         or not math.isfinite(read_timeout) or read_timeout <= 0):
            raise ConfigError(f"socket_text_stream: read_timeout must be a positive number of seconds (silence "
                              f"before reconnecting) or None to wait forever, got {read_timeout!r}")
        try:
            "".encode(encoding)
        except LookupError:
            raise ConfigError(f"socket_text_stream: unknown encoding {encoding!r}") from None
        self.host, self.port = host, port
        self.encoding, self.errors = encoding, errors
        self.connect_timeout = connect_timeout
        self.read_timeout = None if read_timeout is None else float(read_timeout)
        self.max_line_bytes = max_line_bytes
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lines_received = 0
        self.undecodable_lines = 0
        self.overlong_lines = 0
        self.read_timeouts = 0
        self._bad_line_reports = ReportThrottle(BAD_LINES_REPORTED, BAD_LINES_INTERVAL_S)

    @property
    def bad_lines(self) -> int:
        """Lines skipped: not valid in the encoding (unless errors="replace"), or too long."""
        return self.undecodable_lines + self.overlong_lines

    def metrics(self) -> dict[str, Any]:
        return {
            "lines_received": self.lines_received,
            "undecodable_lines": self.undecodable_lines,
            "overlong_lines": self.overlong_lines,
            "bad_line_reports_suppressed": self._bad_line_reports.suppressed_total,
            "read_timeouts": self.read_timeouts,
        }

    def on_start(self) -> None:
        self._thread = self.start_thread(self._receive, f"socket-receiver-{self.host}:{self.port}")

    def on_stop(self) -> None:
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.connect_timeout + 5)
        self._thread = None

    def _receive(self) -> None:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            if not self.stop_event.is_set():
                self.restart(f"could not connect to {where}: {exc.strerror or exc}; is the server running "
                             "and listening on that address?", exc)
            return
        _enable_keepalive(sock)
        sock.settimeout(self.read_timeout)
        with self._lock:
            self._sock = sock
        try:
            with sock:
                self._read_lines(sock, where)
        except TimeoutError:
            if not self.stop_event.is_set():
                self.read_timeouts += 1
                message = (f"no data from {where} for {self.read_timeout:g} s (read_timeout): the connection may be "
                           "half-open; reconnecting")
                log.warning("stream %s: %s", self.stream_name, message)
                self.restart(message)
            return
        except StorageError as exc:  # the WAL cannot take the data: stop rather than drop it
            self.stop(f"{where}: received lines cannot be stored", exc)
            return
        except (OSError, ValueError) as exc:
            if not self.stop_event.is_set():
                self.restart(f"connection to {where} failed: {exc}", exc)
            return
        except (StateError, ReceiverError):
            return  # stopped: store() after the stop, or errors="strict" stopped the stream
        finally:
            with self._lock:
                self._sock = None
            self._summarize_bad_lines(where, self._bad_line_reports.flush())
        if not self.stop_event.is_set():
            self.restart(f"connection to {where} was closed by the server")

    def _read_lines(self, sock: socket.socket, where: str) -> None:
        """Read chunks, cut them into lines and store them. With the
        write-ahead log on, the complete lines of each chunk are stored with
        one `store_batch` (durable on return); otherwise line by line through
        the block generator."""
        reliable = self.reliable_storage
        pending = b""  # an incomplete line carried over to the next chunk
        offset = 0  # stream offset of `pending`'s first byte
        skipping = False  # inside a line longer than max_line_bytes
        while not self.stop_event.is_set():
            chunk = sock.recv(65536)
            if not chunk:  # closed: a last line without newline still counts
                line = None if skipping or not pending else self._decode(pending, offset)
                if line is not None:
                    self.lines_received += 1
                    if reliable:
                        self.store_batch([line])
                    else:
                        self.store(line)
                return
            data = pending + chunk
            lines: list[str] = []
            start = 0
            while True:
                end = data.find(b"\n", start)
                if end < 0:
                    break
                raw = data[start:end]
                if skipping:
                    skipping = False
                elif len(raw) > self.max_line_bytes:
                    self._too_long(where, offset + start)
                else:
                    line = self._decode(raw[:-1] if raw.endswith(b"\r") else raw, offset + start)
                    if line is not None:
                        lines.append(line)
                start = end + 1
            pending = data[start:]
            offset += start
            if len(pending) > self.max_line_bytes:
                if not skipping:
                    self._too_long(where, offset)
                skipping = True
                offset += len(pending)
                pending = b""
            if not lines:
                continue
            self.lines_received += len(lines)
            if reliable:
                self.store_batch(lines)
            else:
                for line in lines:
                    self.store(line)

    def _too_long(self, where: str, offset: int) -> None:
        self.overlong_lines += 1
        self._report_bad_line(where, f"{where}: a line at byte {offset} is longer than "
                                     f"max_line_bytes={self.max_line_bytes}; skipped it")

    def _report_bad_line(self, where: str, message: str, error: BaseException | None = None) -> None:
        self._summarize_bad_lines(where, self._bad_line_reports.summary_due())
        if self._bad_line_reports.occurred():
            self.report_error(message, error)

    def _summarize_bad_lines(self, where: str, suppressed: int) -> None:
        if suppressed:
            self.report_error(
                f"{where}: {suppressed} more bad line(s) skipped without a report of their own (only the first "
                f"{BAD_LINES_REPORTED} per {BAD_LINES_INTERVAL_S:g} s are reported); {self.bad_lines} since the "
                f"start ({self.undecodable_lines} not valid {self.encoding}, {self.overlong_lines} too long)")

    def _decode(self, raw: bytes, offset: int) -> str | None:
        try:
            return raw.decode(self.encoding)
        except UnicodeDecodeError as exc:
            where = f"{self.host}:{self.port}"
            message = (f"{where}: line at byte {offset} is not valid {self.encoding} "
                       f"({exc.reason} at position {exc.start}: {raw[max(0, exc.start - 8):exc.start + 8]!r})")
            if self.errors == "replace":
                return raw.decode(self.encoding, errors="replace")
            self.undecodable_lines += 1
            if self.errors == "strict":
                self.stop(message + "; errors='strict' stops the stream (use errors='report' to skip such lines)",
                          exc)
                raise ReceiverError(message)
            self._report_bad_line(where, message + "; skipped it (errors='report')", exc)
            return None


def _enable_keepalive(sock: socket.socket) -> None:
    """Let the kernel probe an idle connection, so that a peer that vanished is noticed."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in KEEPALIVE:
        if hasattr(socket, option):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
            except OSError:  # not supported here: the system's defaults apply
                pass
