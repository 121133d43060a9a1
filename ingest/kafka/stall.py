"""Notices when a Kafka source stops making progress, and says why.

A source reports `progress()` whenever it moved forward (a batch planned, a
block stored) and `failed(cause)` whenever a broker call failed. Once a
failure has been seen and nothing moved for `warn_after` seconds, `check()`
logs a warning naming the last cause and how long the source has been stuck,
and repeats it every `repeat_every` seconds while that lasts; `status()` gives
the same as data for `ssc.status()`. A source that is merely idle (no data,
no failure) is not stalled.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

WARN_AFTER = 30.0
REPEAT_EVERY = 60.0


class StallWatch:
    def __init__(self, what: str, logger: logging.Logger, *, warn_after: float = WARN_AFTER,
                 repeat_every: float = REPEAT_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self._log = logger
        self.warn_after = warn_after
        self.repeat_every = repeat_every
        self._clock = clock
        self._lock = threading.Lock()
        self._progress_at = clock()
        self._failing_since: float | None = None  # first failure after the last progress
        self._last_error: str | None = None
        self._warned_at: float | None = None
        self.warnings = 0

    def progress(self) -> None:
        with self._lock:
            recovered = self._warned_at is not None
            stuck_for = self._clock() - self._progress_at
            self._progress_at = self._clock()
            self._failing_since = None
            self._warned_at = None
        if recovered:
            self._log.warning("%s: making progress again after %.0f s", self.what, stuck_for)

    def failed(self, cause: str) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self._last_error = cause
        self.check()

    @property
    def failing_since(self) -> float | None:
        """When the current run of failures began (on the watch's clock), None while healthy."""
        with self._lock:
            return self._failing_since

    def check(self) -> str | None:
        """Warn if stalled and not warned within `repeat_every`; returns the warning given, if any."""
        with self._lock:
            if self._failing_since is None:
                return None
            now = self._clock()
            stuck_for = now - self._progress_at
            if stuck_for < self.warn_after:
                return None
            if self._warned_at is not None and now - self._warned_at < self.repeat_every:
                return None
            self._warned_at = now
            self.warnings += 1
            message = f"{self.what}: no progress for {stuck_for:.0f} s; last error: {self._last_error}"
        self._log.warning("%s", message)
        return message

    def status(self) -> dict[str, Any]:
        """{'stalled': bool, 'stalled_for_s': seconds or None, 'last_error': the cause or None}."""
        with self._lock:
            now = self._clock()
            stalled = self._failing_since is not None and now - self._progress_at >= self.warn_after
            return {"stalled": stalled, "stalled_for_s": round(now - self._progress_at, 1) if stalled else None,
                    "last_error": self._last_error}
