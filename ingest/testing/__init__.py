"""Test support: real services (a Kafka broker) and the pytest plugin that offers them."""
