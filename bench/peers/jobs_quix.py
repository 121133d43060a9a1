"""The jobs written with Quix Streams (its own venv: requirements-quix.txt).
The app stops itself (app.stop()) once it has seen every record; its final
checkpoint flushes the producer and commits, inside the timed span.

Usage: python jobs_quix.py JOB BOOTSTRAP TOPIC RECORDS OUT_TOPIC WORKDIR"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

from quixstreams import Application

import spec


def main(job: str, bootstrap: str, topic: str, records: int, out_topic: str, workdir: Path) -> None:
    started = time.perf_counter()
    app = Application(broker_address=bootstrap, consumer_group=f"quix-{uuid.uuid4().hex}",
                      auto_offset_reset="earliest", state_dir=str(workdir / "state"), loglevel="WARNING",
                      processing_guarantee="exactly-once" if job == "eos" else "at-least-once")
    source = app.topic(topic, value_deserializer="json" if job in ("json", "eos") else "bytes",
                       key_deserializer="bytes")
    seen = [0]
    kept = [0]
    counts_seen: dict = {}

    def saw(_value) -> None:
        seen[0] += 1
        if seen[0] >= records:
            app.stop()

    def keep(_value) -> None:
        kept[0] += 1

    sdf = app.dataframe(source)
    sdf = sdf.update(saw)
    if job == "filter":
        sdf = sdf.filter(lambda v: spec.SUBSTRING in v.decode()).update(keep)
    elif job in ("json", "eos"):
        output = app.topic(out_topic, value_serializer="bytes", key_serializer="bytes")
        sdf = sdf.filter(lambda v: v["f"] == 1).update(keep).apply(spec.output_value)
        sdf = sdf.to_topic(output)
    elif job == "stateful":
        def count(_value, key, _timestamp, _headers, state) -> int:
            n = state.get("n", 0) + 1
            state.set("n", n)
            counts_seen[key] = n
            return n
        sdf = sdf.apply(count, stateful=True, metadata=True)
    app.run(sdf)
    seconds = time.perf_counter() - started
    if job == "count":
        spec.report(seconds, count=seen[0])
    elif job == "stateful":
        spec.report(seconds, count=sum(counts_seen.values()), keys=len(counts_seen))
    else:
        spec.report(seconds, count=seen[0], kept=kept[0])


if __name__ == "__main__":
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
