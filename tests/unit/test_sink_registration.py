"""A sink's identity and its registration as an output operation: the identity is
`name=`, else derived from what the sink writes to, never from the order of
registration; one sink instance registered twice, and two sinks that would share
an identity (or a Kafka transactional id or group), are refused when registered."""

from __future__ import annotations

import sqlite3
from typing import Any, Iterator

import pytest

from ingest import Batch, ConfigError, ManualClock, StreamingContext
from ingest.sinks import DedupeSink, KafkaTransactionalSink, SqlSink


def write_rows(cur: Any, batch: Batch[Any]) -> None:
    pass


def write_other_rows(cur: Any, batch: Batch[Any]) -> None:
    pass


class Writer:
    def __call__(self, cur: Any, batch: Batch[Any]) -> None:
        pass


def connect() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


def kafka_sink(transactional_id: str = "tx", group_id: str = "g", **options: Any) -> KafkaTransactionalSink:
    return KafkaTransactionalSink("out", producer_config={"bootstrap.servers": "unused:9092"},
                                  transactional_id=transactional_id, group_id=group_id, **options)


@pytest.fixture
def ssc() -> Iterator[StreamingContext]:
    context = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False)
    yield context
    context.stop(graceful=False, timeout=10)


# --------------------------------------------------------------------------- identity


def test_a_sql_sinks_identity_is_its_write_functions_qualified_name() -> None:
    assert SqlSink(connect, write_rows).sink_id == f"{__name__}.write_rows"
    assert DedupeSink(connect, write_rows).sink_id == f"{__name__}.write_rows"
    assert SqlSink(connect, Writer()).sink_id == f"{__name__}.Writer"


def test_a_kafka_sinks_identity_is_its_transactional_id() -> None:
    assert kafka_sink("tx-orders").sink_id == "tx-orders"


def test_an_explicit_name_is_the_identity() -> None:
    assert SqlSink(connect, write_rows, name="orders").sink_id == "orders"
    assert kafka_sink(name="orders-out").sink_id == "orders-out"


@pytest.mark.parametrize("name", ["", "x" * 201, "bad\nname"])
def test_an_unusable_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="sink name .* is not usable"):
        SqlSink(connect, write_rows, name=name)


def test_the_identity_does_not_depend_on_the_order_of_registration(ssc: StreamingContext) -> None:
    stream = ssc.queue_stream([["a"]])
    stream.pprint()  # an output registered before the sink changes nothing
    sink = SqlSink(connect, write_rows)
    op = stream.foreach_batch(sink)

    assert sink.sink_id == f"{__name__}.write_rows"
    assert op.name == f"sink {__name__}.write_rows"


# --------------------------------------------------------------------------- registration


def test_one_sink_instance_registered_twice_is_refused(ssc: StreamingContext) -> None:
    sink = SqlSink(connect, write_rows)
    ssc.queue_stream([["a"]]).foreach_batch(sink)

    with pytest.raises(ConfigError, match=r"already registered as output operation #1 .* create one sink per"):
        ssc.queue_stream([["b"]]).foreach_batch(sink)


def test_two_sinks_with_one_derived_identity_are_refused_with_a_hint_to_name_them(ssc: StreamingContext) -> None:
    stream = ssc.queue_stream([["a"]])
    stream.foreach_batch(SqlSink(connect, write_rows))

    with pytest.raises(ConfigError, match=rf"claim the sink identity '{__name__}.write_rows'.*Give each sink its "
                                          "own name="):
        stream.foreach_batch(DedupeSink(connect, write_rows))


def test_two_sinks_with_one_write_function_and_their_own_names_are_accepted(ssc: StreamingContext) -> None:
    stream = ssc.queue_stream([["a"]])
    stream.foreach_batch(SqlSink(connect, write_rows, name="left"))
    stream.foreach_batch(SqlSink(connect, write_rows, name="right"))
    stream.foreach_batch(SqlSink(connect, write_other_rows))

    assert len(ssc._graph.outputs) == 3


def test_two_kafka_sinks_with_one_transactional_id_are_refused_even_with_names(ssc: StreamingContext) -> None:
    stream = ssc.queue_stream([["a"]])
    stream.foreach_batch(kafka_sink("tx", "g1", name="one"))

    with pytest.raises(ConfigError, match="claim the Kafka transactional id 'tx'"):
        stream.foreach_batch(kafka_sink("tx", "g2", name="two"))


def test_two_kafka_sinks_committing_to_one_group_are_refused(ssc: StreamingContext) -> None:
    stream = ssc.queue_stream([["a"]])
    stream.foreach_batch(kafka_sink("tx-1", "g"))

    with pytest.raises(ConfigError, match="claim the Kafka consumer group 'g'"):
        stream.foreach_batch(kafka_sink("tx-2", "g"))


def test_a_plain_function_can_be_registered_twice(ssc: StreamingContext) -> None:
    seen: list[int] = []

    def record(batch: Batch[Any]) -> None:
        seen.append(batch.time)

    stream = ssc.queue_stream([["a"]])
    stream.foreach_batch(record)
    stream.foreach_batch(record)
    ssc.start()
    ssc.step()

    assert seen == [1000, 1000]
