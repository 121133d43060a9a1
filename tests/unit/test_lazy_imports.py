"""Start-up cost: the packages' names load their modules on first use.

`import ingest` and the `ingest` command should cost next to nothing, a
context without a UI should not load the HTTP server, and a job should load
only the source it uses. Every public name still imports as before. What is
in `sys.modules` is checked in a fresh interpreter (this one has imported
everything already).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = str(pathlib.Path(__file__).resolve().parents[2])

# Modules that are costly to import and that a job needs only for some
# feature: the web UI's HTTP server, process pools (cloudpickle), the
# checkpoint codec's crc32c (whose import reads installed metadata), entry
# point scanning, the CLI's parser, Dask, the storage backends' and sinks'
# clients, Avro, Kafka clients.
HEAVY = (
    "http.server", "ingest.ui.server", "ingest.ui.pages", "cloudpickle", "crc32c", "importlib.metadata", "argparse",
    "dask", "distributed", "boto3", "botocore", "hdfs", "fastavro", "sqlalchemy", "psycopg", "psycopg2",
    "confluent_kafka", "kafka", "ingest.kafka",
)

# Every name of the public API, as it was when the imports were eager: none may go missing.
INGEST_API = {
    "Batch", "BatchFailedError", "BatchInfo", "CheckpointError", "ConfigError", "CorruptRecordError",
    "DStream", "DaskExecutor", "Dataset", "IngestError", "InlineExecutor", "InputDStream", "ManualClock",
    "OutputOperationInfo", "ProcessExecutor", "ReceiverError", "ReceiverInfo", "SourceError", "StateError",
    "StorageError", "StreamingContext", "StreamingListener", "SystemClock", "TaskExecutor", "TaskFailedError",
    "ThreadExecutor",
}


def modules_after(code: str) -> set[str]:
    """The modules loaded once `code` ran in a fresh interpreter on this checkout."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Which of `names` (or their submodules) are among `modules`."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_the_public_api_keeps_every_name():
    import ingest

    assert set(ingest.__all__) == INGEST_API


@pytest.mark.parametrize("package", ["ingest", "ingest.ui", "offsets", "receivers", "direct"])
def test_every_name_in_all_imports_with_from_package_import(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        namespace: dict[str, object] = {}
        exec(f"from {package} import {name}", namespace)  # the statement users write
        assert namespace[name] is getattr(module, name), name


def test_a_public_name_is_the_object_its_module_defines():
    import ingest
    from ingest.context import StreamingContext
    from ingest.errors import IngestError

    assert ingest.StreamingContext is StreamingContext and ingest.IngestError is IngestError


def test_an_unknown_name_is_an_attribute_error():
    import ingest

    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        ingest.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from ingest import NoSuchThing", {})


def test_import_ingest_loads_none_of_its_modules_nor_a_heavy_one():
    modules = modules_after("import ingest")
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("offsets", "receivers", "direct")) == []
    assert sorted(m for m in modules if m.startswith("ingest")) == ["ingest"]


def test_a_context_without_ui_loads_no_heavy_module_nor_a_source_package():
    modules = modules_after("from ingest import StreamingContext\n"
                            "StreamingContext(1.0, stop_on_signal=False)")
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("receivers", "direct", "offsets.records", "ingest.checkpoint")) == []


def test_a_file_job_loads_neither_kafka_nor_the_receivers_machinery(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    modules = modules_after(
        "from ingest import ManualClock, StreamingContext\n"
        "ssc = StreamingContext(1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)\n"
        "seen = []\n"
        f"ssc.text_file_stream({str(tmp_path)!r}, new_files_only=False).foreach_batch(\n"
        "    lambda batch: seen.extend(batch.data.collect()))\n"
        "ssc.start(); ssc.step(); ssc.stop()\n"
        "assert seen == ['one', 'two'], seen")
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("direct.stream", "receivers.input", "receivers.wal", "receivers.kafka")) == []
    assert loaded(modules, ("ingest.checkpoint", "ingest.checkpoint_cli", "offsets.records")) == []  # none kept


def test_loading_the_source_plugins_loads_no_stream_implementation():
    modules = modules_after("from ingest.sources import load_source_packages, BUILTIN_SOURCE_MODULES\n"
                            "load_source_packages(BUILTIN_SOURCE_MODULES)")
    assert loaded(modules, HEAVY) == []
    assert loaded(modules, ("direct.stream", "direct.files", "receivers.input", "receivers.wal",
                            "receivers.kafka", "receivers.socket", "ingest.checkpoint")) == []


def test_the_cli_version_loads_no_heavy_module_but_its_parser():
    modules = modules_after("from ingest.cli import main\n"
                            "try:\n    main(['--version'])\nexcept SystemExit as exit:\n    assert not exit.code")
    assert loaded(modules, HEAVY) == ["argparse"]
    assert loaded(modules, ("receivers", "direct", "ingest.context")) == []
