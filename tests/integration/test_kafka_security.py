"""Production Kafka: the direct stream, the consumer-group receiver and both
exactly-once sinks over SASL_PLAINTEXT (SCRAM-SHA-512) and over TLS, on a real
broker (the `kafka_sasl_bootstrap` / `kafka_tls_bootstrap` fixtures), with both
clients where the code supports them; and the mistakes made with those
settings, each one error within 15 s that names the cause and the setting,
never showing a secret.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from direct import kafka_direct_stream
from ingest import ConfigError, IngestError, SourceError
from ingest.batch import Batch
from ingest.dataset import Dataset
from ingest.kafka.clients import make_client
from ingest.sinks import KafkaTransactionalSink, SqlSink
from ingest.testing import kafka_python_config
from ingest.testing.kafka import create_topic, produce, read_to_end
from ingest.testing.tls import write_ca
from receivers import kafka_stream
from offsets import KafkaRanges, OffsetRange
from receivers.kafka import KafkaReceiver

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.filterwarnings(r"ignore:(read|open)_text is deprecated:DeprecationWarning"),
]

ERROR_WITHIN = 15.0  # seconds from the first broker call to the error the user sees


@pytest.fixture(params=["sasl", "tls"])
def listener(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of one secured listener: SASL_PLAINTEXT/SCRAM-SHA-512, or SSL."""
    return request.getfixturevalue(f"kafka_{request.param}_bootstrap")


@pytest.fixture(params=["confluent", "kafka-python"])
def client(request: pytest.FixtureRequest) -> str:
    return request.param


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def new_topic(settings: dict[str, str], prefix: str, partitions: int = 2) -> str:
    name = unique(prefix)
    create_topic(settings["bootstrap.servers"], name, partitions, client_config=settings)
    return name


def send(settings: dict[str, str], topic: str, values: list[str]) -> list[tuple[int, int]]:
    return produce(settings["bootstrap.servers"], topic, values, config=settings)


def in_topic(settings: dict[str, str], topic: str) -> list[tuple[int, int, bytes | None]]:
    return [(r.partition, r.offset, r.value)
            for r in read_to_end(settings["bootstrap.servers"], topic, config=settings)]


def committed(settings: dict[str, str], group: str, topic: str, partitions: int = 2) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings, "group.id": group, "enable.auto.commit": False})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def end_offsets(settings: dict[str, str], topic: str) -> dict[int, int]:
    ends: dict[int, int] = {}
    for partition, offset, _value in in_topic(settings, topic):
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


# --------------------------------------------------------------------------- the fixtures themselves


