"""Crash points for recovery tests.

Set `INGEST_CRASH_AT=point:N` (or several, comma-separated) in a job's
environment and the process kills itself with SIGKILL the N-th time it reaches
that point, as a power cut would. Points: `before_intent` (inputs planned),
`after_intent` (intent written, inputs not told: `on_intent_written` not called),
`after_intent_written` (inputs told, also for a re-run batch), `after_outputs`
(outputs done, commit not written), `after_commit`.
Without the variable, a crash point is one global check.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

_points: dict[str, int] | None = None
_hits: dict[str, int] = {}


def _parse(spec: str) -> dict[str, int]:
    out = {}
    for item in spec.split(","):
        name, _, count = item.strip().partition(":")
        if name:
            out[name] = int(count or "1")
    return out


_spec = os.environ.get("INGEST_CRASH_AT")
if _spec:
    _points = _parse(_spec)


def crash_point(name: str) -> None:
    if _points is None or name not in _points:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _points[name]:
        logging.getLogger("ingest.faults").warning("crash point %s reached (hit %d): SIGKILL", name, _hits[name])
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
