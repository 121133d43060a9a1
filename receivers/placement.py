"""Which Dask worker runs a receiver.

The receiver's preferred location when it names one and a live worker
matches it (a worker address, or a host every worker there shares: the
first of them by load); otherwise the live worker that hosts the fewest of
this context's receivers, so receivers spread evenly. Ties go to the
worker rendezvous hashing picks for the stream's name (`ingest.affinity`), so
the choice is the same on every start with the same workers, and a restart
after a worker died avoids it because it is no longer live.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence
from urllib.parse import urlsplit

from ingest.affinity import preferred_worker


def worker_host(address: str) -> str:
    """The host of a worker address such as tcp://10.0.0.5:40123."""
    return urlsplit(address).hostname or address


def place_receiver(stream: str, live: Sequence[str], hosting: Iterable[str],
                   preferred: str | None = None) -> str | None:
    """The worker for `stream`'s receiver among `live` workers, given the workers
    `hosting` the context's other receivers (one entry per receiver). None when
    no worker is live."""
    if not live:
        return None
    load = Counter(w for w in hosting if w in live)
    if preferred:
        matching = [w for w in live if w == preferred or worker_host(w) == preferred]
        if matching:
            live = matching
    fewest = min(load[w] for w in live)
    return preferred_worker(stream, [w for w in live if load[w] == fewest])