def test_the_fixtures_give_confluent_kafka_settings_of_a_secured_listener(
        kafka_sasl_bootstrap: dict[str, str], kafka_tls_bootstrap: dict[str, str]) -> None:
    assert kafka_sasl_bootstrap["security.protocol"] == "SASL_PLAINTEXT"
    assert kafka_sasl_bootstrap["sasl.mechanism"] == "SCRAM-SHA-512"
    assert kafka_sasl_bootstrap["sasl.username"] and kafka_sasl_bootstrap["sasl.password"]
    assert kafka_tls_bootstrap["security.protocol"] == "SSL"
    assert Path(kafka_tls_bootstrap["ssl.ca.location"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert kafka_sasl_bootstrap["bootstrap.servers"] != kafka_tls_bootstrap["bootstrap.servers"]


def test_kafka_python_config_turns_the_settings_into_kafka_python_arguments(
        kafka_sasl_bootstrap: dict[str, str], kafka_tls_bootstrap: dict[str, str]) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    sasl = kafka_python_config(kafka_sasl_bootstrap)
    assert sasl == {"bootstrap_servers": [kafka_sasl_bootstrap["bootstrap.servers"]],
                    "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_plain_username": kafka_sasl_bootstrap["sasl.username"],
                    "sasl_plain_password": kafka_sasl_bootstrap["sasl.password"]}
    assert kafka_python_config(kafka_tls_bootstrap)["ssl_cafile"] == kafka_tls_bootstrap["ssl.ca.location"]
    for settings in (kafka_sasl_bootstrap, kafka_tls_bootstrap):  # kafka-python itself reaches the broker with them
        topic = new_topic(settings, "kp-config", partitions=1)
        producer = KafkaProducer(**kafka_python_config(settings), acks="all")
        producer.send(topic, b"from kafka-python").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(**kafka_python_config(settings))
        assert topic in consumer.topics()
        consumer.close()
        assert [v for _p, _o, v in in_topic(settings, topic)] == [b"from kafka-python"]


# --------------------------------------------------------------------------- sources and sinks


def test_the_direct_stream_reads_exactly_what_was_produced_and_commits_the_group(
        make_context: Any, listener: dict[str, str], client: str) -> None:
    topic, group = new_topic(listener, "secure-direct"), unique("group")
    send(listener, topic, [f"v{i}" for i in range(40)])
    ssc = make_context(log_batches=False)
    stream = kafka_direct_stream(ssc, [topic], client=client, name="events",
                                 kafka_params={**listener, "group.id": group, "auto.offset.reset": "earliest"})
    seen: list[Any] = []
    stream.foreach_batch(lambda batch: seen.extend(batch.collect()))
    ssc.start()
    ssc.step()
    assert stream.flush_commits(30)
    ssc.stop()
    assert sorted((r.partition, r.offset, r.value) for r in seen) == in_topic(listener, topic)
    assert len(seen) == 40
    assert committed(listener, group, topic) == end_offsets(listener, topic)


def test_the_consumer_group_receiver_receives_every_record_and_commits(
        make_context: Any, tmp_path: Path, listener: dict[str, str], wait_until: Any) -> None:
    topic, group = new_topic(listener, "secure-receiver"), unique("group")
    positions = send(listener, topic, [f"r{i}" for i in range(30)])
    ssc = make_context(log_batches=False, write_ahead_log=True)
    ssc.checkpoint(str(tmp_path / "checkpoint"))
    stream = kafka_stream(ssc, [topic], {**listener, "group.id": group, "auto.offset.reset": "earliest",
                                         "session.timeout.ms": 6000}, name="events", block_records=10)
    seen: list[Any] = []
    stream.foreach_batch(lambda batch: seen.extend(batch.collect()))
    ssc.start()
    wait_until(lambda: stream.records_received >= 30, timeout=60, what="30 records received")
    ssc.step()
    wait_until(lambda: committed(listener, group, topic) == end_offsets(listener, topic), timeout=30,
               what="the group's offsets at the end of the topic")
    ssc.stop()
    assert sorted((r.partition, r.offset) for r in seen) == sorted(positions)
    assert sorted((r.partition, r.offset, r.value) for r in seen) == in_topic(listener, topic)


def test_the_sql_sink_writes_each_record_once_with_the_direct_stream(
        make_context: Any, tmp_path: Path, listener: dict[str, str], client: str) -> None:
    topic = new_topic(listener, "secure-sql")
    send(listener, topic, [f"s{i}" for i in range(25)])
    database = tmp_path / "out.db"

    def write(cursor: Any, batch: Any) -> None:
        cursor.execute("CREATE TABLE IF NOT EXISTS events (part INTEGER, off INTEGER, value BLOB)")
        cursor.executemany("INSERT INTO events VALUES (?, ?, ?)",
                           [(r.partition, r.offset, r.value) for r in batch.collect()])

    def run(steps: int) -> None:
        ssc = make_context(log_batches=False)
        sink = SqlSink(lambda: sqlite3.connect(database), write)
        stream = kafka_direct_stream(ssc, [topic], client=client, name="events", offset_store=sink,
                                     commit_offsets=False, max_rate_per_partition=8,
                                     kafka_params={**listener, "group.id": unique("group"),
                                                   "auto.offset.reset": "earliest"})
        stream.foreach_batch(sink)
        ssc.start()
        ssc.step(steps)
        ssc.stop()
        sink.close()

    run(1)  # part of the topic, then a restart that resumes from the sink's offsets
    run(4)
    with sqlite3.connect(database) as conn:
        rows = sorted(conn.execute("SELECT part, off, value FROM events"))
    assert rows == in_topic(listener, topic)


def test_the_transactional_sink_writes_the_batch_and_its_offsets_in_one_transaction(
        make_context: Any, listener: dict[str, str], client: str) -> None:
    source, out, group = new_topic(listener, "secure-tx-in"), new_topic(listener, "secure-tx-out"), unique("group")
    send(listener, source, [f"t{i}" for i in range(20)])
    ssc = make_context(log_batches=False)
    stream = kafka_direct_stream(ssc, [source], client=client, name="events", commit_offsets=False,
                                 kafka_params={**listener, "group.id": group, "auto.offset.reset": "earliest"})
    sink = KafkaTransactionalSink(out, producer_config=listener, transactional_id=unique("tx"), group_id=group)
    stream.map(lambda r: (r.key, r.value.upper())).foreach_batch(sink)
    ssc.start()
    ssc.step()
    ssc.stop()
    sink.close()
    assert sorted(v for _p, _o, v in in_topic(listener, out)) == sorted(f"T{i}".encode() for i in range(20))
    assert committed(listener, group, source) == end_offsets(listener, source)


# --------------------------------------------------------------------------- mistakes


def first_broker_call_error(kafka_params: dict[str, str], client: str) -> tuple[str, float]:
    """The error of a new client's first broker call, and how long it took."""
    started = time.monotonic()
    kafka = make_client(client, kafka_params)
    try:
        with pytest.raises(SourceError) as caught:
            kafka.list_topics(timeout=300)  # a retried failure would take 300 s: it must fail at once
    finally:
        kafka.close()
    return str(caught.value), time.monotonic() - started


def no_secret_in(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def test_a_wrong_password_is_one_error_saying_authentication_failed(
        kafka_sasl_bootstrap: dict[str, str], client: str, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "not-the-password-1234"
    caplog.set_level(logging.WARNING)
    message, took = first_broker_call_error({**kafka_sasl_bootstrap, "sasl.password": wrong}, client)
    assert "authentication failed" in message
    assert took < ERROR_WITHIN
    assert "sasl.password" in message and "sasl.username" in message
    no_secret_in(message + caplog.text, wrong, kafka_sasl_bootstrap["sasl.password"])


def test_an_untrusted_certificate_is_one_error_saying_certificate_verify_failed(
        kafka_tls_bootstrap: dict[str, str], client: str, tmp_path: Path) -> None:
    other_ca = write_ca(tmp_path / "other-ca.pem")
    message, took = first_broker_call_error({**kafka_tls_bootstrap, "ssl.ca.location": str(other_ca)}, client)
    assert took < ERROR_WITHIN
    assert "certificate verify failed" in message
    assert f"ssl.ca.location={other_ca}" in message and "kafka_params['ssl.ca.location']" in message


def test_a_mechanism_the_broker_does_not_offer_is_one_error_naming_the_mechanism(
        kafka_sasl_bootstrap: dict[str, str], client: str) -> None:
    message, took = first_broker_call_error({**kafka_sasl_bootstrap, "sasl.mechanism": "SCRAM-SHA-256"}, client)
    assert took < ERROR_WITHIN
    assert "does not offer SASL mechanism 'SCRAM-SHA-256'" in message
    assert "kafka_params['sasl.mechanism']" in message


def test_the_direct_stream_stops_at_start_on_a_wrong_password_without_retrying(
        make_context: Any, kafka_sasl_bootstrap: dict[str, str], client: str) -> None:
    ssc = make_context(log_batches=False)
    stream = kafka_direct_stream(ssc, ["any"], client=client, kafka_params={
        **kafka_sasl_bootstrap, "sasl.password": "wrong-password-5678", "group.id": unique("group")})
    stream.foreach_batch(lambda batch: None)
    started = time.monotonic()
    with pytest.raises(SourceError, match="authentication failed") as caught:
        ssc.start()
    assert time.monotonic() - started < ERROR_WITHIN
    assert "gave up after broker_wait_timeout" not in str(caught.value)
    no_secret_in(str(caught.value), "wrong-password-5678")


@pytest.mark.parametrize("setting", ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location"])
def test_a_missing_certificate_file_is_refused_when_the_stream_is_built(
        make_context: Any, tmp_path: Path, client: str, setting: str) -> None:
    missing = tmp_path / "no-such.pem"
    with pytest.raises(ConfigError) as caught:
        kafka_direct_stream(make_context(), ["any"], client=client, kafka_params={
            "bootstrap.servers": "127.0.0.1:9", "security.protocol": "SSL", setting: str(missing),
            "group.id": "g"})
    assert f"kafka_params[{setting!r}]: {missing} does not exist" in str(caught.value)


def test_a_missing_ca_file_is_refused_by_the_receiver_and_the_sink_when_built(tmp_path: Path) -> None:
    settings = {"bootstrap.servers": "127.0.0.1:9", "security.protocol": "SSL",
                "ssl.ca.location": str(tmp_path / "gone.pem")}
    with pytest.raises(ConfigError, match=r"ssl.ca.location.*gone.pem does not exist"):
        KafkaReceiver(["t"], {**settings, "group.id": "g"})
    with pytest.raises(ConfigError, match=r"producer_config\['ssl.ca.location'\].*gone.pem does not exist"):
        KafkaTransactionalSink("t", producer_config=settings, transactional_id="tx", group_id="g")


def test_an_unknown_sasl_mechanism_is_refused_when_the_stream_is_built(make_context: Any) -> None:
    with pytest.raises(ConfigError, match=r"'SCRAM-SHA-1024' is not a SASL mechanism Kafka knows"):
        kafka_direct_stream(make_context(), ["any"], kafka_params={
            "bootstrap.servers": "127.0.0.1:9", "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-1024", "group.id": "g"})


def test_secrets_never_reach_the_logs_of_a_job(
        make_context: Any, kafka_sasl_bootstrap: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    topic = new_topic(kafka_sasl_bootstrap, "secure-logs", partitions=1)
    send(kafka_sasl_bootstrap, topic, ["x"])
    ssc = make_context()
    params = {**kafka_sasl_bootstrap, "group.id": unique("group"), "auto.offset.reset": "earliest",
              "ssl.key.password": "key-password-9876"}
    stream = kafka_direct_stream(ssc, [topic], kafka_params=params)
    stream.foreach_batch(lambda batch: batch.collect())
    ssc.start()
    ssc.step()
    ssc.stop()
    assert "connected to" in caplog.text  # the stream did log its parameters, redacted
    no_secret_in(caplog.text, kafka_sasl_bootstrap["sasl.password"], "key-password-9876")


@pytest.fixture(params=["wrong password", "untrusted certificate"])
def mistaken(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], str]:
    """Settings with one mistake, and the words the error must say."""
    if request.param == "wrong password":
        settings = request.getfixturevalue("kafka_sasl_bootstrap")
        return {**settings, "sasl.password": "wrong-password-2468"}, "authentication failed"
    settings = request.getfixturevalue("kafka_tls_bootstrap")
    return {**settings, "ssl.ca.location": str(write_ca(tmp_path / "other-ca.pem"))}, "certificate verify failed"


def test_the_receiver_stops_the_job_with_the_cause_of_a_refused_handshake(
        make_context: Any, mistaken: tuple[dict[str, str], str]) -> None:
    settings, cause = mistaken
    ssc = make_context(log_batches=False)
    stream = kafka_stream(ssc, ["any"], {**settings, "group.id": unique("group")}, name="events")
    stream.foreach_batch(lambda batch: None)
    started = time.monotonic()
    ssc.start()
    with pytest.raises(IngestError) as caught:
        ssc.await_termination(timeout=ERROR_WITHIN)
    assert time.monotonic() - started < ERROR_WITHIN
    assert cause in str(caught.value)
    no_secret_in(str(caught.value), "wrong-password-2468")


def test_the_transactional_sink_fails_the_batch_with_the_cause_of_a_refused_handshake(
        mistaken: tuple[dict[str, str], str]) -> None:
    settings, cause = mistaken
    sink = KafkaTransactionalSink("out", producer_config=settings, transactional_id=unique("tx"),
                                  group_id=unique("group"))
    batch = Batch(1000, Dataset.from_records([("k", "v")]),
                  positions={"input": KafkaRanges((OffsetRange("in", 0, 0, 1),))})
    started = time.monotonic()
    with pytest.raises(SourceError, match=cause) as caught:
        sink(batch)
    assert time.monotonic() - started < ERROR_WITHIN
    assert "producer_config[" in str(caught.value)
    no_secret_in(str(caught.value), "wrong-password-2468")
    sink.close()


def test_undecodable_records_reach_the_dead_letter_topic_over_the_same_secured_listener(
        make_context: Any, listener: dict[str, str]) -> None:
    from direct import DeadLetterTopic

    topic, dlq = new_topic(listener, "secure-decode", partitions=1), new_topic(listener, "secure-dlq", partitions=1)
    send(listener, topic, ['{"n": 1}', "not json", '{"n": 2}'])
    ssc = make_context(log_batches=False)
    stream = kafka_direct_stream(ssc, [topic], value_deserializer="json", on_decode_error=DeadLetterTopic(dlq),
                                 kafka_params={**listener, "group.id": unique("group"),
                                               "auto.offset.reset": "earliest"})
    seen: list[Any] = []
    stream.foreach_batch(lambda batch: seen.extend(r.value for r in batch.collect()))
    ssc.start()
    ssc.step()
    ssc.stop()
    assert seen == [{"n": 1}, {"n": 2}]
    assert [v for _p, _o, v in in_topic(listener, dlq)] == [b"not json"]
