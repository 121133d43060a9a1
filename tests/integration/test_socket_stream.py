"""The socket text stream against a real TCP server on 127.0.0.1.

Each test starts its own server (port 0), lets the receiver connect, and
writes bytes exactly as a peer would: lines split over several packets, CRLF
endings, invalid UTF-8, closed connections. Waiting on the socket is
unavoidable here, so tests poll with deadlines; batches still run on a manual
clock, one `step()` at a time.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from ingest import StreamingListener
from ingest.errors import ReceiverError
from ingest.listener import ReceiverError as ReceiverErrorEvent


class ErrorRecorder(StreamingListener):
    def __init__(self) -> None:
        self.errors: list[Any] = []

    def on_receiver_error(self, event: ReceiverErrorEvent) -> None:
        self.errors.append(event.info)

    def messages(self) -> list[str]:
        return [e.last_error_message for e in self.errors]


@pytest.fixture
def server():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    accepted: list[socket.socket] = []

    class Server:
        port = srv.getsockname()[1]

        def accept(self) -> socket.socket:
            conn, _ = srv.accept()
            accepted.append(conn)
            return conn

    yield Server()
    for conn in accepted:
        conn.close()
    srv.close()


def report_lines(caplog, port: int) -> list[str]:
    """The log lines of receiver reports about the socket on `port`."""
    return [r.getMessage() for r in caplog.records
            if r.name == "ingest.listener" and f"127.0.0.1:{port}" in r.getMessage()]


def socket_stream(ssc, port: int, **options: Any):
    """A socket stream that reconnects quickly after a failure."""
    options.setdefault("restart_delay", 0.1)
    options.setdefault("max_restart_delay", 0.2)
    return ssc.socket_text_stream("127.0.0.1", port, **options)


def run_until_received(ssc, stream, count: int, wait_until) -> None:
    wait_until(lambda: stream.records_received >= count, what=f"{count} lines received")


def test_lines_split_over_several_packets_arrive_whole(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    lines = ssc.socket_text_stream("127.0.0.1", server.port)
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    for piece in (b"hel", b"lo wo", b"rld\nsecond ", b"line\n", b"th", b"ird\n"):
        conn.sendall(piece)
        time.sleep(0.03)  # separate packets, not synchronization
    run_until_received(ssc, lines, 3, wait_until)
    ssc.step(1)
    assert out == [["hello world", "second line", "third"]]


def test_crlf_and_lf_line_endings_are_both_stripped(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    lines = ssc.socket_text_stream("127.0.0.1", server.port)
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"windows\r\nunix\n\r\nmixed\r")
    conn.sendall(b"\n\n")
    run_until_received(ssc, lines, 5, wait_until)
    ssc.step(1)
    assert out == [["windows", "unix", "", "mixed", ""]]


def test_records_from_both_connections_arrive_when_the_server_disconnects(make_context, collect, server,
                                                                          wait_until):
    ssc = make_context(block_interval=0.02)
    recorder = ErrorRecorder()
    ssc.add_listener(recorder)
    lines = socket_stream(ssc, server.port)
    out = collect(lines)
    ssc.start()
    first = server.accept()
    first.sendall(b"one-a\none-b\n")
    first.close()
    second = server.accept()  # the receiver reconnected
    second.sendall(b"two-a\n")
    run_until_received(ssc, lines, 3, wait_until)
    ssc.step(1)
    assert out == [["one-a", "one-b", "two-a"]]
    assert any("was closed by the server" in m for m in recorder.messages())
    assert ssc.status()["receivers"][lines.name]["restarts"] == 1
    ssc.stop(graceful=True)
    assert ssc.error is None


def test_a_last_line_without_newline_is_kept_when_the_server_closes(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    lines = socket_stream(ssc, server.port)
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"complete\npartial")
    conn.close()
    run_until_received(ssc, lines, 2, wait_until)
    ssc.step(1)
    assert out == [["complete", "partial"]]


def test_invalid_utf8_is_skipped_and_reported_with_its_byte_offset(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    recorder = ErrorRecorder()
    ssc.add_listener(recorder)
    lines = ssc.socket_text_stream("127.0.0.1", server.port)  # errors="report" is the default
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"ok\n" + b"caf\xe9 latin-1\n" + "naïve\n".encode())
    run_until_received(ssc, lines, 2, wait_until)
    wait_until(lambda: recorder.errors, what="the receiver error event")
    ssc.step(1)
    assert out == [["ok", "naïve"]]
    (message,) = recorder.messages()
    assert f"127.0.0.1:{server.port}: line at byte 3 is not valid utf-8" in message
    assert "skipped it (errors='report')" in message
    assert recorder.errors[0].last_error.startswith("UnicodeDecodeError")
    assert ssc.state == "active"


def test_invalid_utf8_is_kept_with_replacement_characters_with_errors_replace(make_context, collect, server,
                                                                               wait_until):
    ssc = make_context(block_interval=0.02)
    recorder = ErrorRecorder()
    ssc.add_listener(recorder)
    lines = ssc.socket_text_stream("127.0.0.1", server.port, errors="replace")
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"caf\xe9\nok\n")
    run_until_received(ssc, lines, 2, wait_until)
    ssc.step(1)
    assert out == [["caf\ufffd", "ok"]]
    assert recorder.errors == []


def test_invalid_utf8_stops_the_job_with_errors_strict(make_context, server):
    ssc = make_context(block_interval=0.02)
    lines = ssc.socket_text_stream("127.0.0.1", server.port, errors="strict")
    lines.foreach_batch(print)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"fine\n\xff\xfe\n")
    with pytest.raises(ReceiverError, match=r"line at byte 5 is not valid utf-8.*errors='strict' stops the stream"):
        ssc.await_termination(timeout=10)
    assert ssc.state == "stopped"


def test_another_encoding_decodes_lines(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    lines = ssc.socket_text_stream("127.0.0.1", server.port, encoding="latin-1")
    out = collect(lines)
    ssc.start()
    server.accept().sendall(b"caf\xe9\n")
    run_until_received(ssc, lines, 1, wait_until)
    ssc.step(1)
    assert out == [["café"]]


def test_an_overlong_line_is_skipped_and_reported(make_context, collect, server, wait_until):
    ssc = make_context(block_interval=0.02)
    recorder = ErrorRecorder()
    ssc.add_listener(recorder)
    lines = socket_stream(ssc, server.port, max_line_bytes=16)
    out = collect(lines)
    ssc.start()
    server.accept().sendall(b"short\n" + b"x" * 100 + b"\nafter\n")
    run_until_received(ssc, lines, 2, wait_until)
    ssc.step(1)
    assert out == [["short", "after"]]
    assert any("a line at byte 6 is longer than max_line_bytes=16" in m for m in recorder.messages())


def test_a_server_that_is_not_listening_is_retried_and_the_job_keeps_running(make_context, collect, wait_until):
    # A bound socket that never listens: connecting to it is refused.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    try:
        ssc = make_context()
        recorder = ErrorRecorder()
        ssc.add_listener(recorder)
        lines = socket_stream(ssc, port, restart_delay=0.02, max_restart_delay=0.05)
        out = collect(lines)
        ssc.start()
        wait_until(lambda: ssc.status()["receivers"].get(lines.name, {}).get("restarts", 0) >= 4,
                   what="four restarts")
        assert ssc.state == "active"
        ssc.step(1)
        assert out == [[]]
        assert len(recorder.errors) >= 4
        assert [e.restarts for e in recorder.errors[:4]] == [1, 2, 3, 4]
        assert all(f"could not connect to 127.0.0.1:{port}" in m for m in recorder.messages())
        assert "is the server running" in recorder.messages()[0]
        assert recorder.errors[0].last_error.startswith("ConnectionRefusedError")
        ssc.stop(graceful=True)
        assert ssc.await_termination(timeout=10) is True
        assert ssc.state == "stopped" and ssc.error is None
    finally:
        closed.close()


def test_stop_interrupts_a_receiver_waiting_for_a_silent_server(make_context, server):
    ssc = make_context()
    socket_stream(ssc, server.port).foreach_batch(print)
    ssc.start()
    server.accept()  # connected, but the server never writes
    started = time.monotonic()
    ssc.stop(graceful=True)
    assert time.monotonic() - started < 5
    assert ssc.state == "stopped" and ssc.error is None


def test_socket_text_stream_takes_a_restart_delay(make_context, wait_until):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    try:
        ssc = make_context()
        lines = ssc.socket_text_stream("127.0.0.1", closed.getsockname()[1], restart_delay=0.05,
                                       max_restart_delay=0.05)
        lines.foreach_batch(print)
        ssc.start()
        wait_until(lambda: ssc.status()["receivers"].get(lines.name, {}).get("restarts", 0) >= 3, timeout=3,
                   what="three restarts 0.05 s apart")
    finally:
        closed.close()


def test_a_connection_silent_for_read_timeout_is_reopened_with_a_warning(make_context, collect, server, wait_until,
                                                                          caplog):
    ssc = make_context(block_interval=0.02)
    recorder = ErrorRecorder()
    ssc.add_listener(recorder)
    lines = socket_stream(ssc, server.port, read_timeout=0.2, restart_delay=0.01, max_restart_delay=0.01)
    out = collect(lines)
    ssc.start()
    server.accept()  # a peer that vanished without closing: the connection stays open and silent
    server.accept().sendall(b"after reconnecting\n")
    run_until_received(ssc, lines, 1, wait_until)
    ssc.step(1)
    assert out == [["after reconnecting"]]
    message = f"no data from 127.0.0.1:{server.port} for 0.2 s (read_timeout): the connection may be half-open; " \
              "reconnecting"
    assert recorder.messages()[0].startswith(message)
    assert any(r.name == "receivers.socket" and r.levelname == "WARNING" and message in r.getMessage()
               for r in caplog.records)
    assert lines.receiver.metrics()["read_timeouts"] == 1
    assert ssc.state == "active"


def test_the_receivers_connection_has_tcp_keepalive_on(make_context, server, monkeypatch):
    opened: list[socket.socket] = []
    create_connection = socket.create_connection

    def recording_create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        sock = create_connection(*args, **kwargs)
        opened.append(sock)
        return sock

    monkeypatch.setattr(socket, "create_connection", recording_create_connection)
    ssc = make_context()
    socket_stream(ssc, server.port).foreach_batch(print)
    ssc.start()
    server.accept()
    # The server side accepts before the receiver's thread gets its socket back
    # and sets its options: wait for that (bounded), then check.
    deadline = time.monotonic() + 10
    while not (opened and opened[0].gettimeout() == 60.0) and time.monotonic() < deadline:
        time.sleep(0.01)
    (sock,) = opened
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    assert sock.gettimeout() == 60.0  # the default read_timeout


@pytest.mark.parametrize("read_timeout", [0, -1.0, float("nan"), "60", True])
def test_a_read_timeout_that_is_not_a_positive_number_is_refused(make_context, read_timeout):
    from ingest.errors import ConfigError

    with pytest.raises(ConfigError, match="read_timeout must be a positive number of seconds"):
        make_context().socket_text_stream("127.0.0.1", 9, read_timeout=read_timeout)


def test_reports_of_bad_lines_are_throttled_to_the_first_ten_and_a_summary(make_context, collect, server,
                                                                            wait_until, caplog):
    ssc = make_context(block_interval=0.02)
    lines = socket_stream(ssc, server.port, max_line_bytes=64)
    out = collect(lines)
    ssc.start()
    conn = server.accept()
    conn.sendall(b"\xff\xfe binary\n" * 95 + (b"y" * 100 + b"\n") * 5 + b"text\n")
    conn.close()
    wait_until(lambda: any("more bad line" in m for m in report_lines(caplog, server.port)),
               what="the summary of the bad lines not reported one by one")
    run_until_received(ssc, lines, 1, wait_until)
    ssc.step(1)
    assert out == [["text"]]
    reports = [m for m in report_lines(caplog, server.port) if "restarting" not in m]
    assert len(reports) == 11
    assert all("is not valid utf-8" in m for m in reports[:10])
    assert reports[10].startswith(f"receiver socket 127.0.0.1:{server.port} of stream {lines.name}: "
                                  f"127.0.0.1:{server.port}: 90 more bad line(s) skipped without a report of their "
                                  "own (only the first 10 per 60 s are reported); 100 since the start (95 not valid "
                                  "utf-8, 5 too long)")
    assert lines.receiver.metrics() == {"lines_received": 1, "undecodable_lines": 95, "overlong_lines": 5,
                                        "bad_line_reports_suppressed": 90, "read_timeouts": 0}
