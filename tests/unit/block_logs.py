"""Helpers of the block-log tests (test_block_log.py, test_block_retention.py): the
stream they log, a clock the WAL reads, and what they read back from a log. The
`opened` fixture that opens logs is in this folder's conftest.py."""

from __future__ import annotations

import os
from typing import Any, Callable

from receivers.block import BlockInfo
from receivers.block_log import BlockLog

STREAM = "events"


class FakeClock:
    """Monotonic seconds for the WAL: segments roll by age only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ids(infos: list[BlockInfo]) -> list[str]:
    return [i.block_id for i in infos]


def segment_numbers(log: BlockLog) -> list[int]:
    return [int(os.path.basename(p)[len("blocks-"):-len(".wal")]) for p in log.wal.segments]


def reopen(log: BlockLog, opened: Callable[..., BlockLog], **wal_options: Any) -> BlockLog:
    log.close()
    return opened(**wal_options)
