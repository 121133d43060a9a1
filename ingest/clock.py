"""Batch clocks.

The scheduler asks a clock for the time and waits on it for the next batch
time. `SystemClock` follows the wall clock; `ManualClock` only moves when a test
advances it, which makes batch-by-batch tests deterministic.
Times are integer milliseconds since the epoch, as batch times are.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class Clock:
    """Base class: a time source the scheduler can wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def now_ms(self) -> int:
        raise NotImplementedError

    def wait_until(self, target_ms: int, cancelled: Callable[[], bool]) -> bool:
        """Block until `now_ms() >= target_ms`. Return False if `cancelled()`
        became true first (checked whenever `wake()` is called)."""
        raise NotImplementedError

    def wake(self) -> None:
        """Interrupt waiters so they re-check their cancellation condition."""
        with self._cond:
            self._cond.notify_all()


class SystemClock(Clock):
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def wait_until(self, target_ms: int, cancelled: Callable[[], bool]) -> bool:
        with self._cond:
            while True:
                if cancelled():
                    return False
                remaining = target_ms - self.now_ms()
                if remaining <= 0:
                    return True
                self._cond.wait(timeout=remaining / 1000.0)


class ManualClock(Clock):
    """A clock that moves only when `advance()` or `set_time()` is called.

    `start` is in seconds since the epoch (0 by default)."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self._now_ms = int(round(start * 1000))

    def now_ms(self) -> int:
        with self._cond:
            return self._now_ms

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"ManualClock cannot go back in time (advance by {seconds})")
        with self._cond:
            self._now_ms += int(round(seconds * 1000))
            self._cond.notify_all()

    def set_time(self, seconds: float) -> None:
        with self._cond:
            target = int(round(seconds * 1000))
            if target < self._now_ms:
                raise ValueError("ManualClock cannot go back in time")
            self._now_ms = target
            self._cond.notify_all()

    def wait_until(self, target_ms: int, cancelled: Callable[[], bool]) -> bool:
        with self._cond:
            while True:
                if cancelled():
                    return False
                if self._now_ms >= target_ms:
                    return True
                self._cond.wait(timeout=1.0)
