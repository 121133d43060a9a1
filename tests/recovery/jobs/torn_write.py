"""How the recovery jobs write a sink file, and die in the middle of a write when
JOB_CRASH_DURING_OUTPUT picks it (the jobs import this from their own folder)."""

import os
import signal


def write_synced(f, payload, *, die_halfway: bool) -> None:
    """Write `payload` to the open file `f` and fsync it; with `die_halfway`, write
    its first half, flush and die of SIGKILL: the torn write a crash leaves."""
    if die_halfway:
        f.write(payload[: len(payload) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
