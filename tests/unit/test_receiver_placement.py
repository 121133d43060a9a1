"""Where receivers run on a Dask cluster, whether their checkpoint can live on
local disk there, and how a receiver travels to its worker (plain logic, no
cluster)."""

from __future__ import annotations

import threading

import pytest

from ingest.errors import ConfigError
from receivers.placement import place_receiver
from receivers.shared_checkpoint import check_shared_checkpoint
from receivers.shipping import pack_receiver, unpack_receiver
from receivers.socket import SocketTextReceiver

W = ["tcp://10.0.0.1:4001", "tcp://10.0.0.2:4001", "tcp://10.0.0.3:4001"]


def test_receivers_spread_one_per_worker_before_any_worker_gets_a_second():
    hosting: list[str] = []
    for stream in ["a", "b", "c", "d", "e", "f"]:
        hosting.append(place_receiver(stream, W, hosting))
    assert sorted(hosting[:3]) == W
    assert sorted(hosting) == sorted(W * 2)


def test_a_preferred_worker_or_host_is_used_while_it_is_live():
    assert place_receiver("a", W, [W[1]], preferred=W[1]) == W[1]
    assert place_receiver("a", W, [], preferred="10.0.0.3") == W[2]
    assert place_receiver("a", [W[0], W[2]], [], preferred=W[1]) in (W[0], W[2])  # it died: another one


def test_the_choice_is_stable_and_none_without_workers():
    assert place_receiver("a", W, []) == place_receiver("a", list(reversed(W)), [])
    assert place_receiver("a", [], []) is None


def test_a_local_checkpoint_is_refused_when_a_worker_runs_on_another_host():
    check_shared_checkpoint("s", "/tmp/ckpt", ["tcp://127.0.0.1:4001", "tcp://[::1]:4002"])
    check_shared_checkpoint("s", "hdfs://nn:9870/ckpt", W)
    check_shared_checkpoint("s", "file:///mnt/shared/ckpt", W)  # declared a shared mount
    with pytest.raises(ConfigError) as refused:
        check_shared_checkpoint("s", "/tmp/ckpt", ["tcp://127.0.0.1:4001", W[0]])
    message = str(refused.value)
    assert "/tmp/ckpt" in message and W[0] in message
    assert "hdfs://" in message and "s3://" in message and "file:///tmp/ckpt" in message


def test_a_receiver_travels_with_new_locks_and_without_live_connections():
    receiver = SocketTextReceiver("127.0.0.1", 9)
    copy = unpack_receiver(pack_receiver(receiver, "s"))
    assert (copy.host, copy.port) == ("127.0.0.1", 9)
    assert copy._lock is not receiver._lock and copy._lock.acquire(blocking=False)

    class Holding(SocketTextReceiver):
        def __init__(self) -> None:
            super().__init__("127.0.0.1", 9)
            import socket
            self._sock = socket.socket()

    holding = Holding()
    with pytest.raises(ConfigError, match="in on_start"):
        pack_receiver(holding, "s")
    holding._sock.close()
    assert isinstance(threading.Lock(), type(copy._lock))
