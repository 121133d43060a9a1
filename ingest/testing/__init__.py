"""Test support: real services (a Kafka broker) and the pytest plugin that offers them.

`kafka_python_config(settings)` turns the confluent-kafka settings of the
`kafka_sasl_bootstrap` / `kafka_tls_bootstrap` fixtures (Kafka's dotted names)
into kafka-python keyword arguments; it is `ingest.kafka.config.kafka_python_config`,
which jobs can use at run time too.
"""

from ingest.kafka.config import kafka_python_config

__all__ = ["kafka_python_config"]
