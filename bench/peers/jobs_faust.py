"""The jobs written with Faust (faust-streaming; its own venv:
requirements-faust.txt), one worker, the aiokafka driver, in-memory tables.
run.py gives it only the first 200k records: it reads a few thousand records/s.
The worker stops itself once the agent has seen every record; for the json/eos
jobs the producer is flushed first (inside the timed span).

Usage: python jobs_faust.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from pathlib import Path

import faust

import spec


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str, workdir: Path) -> None:
    started = time.perf_counter()
    app = faust.App(f"faust-{uuid.uuid4().hex[:12]}", broker=f"kafka://{bootstrap}", store="memory://",
                    datadir=str(workdir / "data"), web_enabled=False, topic_partitions=spec.PARTITIONS,
                    consumer_auto_offset_reset="earliest", topic_disable_leader=True,
                    processing_guarantee="exactly_once" if job == "eos" else "at_least_once")
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
    output = app.topic(out_topic, key_serializer="raw", value_serializer="raw") if out_topic else None
    table = app.Table("counts", default=int, partitions=spec.PARTITIONS) if job == "stateful" else None
    found = {"count": 0, "kept": 0}
    seconds = [0.0]
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)

    async def done() -> None:
        if output is not None:
            await app.producer.flush()
        seconds[0] = time.perf_counter() - started
        await worker.stop()

    @app.agent(source)
    async def process(stream):
        async for key, value in stream.items():
            found["count"] += 1
            if job == "filter":
                if spec.SUBSTRING in value.decode():
                    found["kept"] += 1
            elif job in ("json", "eos"):
                parsed = json.loads(value)
                if parsed["f"] == 1:
                    found["kept"] += 1
                    await output.send(key=key, value=spec.output_value(parsed))
            elif job == "stateful":
                table[key.decode()] += 1
            if found["count"] >= records:
                asyncio.ensure_future(done())

    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    if job == "stateful":
        spec.report(seconds[0], count=sum(table.values()), keys=len(table))
    elif job == "count":
        spec.report(seconds[0], count=found["count"])
    else:
        spec.report(seconds[0], count=found["count"], kept=found["kept"])


if __name__ == "__main__":
    logging.getLogger("faust").setLevel(logging.WARNING)
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
