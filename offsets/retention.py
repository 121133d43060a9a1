"""The retention point: the oldest batch whose source data may still be needed.

After a batch commits, inputs may forget data (received blocks, write-ahead
log records and segments, ...) of batches older than one point,
`retain_from_ms`, and nothing else. Data of a batch is needed while

- a retained commit's state may be used by a fallback: when the state files of
  a newer commit are unreadable, recovery restores the state of an older
  retained commit and replays the batches after it through the stateful
  operators, reading their data again. Any retained commit may be the one
  used, so the data of batches at or after the oldest retained commit is kept;
- a batch has an intent and no commit (pending, or to be re-run after a
  restart): it reads exactly the data its intent names.

Data not yet allocated to any batch is in flight and never deleted by this
rule (it has no batch time yet). Without a durable checkpoint nothing is ever
replayed, so only the batch just committed and older are forgotten.
"""

from __future__ import annotations

from typing import Iterable


def retain_from_ms(committed_ms: int, retained_commits: Iterable[int], pending: Iterable[int],
                   durable: bool) -> int:
    """The retention point after batch `committed_ms` committed.

    `retained_commits`: the batch times of the commits the checkpoint keeps
    (including `committed_ms`); `pending`: batch times with an intent and no
    commit; `durable`: whether a checkpoint keeps them across restarts."""
    point = committed_ms + 1
    if durable:
        point = min([point, *retained_commits])
    return min([point, *pending])
