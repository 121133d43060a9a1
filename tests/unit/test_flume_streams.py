"""Construction of the Flume streams: configuration errors are raised at once, and
stored (headers, body) pairs become what the stream yields."""

from __future__ import annotations

import pickle

import pytest

from ingest.errors import ConfigError
from receivers import FlumeEvent, flume_polling_stream, flume_stream
from receivers.flume.push import ToEvents


@pytest.mark.parametrize("host, port", [("", 41414), ("127.0.0.1", 70000), ("127.0.0.1", "41414"),
                                        ("127.0.0.1", True)])
def test_a_bad_listening_address_is_refused_at_construction(make_context, host, port):
    with pytest.raises(ConfigError, match="flume_stream"):
        flume_stream(make_context(), host, port)


@pytest.mark.parametrize("options, message", [
    ({"addresses": []}, "addresses"),
    ({"addresses": [("127.0.0.1",)]}, "addresses"),
    ({"addresses": [("127.0.0.1", 0)]}, "addresses"),
    ({"addresses": [("127.0.0.1", 1)], "max_batch_size": 0}, "max_batch_size"),
    ({"addresses": [("127.0.0.1", 1)], "parallelism": 0}, "parallelism"),
])
def test_bad_polling_options_are_refused_at_construction(make_context, options, message):
    with pytest.raises(ConfigError, match=message):
        flume_polling_stream(make_context(), **options)


def test_an_unknown_deserializer_is_refused_at_construction(make_context):
    with pytest.raises(ConfigError, match="value_deserializer"):
        flume_stream(make_context(), "127.0.0.1", 41414, value_deserializer="yaml")


def test_stored_pairs_become_events_or_decoded_bodies():
    from ingest.kafka.deserializers import deserializer_for

    raw = ({"host": "h"}, b'{"n": 1}')
    assert ToEvents(None, False)(raw) == FlumeEvent({"host": "h"}, b'{"n": 1}')
    assert ToEvents(deserializer_for("json", "v"), True)(raw) == {"n": 1}
    assert pickle.loads(pickle.dumps(ToEvents(deserializer_for("utf-8", "v"), False)))(raw).body == '{"n": 1}'
