"""Reading a received block on a Dask worker (`receivers.worker_blocks`):
the copy on this worker, else one fetched from a live location; a location
that left the cluster is never asked (a connection to it would only time out),
so a block on no live worker fails its task at once and the batch's retry
reads it from the write-ahead log."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

pytest.importorskip("distributed")

import distributed  # noqa: E402

from receivers import block_comms, worker_blocks  # noqa: E402
from receivers.worker_blocks import BlockUnavailableError, WorkerBlockSource  # noqa: E402

HERE, ALIVE, DEAD = "tcp://127.0.0.1:1001", "tcp://127.0.0.1:1002", "tcp://127.0.0.1:1003"


@dataclass
class FakeClient:
    """The cluster as a task's client sees it: its live workers and what each holds."""

    holds: dict[str, dict[str, list[Any]]]
    asked: list[str] = field(default_factory=list)

    def nthreads(self) -> dict[str, int]:
        return {w: 1 for w in self.holds}

    def fetch(self, locations: list[str], block_id: str) -> list[Any] | None:
        """As `block_comms.fetch`: ask each location directly, the first copy wins."""
        for worker in locations:
            self.asked.append(worker)
            assert worker in self.holds, f"{worker} left the cluster: a connection to it would hang"
            if block_id in self.holds[worker]:
                return self.holds[worker][block_id]
        return None


@pytest.fixture
def on_worker(monkeypatch: pytest.MonkeyPatch):
    def install(client: FakeClient) -> FakeClient:
        monkeypatch.setattr(distributed, "get_worker", lambda: type("W", (), {"address": HERE})())
        monkeypatch.setattr(distributed, "get_client", lambda: client)
        monkeypatch.setattr(block_comms, "fetch", lambda c, locations, block_id: c.fetch(list(locations), block_id))
        return client
    return install


def test_a_block_held_here_is_read_without_asking_anyone(on_worker) -> None:
    client = on_worker(FakeClient({HERE: {}, ALIVE: {}}))
    worker_blocks.put(HERE, "b-here", [1, 2])
    try:
        assert WorkerBlockSource("s", "b-here", (HERE, ALIVE)).read() == [1, 2]
    finally:
        worker_blocks.drop(HERE, ["b-here"])
    assert client.asked == []


def test_a_block_elsewhere_is_fetched_from_a_live_location_skipping_a_dead_one(on_worker) -> None:
    client = on_worker(FakeClient({HERE: {}, ALIVE: {"b1": [3, 4]}}))
    assert WorkerBlockSource("s", "b1", (DEAD, ALIVE)).read() == [3, 4]
    assert client.asked == [ALIVE]


def test_a_block_on_no_live_worker_fails_at_once_without_asking_the_dead_locations(on_worker) -> None:
    client = on_worker(FakeClient({HERE: {}, ALIVE: {}}))
    with pytest.raises(BlockUnavailableError, match=r"block b2 is on no live worker .*tcp://127.0.0.1:1003"):
        WorkerBlockSource("s", "b2", (DEAD,)).read()
    assert client.asked == []
