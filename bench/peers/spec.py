"""The benchmark's data and jobs, shared by every peer's job script (stdlib only,
so each peer's venv can import it).

Record i (0 <= i < N), produced once to a 4-partition topic (partition i % 4):
  key   = b"k%05d" % (i % 100_000)          (100k distinct keys, for the stateful job)
  value = JSON padded to exactly 100 bytes: {"i": i, "f": 1 or 0, "p": "xxx..."}
          with "f": 1 for every tenth record (i % 10 == 0): the filter's ~10%.

Jobs (each reads the topic from the start, in its own process):
  count     read everything, count;
  filter    decode UTF-8, keep values containing '"f":1', count;
  json      parse JSON, keep f == 1, produce {"i": i} to an output topic;
  stateful  per-key running count over the 100k keys, emitted per batch/window;
  eos       json with the framework's exactly-once mode (ours: KafkaTransactionalSink);
  eos_sql   (ours only) json's results written to SQLite through the exactly-once SqlSink.
Every job prints one JSON line {"seconds": ..., "check": {...}} last; run.py checks it.
"""

from __future__ import annotations

import json

PARTITIONS = 4
RECORD_BYTES = 100
KEYS = 100_000
SUBSTRING = '"f":1'
SUBSTRING_BYTES = SUBSTRING.encode()
JOBS = ("count", "filter", "json", "stateful", "eos", "eos_sql")


def key_of(i: int) -> bytes:
    return b"k%05d" % (i % KEYS)


def value_of(i: int) -> bytes:
    head = '{"i":%d,"f":%d,"p":"' % (i, 1 if i % 10 == 0 else 0)
    return (head + "x" * (RECORD_BYTES - len(head) - 2) + '"}').encode()


def expected_filtered(records: int) -> int:
    return (records + 9) // 10


def output_value(parsed: dict) -> bytes:
    return json.dumps({"i": parsed["i"]}).encode()


def report(seconds: float, **check: object) -> None:
    print(json.dumps({"seconds": seconds, "check": check}), flush=True)
