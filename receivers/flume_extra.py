"""The Flume receivers, loaded on first use: they need fastavro (the `flume`
extra), which nothing else in `receivers` does."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ingest.errors import ConfigError
from ingest.install_hint import install_hint


def flume_module() -> ModuleType:
    """`receivers.flume`, or a ConfigError saying how to install what it needs."""
    try:
        return importlib.import_module("receivers.flume")
    except ImportError as exc:
        raise ConfigError(f"Flume streams need fastavro ({exc}): {install_hint('flume')}") from exc


def flume_stream(ssc: Any, *args: Any, **options: Any) -> Any:
    """`receivers.flume_stream`: see its documentation."""
    return flume_module().flume_stream(ssc, *args, **options)


def flume_polling_stream(ssc: Any, *args: Any, **options: Any) -> Any:
    """`receivers.flume_polling_stream`: see its documentation."""
    return flume_module().flume_polling_stream(ssc, *args, **options)
