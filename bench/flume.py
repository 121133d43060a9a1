"""Flume stream benchmarks: prints figures, asserts nothing.

A real Flume 1.11 agent (``ingest.testing.flume.FlumeAgent``) whose seq source
produces ``--events`` events (bodies "0", "1", ...; 20,000 by default, 3,000
with ``--quick``) into a memory channel, delivered by:

- ``push``: its Avro sink (batch-size 100) to ``flume_stream``, with the
  write-ahead log off, then on (every batch fsynced before the OK);
- ``pull``: our pull sink, polled by ``flume_polling_stream`` (batches of 100,
  parallelism 2, write-ahead log on);
- ``flume-to-flume`` (the anchor): its Avro sink to a second agent's Avro
  source, whose file_roll sink writes one line per event.

Each figure is events/s between the first and the last event received (so the
agent's start and Flume's fixed back-off before its first delivery are left
out), and its ratio to the anchor.

Usage: ``.venv/bin/python bench/flume.py [--events N] [--quick]``.

Measured on 2026-11-27 at the full size (20,000 events; 27 s in all), 2 cores
shared with other jobs, load 2.2 (1-minute average) when it started::

    flume-to-flume (anchor)        27123 events/s
    push, WAL off                  40869 events/s   1.51x the anchor
    push, WAL on                   24617 events/s   0.91x the anchor
    pull, WAL on                   27998 events/s   1.03x the anchor

Each figure covers under a second of delivery: expect tens of percent between runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from ingest import StreamingContext  # noqa: E402
from ingest.testing.flume import (  # noqa: E402
    FlumeAgent,
    agent_config,
    avro_sink,
    avro_source,
    build_pull_sink_jar,
    memory_channel,
    pull_sink,
    seq_source,
)
from ingest.testing.jvm import free_port  # noqa: E402
from receivers import flume_polling_stream, flume_stream  # noqa: E402

BATCH = 100


def timed(count: Callable[[], int], total: int, timeout: float = 600.0) -> float:
    """Seconds from the first event counted to the last."""
    deadline = time.monotonic() + timeout
    while count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("no event arrived")
        time.sleep(0.001)
    first = time.monotonic()
    while count() < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count()} of {total} events arrived")
        time.sleep(0.001)
    return time.monotonic() - first


def source_agent(total: int, sink: dict, plugin_jars: Sequence[Path] = ()) -> FlumeAgent:
    return FlumeAgent(agent_config(sources={"r1": seq_source(total, batch_size=BATCH)},
                                   channels={"c1": memory_channel(capacity=max(100_000, total))},
                                   sinks={"k1": sink}), plugin_jars=plugin_jars)


def run_stream(make_stream: Callable[[StreamingContext], object], agent: FlumeAgent, total: int,
               wal: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-flume-") as tmp:
        ssc = StreamingContext(batch_interval=0.5, write_ahead_log=wal, stop_on_signal=False, log_batches=False)
        if wal:
            ssc.checkpoint(tmp)
        stream = make_stream(ssc)
        stream.count().foreach_batch(lambda batch: None)
        receiver_input = stream.parents[0]
        ssc.start()
        try:
            with agent:
                return timed(lambda: receiver_input.records_received, total)
        finally:
            ssc.stop(graceful=True, timeout=30)


def push(total: int, wal: bool) -> float:
    port = free_port()
    return run_stream(lambda ssc: flume_stream(ssc, "127.0.0.1", port, body_only=True),
                      source_agent(total, avro_sink("127.0.0.1", port, batch_size=BATCH)), total, wal)


def pull(total: int) -> float:
    port = free_port()
    agent = source_agent(total, pull_sink(port), [build_pull_sink_jar()])

    def stream(ssc):
        return flume_polling_stream(ssc, [("127.0.0.1", port)], max_batch_size=BATCH, parallelism=2,
                                    body_only=True)

    # The pull sink listens once the agent runs: start it first, then the stream.
    with agent:
        return run_stream(stream, _Started(agent), total, wal=True)


class _Started:
    """An agent already started, as a context manager that leaves it running."""

    def __init__(self, agent: FlumeAgent) -> None:
        self.agent = agent

    def __enter__(self) -> FlumeAgent:
        return self.agent

    def __exit__(self, *exc: object) -> None:
        pass


def flume_to_flume(total: int) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-flume-roll-") as out:
        receiving = FlumeAgent(agent_config(
            sources={"r1": avro_source(port)}, channels={"c1": memory_channel(capacity=max(100_000, total))},
            sinks={"k1": {"type": "file_roll", "channel": "c1", "sink.directory": out, "sink.rollInterval": 0,
                          "batchSize": BATCH}}), name="a1")
        with receiving:
            def lines() -> int:
                return sum(f.read_bytes().count(b"\n") for f in Path(out).iterdir() if f.is_file())

            with source_agent(total, avro_sink("127.0.0.1", port, batch_size=BATCH)):
                return timed(lines, total)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="3,000 events")
    args = parser.parse_args(argv)
    total = args.events or (3000 if args.quick else 20_000)
    print(f"{total} events, agent batch {BATCH}")
    anchor = total / flume_to_flume(total)
    print(f"flume-to-flume (anchor)   {anchor:10.0f} events/s")
    for label, seconds in (("push, WAL off", lambda: push(total, wal=False)),
                           ("push, WAL on", lambda: push(total, wal=True)),
                           ("pull, WAL on", lambda: pull(total))):
        rate = total / seconds()
        print(f"{label:25s} {rate:10.0f} events/s  {rate / anchor:5.2f}x the anchor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
