"""Mistakes a user makes on day one get a ConfigError naming the setting and the fix,
raised where the mistake is made (the CLI's are in tests/integration/test_cli.py and
test_checkpoint_cli.py; Kafka's in tests/integration/test_kafka_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import ConfigError, StreamingContext


def test_a_batch_interval_of_0_names_the_setting_and_a_valid_value() -> None:
    with pytest.raises(ConfigError, match=r"batch_interval must be a positive number of seconds, got 0: "
                                          r"pass e\.g\. batch_interval=1\.0"):
        StreamingContext(batch_interval=0, stop_on_signal=False)


def test_a_batch_interval_given_as_text_says_to_pass_a_number() -> None:
    with pytest.raises(ConfigError, match=r"batch_interval must be a positive number of seconds, got '1' \(a str\): "
                                          r"pass a number, e\.g\. batch_interval=1\.0"):
        StreamingContext(batch_interval="1", stop_on_signal=False)  # type: ignore[arg-type]


def test_the_write_ahead_log_without_a_checkpoint_says_to_set_one() -> None:
    ssc = StreamingContext(batch_interval=1.0, write_ahead_log=True, stop_on_signal=False)
    ssc.queue_stream([[1]]).pprint()
    with pytest.raises(ConfigError, match=r"write_ahead_log=True needs a checkpoint directory: "
                                          r"call ssc\.checkpoint\(directory\)"):
        ssc.start()


def test_a_checkpoint_directory_that_is_a_file_is_refused_when_set(tmp_path: Path) -> None:
    path = tmp_path / "job"
    path.write_text("a file")
    ssc = StreamingContext(batch_interval=1.0, stop_on_signal=False)
    with pytest.raises(ConfigError, match=f"{path} is a file, not a directory: name a directory"):
        ssc.checkpoint(str(path))


def test_get_or_create_on_a_file_is_refused_the_same_way(tmp_path: Path) -> None:
    path = tmp_path / "job"
    path.write_text("a file")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        StreamingContext.get_or_create(str(path), lambda: StreamingContext(batch_interval=1.0, stop_on_signal=False))
