"""Kafka code shared by the direct stream, the consumer-group receiver and the
Kafka sink, in one place:

- `config`: checks of user-given client properties (security settings included),
  their kafka-python names (`kafka_python_config`), and redaction of secrets;
- `records`: `KafkaRecord` and the conversion of each client's messages to it;
- `lazy_records`: a range's records converted as they are iterated;
- `deserializers`: key/value decoders and the decode-error policies;
- `calls`: every broker call with a deadline, retrying retriable errors;
- `clients`: driver-side clients (metadata, watermarks, group offsets,
  commits) and the executor-side range readers, for confluent-kafka and kafka-python;
- `errors`: `DataLossError`, for ranges that are no longer in Kafka;
- `committer`: group commits off the caller's thread, bounded, newest first;
- `stall`: notices when a source makes no progress and says why.

No Kafka client library is imported when this package is: only when a client
is built. The core (context, graph, dataset, scheduler, state, window,
checkpoint, storage, batch_log) never imports this package.
"""

from ingest.kafka.config import check_common, kafka_python_config, redact
from ingest.kafka.records import KafkaRecord

__all__ = ["KafkaRecord", "check_common", "kafka_python_config", "redact"]
