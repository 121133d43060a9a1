"""The push stream against a real Flume 1.11 agent: its seq source fills a memory
channel, its Avro sink delivers to `flume_stream`.

Flume waits a fixed 5 s after a failed delivery and up to 5 s when its channel
was empty, so waits here allow tens of seconds; batches run on a manual clock.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from ingest.testing.flume import agent_config, avro_sink, memory_channel, seq_source
from ingest.testing.jvm import free_port
from receivers import FlumeEvent, flume_stream

pytestmark = pytest.mark.flume

DELIVERY_WAIT = 60.0


def seq_agent(flume_agent, port: int, total: int, *, batch_size: int = 50, interceptors: bool = False):
    source = seq_source(total, batch_size=batch_size)
    if interceptors:
        source.update({"interceptors": "ts host", "interceptors.ts.type": "timestamp",
                       "interceptors.host.type": "host", "interceptors.host.useIP": "true"})
    return flume_agent(agent_config(sources={"r1": source}, channels={"c1": memory_channel()},
                                    sinks={"k1": avro_sink("127.0.0.1", port, batch_size=batch_size)}))


def drain(ssc, out, stream, count: int, wait_until) -> list:
    receiver_input = stream.parents[0]
    wait_until(lambda: receiver_input.records_received >= count, timeout=DELIVERY_WAIT,
               what=f"{count} events received")
    ssc.step(1)
    return [record for batch in out for record in batch]


def test_events_from_a_real_agent_arrive_once_with_headers_and_bodies(make_context, collect, flume_agent,
                                                                      wait_until):
    port = free_port()
    ssc = make_context(block_interval=0.05)
    events = flume_stream(ssc, "127.0.0.1", port)
    out = collect(events)
    ssc.start()
    agent = seq_agent(flume_agent, port, 500, interceptors=True)
    received = drain(ssc, out, events, 500, wait_until)
    assert all(isinstance(e, FlumeEvent) for e in received)
    assert sorted(int(e.body) for e in received) == list(range(500))
    assert {e.headers["host"] for e in received} == {"127.0.0.1"}
    assert all(e.headers["timestamp"].isdigit() for e in received)
    time.sleep(1.0)
    ssc.step(1)
    assert sum(len(b) for b in out) == 500  # nothing more came
    agent.stop()
    assert agent.shutdown_metrics()[("CHANNEL", "c1")]["channel.current.size"] == 0


def test_bodies_alone_decoded_through_the_stream_through_the_registry(make_context, collect, flume_agent,
                                                                      wait_until):
    port = free_port()
    ssc = make_context(block_interval=0.05)
    bodies = ssc.stream("flume_stream", "127.0.0.1", port, body_only=True, value_deserializer="json")
    out = collect(bodies)
    ssc.start()
    seq_agent(flume_agent, port, 100)
    assert sorted(drain(ssc, out, bodies, 100, wait_until)) == list(range(100))  # "17" is JSON for 17


def test_a_failed_store_is_answered_failed_and_the_agent_resends_the_batch(make_context, collect, flume_agent,
                                                                           wait_until):
    port = free_port()
    ssc = make_context(block_interval=0.05)
    events = flume_stream(ssc, "127.0.0.1", port, body_only=True, value_deserializer="utf-8")
    out = collect(events)
    receiver = events.parents[0].receiver
    real_store = receiver.store_batch
    failures = []

    def store_failing_once(items, metadata=None):
        if not failures:
            failures.append(len(items))
            raise OSError("injected: disk full")
        return real_store(items, metadata)

    receiver.store_batch = store_failing_once
    ssc.start()
    agent = seq_agent(flume_agent, port, 200)
    received = drain(ssc, out, events, 200, wait_until)
    assert failures and sorted(map(int, received)) == list(range(200))  # the refused batch came again, once
    assert receiver.batches_failed == 1
    agent.stop()
    assert agent.shutdown_metrics()[("SINK", "k1")]["sink.event.write.fail"] >= 1


def closed_without_answer(conn: socket.socket) -> bool:
    """The server closed the connection without replying (a reset when it closed
    with unread bytes of ours, which TCP answers with RST)."""
    try:
        return conn.recv(100) == b""
    except ConnectionResetError:
        return True


def test_garbage_on_the_port_does_not_disturb_a_concurrent_agent(make_context, collect, flume_agent, wait_until,
                                                                 caplog):
    port = free_port()
    ssc = make_context(block_interval=0.05)
    events = flume_stream(ssc, "127.0.0.1", port, body_only=True)
    out = collect(events)
    ssc.start()
    agent = seq_agent(flume_agent, port, 300, batch_size=20)
    garbage = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                        # 'GET ' is a huge buffer count
        struct.pack(">ii", 1, 1) + struct.pack(">i", 1 << 30),       # a buffer over max_frame_bytes
        struct.pack(">ii", 1, 1) + struct.pack(">i", 100) + b"x" * 10,  # truncated, then closed
        struct.pack(">ii", 1, 1) + struct.pack(">i", 5) + b"\xff" * 5,  # not Avro
    ]
    for payload in garbage:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            assert closed_without_answer(conn)
    received = drain(ssc, out, events, 300, wait_until)
    assert sorted(int(b) for b in received) == list(range(300))
    assert events.parents[0].receiver.metrics()["connections_refused"] == len(garbage)
    warnings = [r.getMessage() for r in caplog.records if "closed the connection from" in r.getMessage()]
    assert len(warnings) == len(garbage)
    agent.stop()
    assert agent.shutdown_metrics()[("CHANNEL", "c1")]["channel.current.size"] == 0


def test_two_agents_push_to_one_stream_at_once(make_context, collect, flume_agent, wait_until):
    port = free_port()
    ssc = make_context(block_interval=0.05)
    events = flume_stream(ssc, "127.0.0.1", port)
    out = collect(events)
    ssc.start()
    for agent_id in ("a", "b"):
        source = seq_source(300, batch_size=30)
        source.update({"interceptors": "id", "interceptors.id.type": "static", "interceptors.id.key": "agent",
                       "interceptors.id.value": agent_id})
        flume_agent(agent_config(sources={"r1": source}, channels={"c1": memory_channel()},
                                 sinks={"k1": avro_sink("127.0.0.1", port, batch_size=30)}))
    received = drain(ssc, out, events, 600, wait_until)
    by_agent = {agent_id: sorted(int(e.body) for e in received if e.headers["agent"] == agent_id)
                for agent_id in ("a", "b")}
    assert by_agent == {"a": list(range(300)), "b": list(range(300))}


def test_lines_of_a_spooled_file_through_a_file_channel_arrive(make_context, collect, flume_agent, wait_until,
                                                               tmp_path):
    from ingest.testing.flume import file_channel, spooldir_source

    spool = tmp_path / "spool"
    spool.mkdir()
    port = free_port()
    ssc = make_context(block_interval=0.05)
    lines = flume_stream(ssc, "127.0.0.1", port, body_only=True, value_deserializer="utf-8")
    out = collect(lines)
    ssc.start()
    flume_agent(agent_config(sources={"r1": spooldir_source(str(spool))}, channels={"c1": file_channel("c1")},
                             sinks={"k1": avro_sink("127.0.0.1", port, batch_size=20)}))
    staged = tmp_path / "lines.txt"
    staged.write_text("".join(f"line {i}\n" for i in range(100)))
    staged.rename(spool / "lines.txt")  # spooled files must appear complete
    assert sorted(drain(ssc, out, lines, 100, wait_until)) == sorted(f"line {i}" for i in range(100))
