"""Faults that partition tasks cause on the Dask worker running them, once:
a marker file makes "the first time any worker reaches this record" hold
across worker processes and task retries."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable


def once_per_marker(marker: Path, record: int, action: Callable[[], None]) -> Callable[[int], int]:
    """A task that does `action` the first time any worker reaches `record`;
    the marker then holds "<pid> <worker address>" of that worker."""
    def task(x: int) -> int:
        if x == record:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return x
            from distributed import get_worker

            os.write(fd, f"{os.getpid()} {get_worker().address}".encode())
            os.close(fd)
            action()
        return x
    return task


def kill_this_worker() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
