"""The Netty framing of Avro IPC, as Flume's Avro sink and Avro source speak it.

    frame := serial:int32  nbuf:int32  { len:int32  bytes[len] } * nbuf

All integers are 4-byte big-endian. `serial` is the caller's call id, echoed in
the reply. A sender may cut one message into several buffers anywhere, even
inside a record (Flume cuts at 8 KiB), so a reader concatenates them before
decoding. Limits on the buffer count and the frame's size keep a bad peer from
making us allocate without bound; a frame over them is refused before its bytes
are read.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ingest.errors import SourceError

_HEADER = struct.Struct(">ii")
_LENGTH = struct.Struct(">i")


class FrameError(SourceError):
    """A frame that breaks the framing or its limits: the connection cannot go on."""


@dataclass(frozen=True)
class FrameLimits:
    """The most buffers a frame may have and the most bytes it may carry in all."""

    max_buffers: int = 10_000
    max_frame_bytes: int = 64 << 20


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes; EOFError if the peer closes first (a truncated frame, or
    a clean close when `n` bytes were the start of the next frame)."""
    chunks = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {remaining} of {n} bytes still to read")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, limits: FrameLimits) -> tuple[int, bytes] | None:
    """The next frame's serial and payload; None when the peer closed cleanly
    between frames. FrameError on a frame over the limits, EOFError on one cut
    short."""
    first = sock.recv(_HEADER.size)
    if not first:
        return None
    header = first if len(first) == _HEADER.size else first + recv_exact(sock, _HEADER.size - len(first))
    serial, nbuf = _HEADER.unpack(header)
    if not 0 <= nbuf <= limits.max_buffers:
        raise FrameError(f"frame {serial} declares {nbuf} buffers; at most {limits.max_buffers} are accepted")
    buffers = []
    total = 0
    for index in range(nbuf):
        (length,) = _LENGTH.unpack(recv_exact(sock, _LENGTH.size))
        total += length
        if length < 0 or total > limits.max_frame_bytes:
            raise FrameError(f"frame {serial}: buffer {index} of {nbuf} declares {length} bytes, which makes the "
                             f"frame larger than max_frame_bytes={limits.max_frame_bytes}")
        buffers.append(recv_exact(sock, length))
    return serial, b"".join(buffers)


def encode_frame(serial: int, payload: bytes) -> bytes:
    """One frame of one buffer."""
    return _HEADER.pack(serial, 1) + _LENGTH.pack(len(payload)) + payload
