"""The Avro IPC server of the push stream, driven byte for byte over loopback:
the handshake outcomes, frames cut anywhere, and requests that must never reach
the handler. The real agent's side is in tests/integration/test_flume_push.py."""

from __future__ import annotations

import io
import socket
import struct

import pytest

from receivers.flume import ipc
from receivers.flume.client import AvroCallError, AvroIpcClient
from receivers.flume.framing import FrameLimits, read_frame
from receivers.flume.protocols import FLUME_1_11_SOURCE_PROTOCOL_MD5, SOURCE_PROTOCOL
from receivers.flume.server import AvroIpcServer

# Captured from Flume 1.11's Avro sink: the handshake and appendBatch of 3 events.
FLUME_FIRST_CALL = bytes.fromhex(
    "0000000100000002" "00000030"
    "86aadae2c45474c0fe93ffd0f2350a65" "00" "86aadae2c45474c0fe93ffd0f2350a65" "0200" "00"
    "16617070656e644261746368"
    "00000023" "06" "00166865 6c6c6f20666c756d65" "0016 7365636f6e64206c696e65" "000a 7468697264" "00"
    .replace(" ", ""))
FLUME_LATER_CALL = bytes.fromhex("00000002000000020000000d0016617070656e644261746368000000050200027800")


@pytest.fixture
def server():
    calls: list[tuple[str, dict]] = []

    def handler(name, request):
        calls.append((name, request))
        return "OK"

    srv = AvroIpcServer(SOURCE_PROTOCOL, handler, limits=FrameLimits(max_buffers=16, max_frame_bytes=1 << 16))
    srv.start()
    srv.calls = calls
    yield srv
    srv.stop()


def connect(srv) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    return conn


def test_flume_bytes_are_answered_as_flume_accepts(server):
    with connect(server) as conn:
        conn.sendall(FLUME_FIRST_CALL)
        assert read_frame(conn, FrameLimits()) == (1, bytes.fromhex("00000000" "00" "00" "00"))
        conn.sendall(FLUME_LATER_CALL)
        assert read_frame(conn, FrameLimits()) == (2, bytes.fromhex("000000"))
    assert [(n, [e["body"] for e in r["events"]]) for n, r in server.calls] == [
        ("appendBatch", [b"hello flume", b"second line", b"third"]), ("appendBatch", [b"x"])]


def test_a_request_cut_into_buffers_inside_records_is_decoded_whole(server):
    first = FLUME_FIRST_CALL[:8 + 4 + 48]  # header and buffer 0
    params = FLUME_FIRST_CALL[8 + 4 + 48 + 4:]
    pieces = [params[:5], params[5:6], params[6:20], params[20:]]
    frame = struct.pack(">ii", 1, 1 + len(pieces)) + first[8:] + b"".join(
        struct.pack(">i", len(p)) + p for p in pieces)
    with connect(server) as conn:
        conn.sendall(frame[:7])
        conn.sendall(frame[7:])
        assert read_frame(conn, FrameLimits())[0] == 1
    assert len(server.calls[0][1]["events"]) == 3


def test_a_python_client_with_its_own_text_is_answered_client_and_can_append(server):
    with AvroIpcClient(SOURCE_PROTOCOL, "127.0.0.1", server.port) as client:
        assert client.call("append", {"event": {"headers": {"k": "v"}, "body": b"one"}}) == "OK"
        assert client.call("appendBatch", {"events": []}) == "OK"
    assert server.calls[0] == ("append", {"event": {"headers": {"k": "v"}, "body": b"one"}})


def handshake(client_hash: bytes, client_protocol: str | None) -> bytes:
    out = io.BytesIO()
    ipc.write(out, ipc.HANDSHAKE_REQUEST, {"clientHash": client_hash, "clientProtocol": client_protocol,
                                           "serverHash": client_hash, "meta": None})
    ipc.write(out, ipc.CALL_HEAD, {"meta": {}, "name": "appendBatch"})
    ipc.write(out, SOURCE_PROTOCOL.messages["appendBatch"].request, {"events": [{"headers": {}, "body": b"z"}]})
    payload = out.getvalue()
    return struct.pack(">iii", 1, 1, len(payload)) + payload


def test_an_unknown_hash_without_protocol_text_is_answered_none_and_nothing_is_handled(server):
    with connect(server) as conn:
        conn.sendall(handshake(b"\x01" * 16, None))
        _, payload = read_frame(conn, FrameLimits())
    response = ipc.read(io.BytesIO(payload), ipc.HANDSHAKE_RESPONSE)
    assert response["match"] == "NONE" and response["serverHash"] == SOURCE_PROTOCOL.md5
    assert server.calls == []


