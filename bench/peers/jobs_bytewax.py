"""The jobs written with Bytewax (its own venv: requirements-bytewax.txt), one
worker (run_main), the Kafka source with tail=False so the flow ends at the
topic's end. Bytewax has no exactly-once mode, so it has no eos job.

Usage: python jobs_bytewax.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import json
import sys
import time

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

import spec


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str) -> None:
    started = time.perf_counter()
    flow = Dataflow(f"bench-{job}")
    # batch_size: the source's records per poll (default 1000); 10000 as the bare loop.
    messages = op.input("in", flow, KafkaSource([bootstrap], [topic], tail=False, batch_size=10_000))
    seen = [0]
    kept = [0]
    counts: dict = {}

    def saw(_step, _m) -> None:
        seen[0] += 1

    def keep(_step, _m) -> None:
        kept[0] += 1

    op.inspect("seen", messages, saw)
    if job == "filter":
        op.inspect("kept", op.filter("f", messages, lambda m: spec.SUBSTRING in m.value.decode()), keep)
    elif job == "json":
        parsed = op.map("parse", messages, lambda m: (m.key, json.loads(m.value)))
        wanted = op.filter("f", parsed, lambda kv: kv[1]["f"] == 1)
        op.inspect("kept", wanted, keep)
        out = op.map("out", wanted, lambda kv: KafkaSinkMessage(kv[0], spec.output_value(kv[1])))
        op.output("sink", out, KafkaSink([bootstrap], out_topic))
    elif job == "stateful":
        keyed = op.key_on("key", messages, lambda m: m.key.decode())

        def count(state, _m):
            n = (state or 0) + 1
            return n, n
        totals = op.stateful_map("count", keyed, count)
        op.inspect("totals", totals, lambda _s, kv: counts.__setitem__(kv[0], kv[1]))
    run_main(flow)
    seconds = time.perf_counter() - started
    if job == "stateful":
        spec.report(seconds, count=sum(counts.values()), keys=len(counts))
    else:
        spec.report(seconds, count=seen[0], kept=kept[0])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
