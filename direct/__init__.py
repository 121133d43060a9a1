"""The receiver-less direct Kafka stream: per-batch offset ranges read by partition tasks."""
