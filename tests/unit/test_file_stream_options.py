"""`storage_options` of file streams: they reach the directory's storage
backend, and (they may hold credentials) never its description, metrics,
the context's status or the logs."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import pytest

import ingest.storage
from ingest import ManualClock, StreamingContext
from ingest.errors import ConfigError
from ingest.storage import LocalStorage, Storage

SECRET = "s3cr3t-value-never-shown"


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> list[Mapping[str, Any]]:
    """A `memo://` backend over a local directory that records the options it was built with."""
    seen: list[Mapping[str, Any]] = []

    def make(url: str, options: Mapping[str, Any]) -> Storage:
        seen.append(dict(options))
        storage = LocalStorage(str(tmp_path), create=False)
        storage.url = url
        return storage

    monkeypatch.setitem(ingest.storage._BACKENDS, "memo", make)
    return seen


@pytest.mark.parametrize("factory", ["text_file_stream", "binary_records_stream", "file_stream"])
def test_storage_options_reach_the_backend_and_are_never_shown(backend, factory, caplog):
    caplog.set_level(logging.DEBUG)
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    options = {"endpoint_url": "http://127.0.0.1:1", "aws_secret_access_key": SECRET}
    extra: dict[str, Any] = {"record_length": 4} if factory == "binary_records_stream" else {}
    if factory == "file_stream":
        extra["reader"] = lambda f: [f.read()]
    stream = getattr(ssc, factory)("memo://bucket/in", storage_options=options, **extra)
    stream.foreach_batch(lambda batch: batch.collect())
    try:
        ssc.start()
        ssc.step()
        assert backend == [options]
        shown = [stream.describe(), repr(stream.metrics()), repr(ssc.status())]
        shown += [r.getMessage() for r in caplog.records]
        assert not [text for text in shown if SECRET in text]
    finally:
        ssc.stop(graceful=False, timeout=5)


def test_storage_options_for_a_local_directory_or_not_a_mapping_are_config_errors(tmp_path):
    ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False)
    with pytest.raises(ConfigError, match="takes none"):
        ssc.text_file_stream(str(tmp_path), storage_options={"user": "etl"})
    with pytest.raises(ConfigError, match="storage_options must be a mapping"):
        ssc.text_file_stream(str(tmp_path), storage_options=["user"])  # type: ignore[arg-type]
