"""Fixtures shared by unit tests of this folder (the core's are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from block_logs import STREAM

from receivers.block_log import BlockLog


@pytest.fixture
def opened(tmp_path: Path):
    """`opened(**wal_options)` opens the block log of STREAM under tmp_path; every
    log opened is closed at the end."""
    logs: list[BlockLog] = []

    def open_log(**wal_options: Any) -> BlockLog:
        log = BlockLog(str(tmp_path), STREAM, **wal_options)
        logs.append(log)
        return log

    yield open_log
    for log in logs:
        log.close()
