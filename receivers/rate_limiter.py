"""A blocking rate limiter for receivers: at most `rate` records per second.

Permits are handed out on a schedule (each acquire of n records reserves
n / rate seconds), so the long-run rate never exceeds the limit; a short burst
of up to `burst_seconds` worth of records is allowed after idle time.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from ingest.errors import ConfigError


class RateLimiter:
    def __init__(self, rate: float | None = None, *, burst_seconds: float = 0.05) -> None:
        self._lock = threading.Lock()
        self._burst = burst_seconds
        self._next_free = time.monotonic()
        self._rate: float | None = None
        self.update(rate)

    @property
    def rate(self) -> float | None:
        """Records per second, or None for no limit."""
        return self._rate

    def update(self, rate: float | None) -> None:
        if rate is not None and (isinstance(rate, bool) or not rate > 0):
            raise ConfigError(f"max_rate must be a positive number of records per second or None, got {rate!r}")
        with self._lock:
            self._rate = None if rate is None else float(rate)

    def acquire(self, n: int = 1, cancelled: Callable[[], bool] | None = None) -> bool:
        """Block until `n` records may pass. Returns False if `cancelled()`
        became true while waiting."""
        with self._lock:
            if self._rate is None:
                return True
            now = time.monotonic()
            start = max(self._next_free, now - self._burst)
            self._next_free = start + n / self._rate
            wait = start - now
        while wait > 0:
            if cancelled is not None and cancelled():
                return False
            time.sleep(min(wait, 0.05))
            wait = start - time.monotonic()
        return True
