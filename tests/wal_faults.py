"""Faults of the receivers' write-ahead log, shared by the unit and the integration
tests (this folder is on sys.path through its conftest.py)."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

import receivers.wal as wal_module


class DiskFull:
    """Makes the WAL's low-level write fail with ENOSPC while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.failures = 0
        real = wal_module._write_all

        def write_all(fd: int, buffers: Any, offset: int) -> None:
            if self.full:
                self.failures += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd, buffers, offset)

        monkeypatch.setattr(wal_module, "_write_all", write_all)
