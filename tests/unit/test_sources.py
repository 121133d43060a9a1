"""The stream-factory registry (`ingest.sources`): how the core offers the source
packages' streams without importing them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest

from ingest import sources
from ingest.checkpoint_cli import run_checkpoint_command
from ingest.fsck_checks import _checks as _fsck_checks, register_fsck_check
from ingest.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_pyproject_declares_exactly_the_builtin_source_modules_as_entry_points():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"][sources.ENTRY_POINT_GROUP]
    assert sorted(declared.values()) == sorted(sources.BUILTIN_SOURCE_MODULES)


def test_installed_entry_points_match_the_builtin_list_when_the_metadata_has_them():
    installed = {ep.value for ep in metadata.entry_points(group=sources.ENTRY_POINT_GROUP)
                 if ep.dist is not None and ep.dist.name == "ingest"}
    if not installed:
        pytest.skip("the installed ingest metadata predates the ingest.sources entry points (reinstall to check)")
    assert installed == set(sources.BUILTIN_SOURCE_MODULES)


def test_socket_text_stream_needs_only_the_core_import_and_loads_receivers_on_first_use():
    code = (
        "import sys\n"
        "from ingest import StreamingContext, ManualClock\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('receivers', 'direct')], sys.modules\n"
        "ssc = StreamingContext(1.0, clock=ManualClock())\n"
        "stream = ssc.socket_text_stream('127.0.0.1', 9, name='lines')\n"
        "print(type(stream).__module__, stream.name, 'receivers.plugin' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["receivers.input", "lines", "True"]


def test_every_builtin_source_registers_its_factories():
    names = set(sources.registered_stream_factories())
    assert {"receiver_stream", "socket_text_stream", "kafka_stream", "kafka_direct_stream", "text_file_stream",
            "binary_records_stream", "file_stream", "flume_stream", "flume_polling_stream"} <= names


def test_an_unknown_factory_is_a_config_error_naming_it_and_the_known_ones():
    with pytest.raises(ConfigError) as err:
        sources.stream_factory("mqtt_stream")
    message = str(err.value)
    assert "'mqtt_stream'" in message and "socket_text_stream" in message


def test_a_source_module_that_fails_to_import_is_named_when_its_factory_is_missing(monkeypatch):
    monkeypatch.setattr(sources, "_failed", {})
    assert sources.load_source_packages(["no_such_source_package.plugin"]) == []
    with pytest.raises(ConfigError, match="no_such_source_package.plugin failed to import: ModuleNotFoundError"):
        sources.stream_factory("no_such_stream")


def test_another_factory_under_a_taken_name_is_refused():
    sources.registered_stream_factories()

    def impostor(ssc, *args, **kwargs):
        raise AssertionError("never called")

    with pytest.raises(ConfigError, match="'socket_text_stream' is already registered by receivers.plugin"):
        sources.register_stream_factory("socket_text_stream", impostor)


def test_registering_the_same_factory_again_is_harmless():
    factory = sources.stream_factory("receiver_stream")
    sources.register_stream_factory("receiver_stream", factory)
    assert sources.stream_factory("receiver_stream") is factory


def test_stream_calls_the_named_factory_with_the_context_first(monkeypatch):
    from ingest import ManualClock, StreamingContext

    calls = []
    monkeypatch.setitem(sources._factories, "test_stream", lambda ssc, *a, **k: calls.append((ssc, a, k)) or "s")
    ssc = StreamingContext(1.0, clock=ManualClock())
    assert ssc.stream("test_stream", 1, topic="t") == "s"
    assert calls == [(ssc, (1,), {"topic": "t"})]


def test_fsck_runs_registered_checks_and_fails_on_their_problems(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ingest.fsck_checks._checks", list(_fsck_checks))

    def check(directory):
        return [f"{directory}/receivers/x/blocks.bounds: bad checksum"]

    register_fsck_check(check)
    register_fsck_check(check)
    (tmp_path / "offsets").mkdir()  # a checkpoint directory, if an empty one
    assert run_checkpoint_command("fsck", str(tmp_path)) == 1
    assert capsys.readouterr().out.count("blocks.bounds: bad checksum") == 1


def test_the_receivers_fsck_check_verifies_every_receiver_write_ahead_log(tmp_path, monkeypatch):
    from receivers import block_log, plugin

    for stream in ("lines", "events"):
        (tmp_path / "receivers" / stream).mkdir(parents=True)
    seen = []

    def verify(directory, checkpoint=None):
        seen.append(os.path.basename(directory))
        return [f"{directory}: segment 2 is missing"] if directory.endswith("lines") else []

    monkeypatch.setattr(block_log, "verify", verify)
    problems = list(plugin.check_write_ahead_logs(str(tmp_path)))
    assert seen == ["events", "lines"]
    assert problems == [f"{tmp_path}/receivers/lines: segment 2 is missing"]
