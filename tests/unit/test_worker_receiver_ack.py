"""The worker side of a receiver with the write-ahead log on Dask
(`receivers.worker_receiver`): `store_batch` returns once the driver
acknowledged the block as logged. `acknowledge` runs on the worker's event
loop, and a block's send through the run's queue returns only once that same
loop delivered the queue's reply: an acknowledgement that arrives before the
reply must not wait for the send, or the worker freezes (it did, in about one
run of the cluster fault test out of seven)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("distributed")

import distributed  # noqa: E402

from receivers import worker_blocks, worker_receiver  # noqa: E402
from receivers.block import Block  # noqa: E402
from receivers.worker_receiver import ReceiverRun, WorkerReceiverHost, acknowledge  # noqa: E402

WORKER = "tcp://127.0.0.1:4242"


class LoopBoundQueue:
    """A run's queue whose put returns only after the driver's acknowledgement
    ran, as when the worker's event loop handles the acknowledgement before
    the put's reply."""

    instances: list["LoopBoundQueue"] = []

    def __init__(self, name: str, client: Any = None) -> None:
        self.items: list[Any] = []
        self.put_called = threading.Event()
        self.loop_free = threading.Event()  # set once the loop finished the acknowledgement
        LoopBoundQueue.instances.append(self)

    def put(self, item: Any) -> None:
        self.items.append(item)
        self.put_called.set()
        assert self.loop_free.wait(10), "the event loop never got to the put's reply"


def test_an_acknowledgement_arriving_before_the_sends_reply_does_not_freeze_the_worker(monkeypatch) -> None:
    monkeypatch.setattr(distributed, "Queue", LoopBoundQueue)
    run = ReceiverRun("s", b"", "run-ack", "queue-ack", 200, replication=1, write_ahead_log=True)
    host = WorkerReceiverHost(run, client=None, address=WORKER)
    queue = LoopBoundQueue.instances[-1]
    monkeypatch.setitem(worker_receiver._runs, run.run_id, host)
    stored: list[Any] = []
    storing = threading.Thread(target=lambda: stored.append(host.store_block(Block("b1", [1, 2, 3], None))))
    storing.start()
    try:
        assert queue.put_called.wait(10)
        # The event loop: the driver's acknowledgement first, then the put's reply.
        acknowledged: list[int] = []
        loop = threading.Thread(target=lambda: acknowledged.append(acknowledge(run.run_id, ["b1"])))
        loop.start()
        loop.join(5)
        frozen = loop.is_alive()
        queue.loop_free.set()
        loop.join(10)
        storing.join(10)
    finally:
        queue.loop_free.set()
        worker_blocks.drop(WORKER, ["b1"])
    assert not frozen, "acknowledge waited for the send, which waited for the event loop acknowledge held"
    assert acknowledged == [1]
    assert [(info.block_id, info.num_records) for info in stored] == [("b1", 3)]
    assert queue.items[0][:5] == ["block", "b1", 3, None, [WORKER]]