def test_another_protocol_closes_the_connection_with_one_log_line(server, caplog):
    other = '{"protocol":"Other","namespace":"x","types":[],"messages":{}}'
    with connect(server) as conn:
        conn.sendall(handshake(b"\x02" * 16, other))
        assert conn.recv(10) == b""
    assert server.calls == []
    lines = [r.getMessage() for r in caplog.records if "closed the connection" in r.getMessage()]
    assert len(lines) == 1 and "speaks another protocol than AvroSourceProtocol" in lines[0]


def test_an_unknown_message_gets_an_error_and_the_connection_stays_usable(server):
    out = io.BytesIO()
    ipc.write(out, ipc.HANDSHAKE_REQUEST, {"clientHash": FLUME_1_11_SOURCE_PROTOCOL_MD5, "clientProtocol": None,
                                           "serverHash": FLUME_1_11_SOURCE_PROTOCOL_MD5, "meta": {}})
    ipc.write(out, ipc.CALL_HEAD, {"meta": {}, "name": "dropTables"})
    payload = out.getvalue()
    with connect(server) as conn:
        conn.sendall(struct.pack(">iii", 7, 1, len(payload)) + payload)
        serial, reply = read_frame(conn, FrameLimits())
        fo = io.BytesIO(reply)
        assert serial == 7 and ipc.read(fo, ipc.HANDSHAKE_RESPONSE)["match"] == "BOTH"
        assert ipc.read(fo, ipc.RESPONSE_HEAD)["error"] is True
        conn.sendall(FLUME_LATER_CALL)
        assert read_frame(conn, FrameLimits()) == (2, bytes.fromhex("000000"))
    assert [n for n, _ in server.calls] == ["appendBatch"]


@pytest.mark.parametrize("frame, reason", [
    (struct.pack(">ii", 1, 17), "declares 17 buffers"),
    (struct.pack(">iii", 1, 1, 1 << 17), "larger than max_frame_bytes"),
    (struct.pack(">iii", 1, 1, -4), "larger than max_frame_bytes"),
    (FLUME_FIRST_CALL[:-3], "truncated frame"),
    (struct.pack(">iii", 1, 1, 4) + b"\xff\xff\xff\xff", "does not decode"),
])
def test_bad_frames_close_the_connection_and_reach_no_handler(server, caplog, frame, reason):
    with connect(server) as conn:
        conn.sendall(frame)
        conn.shutdown(socket.SHUT_WR)
        try:
            assert conn.recv(100) == b""
        except ConnectionResetError:
            pass
    with AvroIpcClient(SOURCE_PROTOCOL, "127.0.0.1", server.port) as client:  # others are unaffected
        assert client.call("append", {"event": {"headers": {}, "body": b"ok"}}) == "OK"
    assert [r["event"]["body"] for _, r in server.calls] == [b"ok"]
    assert server.connections_refused == 1
    assert any(reason in r.getMessage() for r in caplog.records)


def test_trailing_bytes_after_a_request_are_refused(server):
    payload = FLUME_LATER_CALL[8 + 4:8 + 4 + 13] + FLUME_LATER_CALL[8 + 4 + 13 + 4:] + b"\x00"
    with connect(server) as conn:
        conn.sendall(FLUME_FIRST_CALL)
        read_frame(conn, FrameLimits())
        conn.sendall(struct.pack(">iii", 2, 1, len(payload)) + payload)
        assert conn.recv(10) == b""
    assert len(server.calls) == 1


def test_a_failing_handler_closes_the_connection_like_a_failed_answer(server):
    server.handler = lambda name, request: (_ for _ in ()).throw(RuntimeError("boom"))
    with AvroIpcClient(SOURCE_PROTOCOL, "127.0.0.1", server.port) as client:
        with pytest.raises(AvroCallError, match="closed the connection"):
            client.call("append", {"event": {"headers": {}, "body": b"x"}})


def test_the_pull_protocol_is_the_one_the_java_sink_serves():
    import json
    from pathlib import Path

    from receivers.flume.protocols import PULL_PROTOCOL_TEXT

    java_copy = Path(__file__).resolve().parents[2] / "docker/flume-sink/src/main/resources/ingest-flume-pull.avpr"
    assert json.loads(java_copy.read_text()) == json.loads(PULL_PROTOCOL_TEXT)
