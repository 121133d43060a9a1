"""Exactly-once sinks: they write a batch's results together with its source
positions in one transaction, and skip a batch they already wrote.

- `SqlSink`: any DB-API database (SQLite, PostgreSQL, ...);
- `KafkaTransactionalSink`: a Kafka topic, with the input offsets committed in
  the same Kafka transaction (`send_offsets_to_transaction`).
"""

from ingest.sinks.kafka import KafkaTransactionalSink
from ingest.sinks.sql import SqlSink

__all__ = ["KafkaTransactionalSink", "SqlSink"]
