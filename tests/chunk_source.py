"""A deterministic, acknowledging source for receiver tests on a Dask cluster.

`ChunkServer` (in the test process, on 127.0.0.1) hands out a known sequence
of integers in numbered chunks over a line protocol, and takes a chunk back
for redelivery when the connection that had it closes unacknowledged, as a
Kafka consumer group or Flume's pull sink would. `ChunkReceiver` (on a
worker) asks for a chunk, stores it with `store_batch` and acknowledges it
only after that returned; restarted on another worker, it reconnects and goes
on from the first chunk not acknowledged. The server can hold the stream at
a chosen count of acknowledged chunks, so a test kills a worker at a known
point.

A chunk can be delivered twice: when the receiver died after storing it and
before acknowledging it. With the write-ahead log on, the receiver skips a
chunk whose block is already durable (`recovered_metadata`, as the Kafka
receiver resumes after its durable offsets) and acknowledges it again, so
each chunk is stored once.

    receiver -> NEXT            server -> <id> <n1,n2,...> | WAIT
    receiver -> ACK <id>
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque

from receivers import Receiver


class ChunkServer:
    def __init__(self, chunks: list[list[int]], *, hold_at: int | None = None) -> None:
        self.chunks = chunks
        self._todo: deque[int] = deque(range(len(chunks)))
        self.acked: set[int] = set()
        self.hold_at = hold_at
        self.connections = 0
        self._lock = threading.Condition()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, name="chunk-server")
        accept.start()
        self._threads.append(accept)

    def release(self) -> None:
        with self._lock:
            self.hold_at = None
            self._lock.notify_all()

    def hold(self, at: int) -> None:
        """Hand out chunks until `at` are acknowledged, then wait."""
        with self._lock:
            self.hold_at = at
            self._lock.notify_all()

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.acked) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"only {len(self.acked)} of {count} chunks acknowledged in {timeout} s")
                self._lock.wait(left)

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="chunk-conn")
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        outstanding: set[int] = set()
        try:
            with conn, conn.makefile("rwb") as f:
                for line in f:
                    words = line.decode().split()
                    if words == ["NEXT"]:
                        with self._lock:
                            held = self.hold_at is not None and len(self.acked) >= self.hold_at
                            chunk = None if held or not self._todo else self._todo.popleft()
                            if chunk is not None:
                                outstanding.add(chunk)
                        reply = "WAIT" if chunk is None else f"{chunk} {','.join(map(str, self.chunks[chunk]))}"
                        f.write(reply.encode() + b"\n")
                        f.flush()
                    elif len(words) == 2 and words[0] == "ACK":
                        with self._lock:
                            outstanding.discard(int(words[1]))
                            self.acked.add(int(words[1]))
                            self._lock.notify_all()
        except OSError:
            pass
        finally:
            with self._lock:  # unacknowledged chunks go first to the next connection
                self._todo.extendleft(sorted(outstanding, reverse=True))

    def close(self) -> None:
        self._closing = True
        # close() alone does not wake a thread blocked in accept() on Linux
        # (the test process then never exits): shut the listener down first.
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self._threads:
            t.join(10)
            assert not t.is_alive(), f"{t.name} did not stop"


class ChunkReceiver(Receiver[int]):
    """Stores each chunk as one block, then acknowledges it; a chunk already
    durable in the write-ahead log is only acknowledged."""

    def __init__(self, port: int, name: str = "chunks") -> None:
        super().__init__(name)
        self.port = port
        self._sock: socket.socket | None = None
        self._durable: set[int] = set()

    def on_start(self) -> None:
        self._durable = {int(m["chunk"]) for m in self.recovered_metadata() if m and "chunk" in m}
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.start_thread(self._loop, name=f"chunk-receiver-{self.port}")

    def on_stop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _loop(self) -> None:
        assert self._sock is not None
        with self._sock, self._sock.makefile("rwb") as f:
            while not self.stop_event.is_set():
                f.write(b"NEXT\n")
                f.flush()
                line = f.readline().decode().strip()
                if not line:
                    return  # the connection closed: on_stop, or the server went away
                if line == "WAIT":
                    self.stop_event.wait(0.02)
                    continue
                chunk, numbers = line.split(" ", 1)
                if int(chunk) not in self._durable:  # else stored before a restart: acknowledge only
                    self.store_batch([int(n) for n in numbers.split(",")], {"chunk": int(chunk)})
                f.write(f"ACK {chunk}\n".encode())
                f.flush()


class PreferringReceiver(ChunkReceiver):
    def __init__(self, port: int, name: str, where: str) -> None:
        super().__init__(port, name)
        self.where = where

    @property
    def preferred_location(self) -> str | None:
        return self.where
