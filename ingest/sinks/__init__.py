"""Exactly-once sinks: they write a batch's results together with its source
positions in one transaction, and skip a batch they already applied, by one
shared rule (`ingest.sinks.applied`).

- `SqlSink`: any DB-API database (SQLite, PostgreSQL, ...), for direct Kafka
  streams (offsets) and replayable sources (batch time);
- `DedupeSink`: a `SqlSink` that also stores the ids of the received blocks
  (and Flume sequence numbers) it wrote, for receiver streams;
- `KafkaTransactionalSink`: a Kafka topic, with the input offsets committed in
  the same Kafka transaction (`send_offsets_to_transaction`).

A sink's identity (`name=`, else derived from what it writes to) keys what it
stores; see `ingest.sinks.identity`.
"""

from ingest.sinks.dedupe import DedupeSink
from ingest.sinks.kafka import KafkaTransactionalSink
from ingest.sinks.sql import SqlSink

__all__ = ["DedupeSink", "KafkaTransactionalSink", "SqlSink"]
