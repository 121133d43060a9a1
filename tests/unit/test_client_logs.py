"""The relay of Kafka client logs: a repeated message once, then once a minute with a
count; client errors at WARNING, chatter at DEBUG; the most frequent error remembered."""

from __future__ import annotations

import logging

import pytest

from ingest.kafka.client_logs import ClientLogRelay, with_client_logs


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


REFUSED = ("FAIL [rdkafka#consumer-{n}] [thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to "
           "ipv4#127.0.0.1:1 failed: Connection refused (after {ms}ms in state CONNECT)")


@pytest.fixture
def relay(caplog: pytest.LogCaptureFixture) -> tuple[ClientLogRelay, Clock]:
    caplog.set_level(logging.DEBUG, logger="ingest.kafka.client")
    clock = Clock()
    return ClientLogRelay(clock=clock), clock


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "ingest.kafka.client"]


def test_a_message_repeated_by_many_clients_is_logged_once_a_minute_with_a_count(relay, caplog) -> None:
    r, clock = relay
    for i in range(300):  # five a second for a minute, from three client instances
        clock.now = i * 0.2
        r.log(logging.ERROR, "%s [%s] %s", "FAIL", f"rdkafka#consumer-{i % 3}",
              REFUSED.format(n=i % 3, ms=i % 7).split("] ", 1)[1])
    clock.now = 61.0
    r.relay(logging.ERROR, REFUSED.format(n=1, ms=0))
    logged = lines(caplog)
    assert len(logged) == 2
    assert logged[0][0] == logging.WARNING and "Connection refused" in logged[0][1]
    assert logged[1][1].endswith("(and 299 more like it in the last 60 s)")


def test_different_messages_are_each_logged(relay, caplog) -> None:
    r, _ = relay
    r.relay(logging.ERROR, "Connect to ipv4#127.0.0.1:1 failed: Connection refused")
    r.relay(logging.WARNING, "Metadata request failed: Local: Timed out")
    assert [text for _, text in lines(caplog)] == ["Connect to ipv4#127.0.0.1:1 failed: Connection refused",
                                                   "Metadata request failed: Local: Timed out"]


def test_client_chatter_is_debug_and_errors_are_warnings(relay, caplog) -> None:
    r, _ = relay
    r.relay(logging.INFO, "kafka.net.manager: Attempting bootstrap to bootstrap-0 at 127.0.0.1:1")
    r.relay(logging.CRITICAL, "fatal: something")
    assert [level for level, _ in lines(caplog)] == [logging.DEBUG, logging.WARNING]


def test_the_last_problem_is_the_error_reported_most_often(relay) -> None:
    r, clock = relay
    assert r.last_problem is None
    for _ in range(3):
        r.relay(logging.ERROR, "Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    r.relay(logging.ERROR, "Bootstrap failed: KafkaTimeoutError: Unable to bootstrap")
    r.relay(logging.WARNING, "not ready; waiting 0.10 secs")
    assert r.last_problem == "Connection failed: KafkaConnectionError: 111 ECONNREFUSED"


def test_a_logger_the_application_set_is_kept() -> None:
    mine = logging.getLogger("my.kafka")
    assert with_client_logs({"bootstrap.servers": "b:9092", "logger": mine})["logger"] is mine
    assert isinstance(with_client_logs({"bootstrap.servers": "b:9092"})["logger"], ClientLogRelay)
