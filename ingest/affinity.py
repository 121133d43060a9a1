"""Which worker a keyed task prefers: the same one batch after batch.

A direct Kafka stream's partition task reads one topic-partition through a
consumer cached in the worker process; sending that partition to the same
worker every batch reuses the consumer (its connection and fetch position)
instead of opening one per worker over time.

Rendezvous (highest random weight) hashing over the live workers: each
(key, worker) pair gets a score from a stable hash, and the key goes to the
worker with the highest score. The choice depends only on the key and the set
of workers (not on their order, nor on this process's hash seed), so it is the
same in every batch and after a driver restart; when a worker dies only the
keys it held move, and a worker that joins takes over only about its share.
"""

from __future__ import annotations

from typing import Iterable


def _score(key: str, worker: str) -> bytes:
    # Imported here: hashlib loads OpenSSL (~3 ms), which only jobs placing
    # tasks or receivers on cluster workers need, not every context's start.
    from hashlib import blake2b

    return blake2b(f"{key}\x00{worker}".encode(), digest_size=8).digest()


def preferred_worker(key: str, workers: Iterable[str]) -> str | None:
    """The worker `key` goes to among `workers`; None when there is none."""
    best: tuple[bytes, str] | None = None
    for worker in workers:
        candidate = (_score(key, worker), worker)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]
