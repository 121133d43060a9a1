"""An Avro IPC client over the Netty framing: what polls our pull sink.

The first call on a connection carries a handshake with our protocol's text, so
that a Java server resolves it at once (it answers CLIENT with its own text and
hash); later calls carry none. A server that answers NONE gets the call again.
Calls are serial on one connection; use one client per thread.
"""

from __future__ import annotations

import io
import socket
from typing import Any

from ingest.errors import SourceError
from receivers.flume import ipc
from receivers.flume.framing import FrameLimits, encode_frame, read_frame


class AvroCallError(SourceError):
    """The server answered a call with an Avro error, or broke the protocol."""


class AvroIpcClient:
    def __init__(self, protocol: ipc.AvroProtocol, host: str, port: int, *, timeout: float = 30.0,
                 limits: FrameLimits = FrameLimits()) -> None:
        self.protocol = protocol
        self.address = (host, port)
        self.limits = limits
        self._sock = socket.create_connection(self.address, timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._serial = 0
        self._connected = False

    def call(self, name: str, params: dict[str, Any]) -> Any:
        message = self.protocol.messages[name]
        for _ in range(2):  # a NONE handshake answer asks for the call once more
            out = io.BytesIO()
            if not self._connected:
                ipc.write(out, ipc.HANDSHAKE_REQUEST, {"clientHash": self.protocol.md5,
                                                       "clientProtocol": self.protocol.text,
                                                       "serverHash": self.protocol.md5, "meta": None})
            ipc.write(out, ipc.CALL_HEAD, {"meta": {}, "name": name})
            ipc.write(out, message.request, params)
            self._serial += 1
            self._sock.sendall(encode_frame(self._serial, out.getvalue()))
            frame = read_frame(self._sock, self.limits)
            if frame is None:
                raise AvroCallError(f"{self.where}: the server closed the connection during {name}")
            serial, payload = frame
            if serial != self._serial:
                raise AvroCallError(f"{self.where}: answer to call {serial} while waiting for call {self._serial}")
            fo = io.BytesIO(payload)
            if not self._connected:
                if ipc.read(fo, ipc.HANDSHAKE_RESPONSE)["match"] == "NONE":
                    continue
                self._connected = True
            head = ipc.read(fo, ipc.RESPONSE_HEAD)
            if head["error"]:
                raise AvroCallError(f"{self.where}: {name} failed on the server: {ipc.read(fo, message.errors)['v']}")
            return ipc.read(fo, message.response)["v"]
        raise AvroCallError(f"{self.where}: the server does not accept {self.protocol.name}")

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def close(self) -> None:
        """Close the connection; a call blocked on it in another thread returns at once
        (shutdown wakes a blocked recv, close alone may not)."""
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "AvroIpcClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
