"""A server of one Avro protocol over the Netty framing, for Flume's Avro sinks.

One thread accepts connections; each connection is served by a thread of its
own (several agents, or one agent's several sinks, at once). The server owns
these threads and joins them in `stop()`.

Per connection, the first call carries a handshake:

* a client hash the server knows (Flume 1.11's, or the MD5 of our text): BOTH,
  or CLIENT with our protocol when the client guessed our hash wrong;
* an unknown hash with the client's protocol text: CLIENT when it is the same
  protocol, else the connection is closed (wrong protocol);
* an unknown hash without text: NONE with our protocol and hash, as Avro does;
  the client then calls again with its text.

A call is decoded completely before the handler sees it, so a bad request
(garbage, a truncated frame, a frame over the limits, trailing bytes) never
reaches the handler: the connection is closed with one log line naming the
peer and the reason. An unknown message name gets an Avro error response and
the connection stays usable. Other connections are never affected.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
from typing import Any, Callable

from ingest.errors import SourceError
from receivers.flume import ipc
from receivers.flume.framing import FrameError, FrameLimits, encode_frame, read_frame

log = logging.getLogger("receivers.flume")

Handler = Callable[[str, dict[str, Any]], Any]


class ProtocolError(SourceError):
    """A request that does not decode as the protocol says."""


class AvroIpcServer:
    """Serves `protocol` on host:port (port 0: a free one, see `port` after
    `start()`), calling `handler(message_name, request)` for every call; its
    return value is the response."""

    def __init__(self, protocol: ipc.AvroProtocol, handler: Handler, *, host: str = "127.0.0.1", port: int = 0,
                 limits: FrameLimits = FrameLimits(), name: str = "flume") -> None:
        self.protocol = protocol
        self.handler = handler
        self.host, self.port = host, port
        self.limits = limits
        self.name = name
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.connections_refused = 0  # closed for a bad request

    def start(self) -> None:
        """Listen (SO_REUSEADDR: a restarted receiver takes its port back at once)
        and start accepting."""
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept:{self.port}",
                                               daemon=True)
        self._accept_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close every connection and join every thread."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        with self._lock:
            connections = dict(self._connections)
        for conn in connections.values():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in connections:
            thread.join(timeout)

    def _accept_loop(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return  # closed by stop()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn, f"{peer[0]}:{peer[1]}"),
                                      name=f"{self.name}-conn:{peer[1]}", daemon=True)
            with self._lock:
                # Forget connections that ended, so a long run does not accumulate them.
                for done in [t for t in self._connections if not t.is_alive()]:
                    del self._connections[done]
                self._connections[thread] = conn
            thread.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        # The log line is written before the connection closes: whoever sees the
        # close can find out why.
        with conn:
            try:
                self._serve_calls(conn, peer)
            except (FrameError, ProtocolError) as exc:
                self.connections_refused += 1
                log.warning("%s: closed the connection from %s: %s", self.name, peer, exc)
            except EOFError as exc:
                if not self._stopping.is_set():
                    self.connections_refused += 1
                    log.warning("%s: closed the connection from %s: a truncated frame (%s)", self.name, peer, exc)
            except OSError as exc:
                if not self._stopping.is_set():
                    log.info("%s: the connection from %s failed: %s", self.name, peer, exc)
            except Exception as exc:  # noqa: BLE001 - the handler failed: the client sees a closed connection
                log.error("%s: closed the connection from %s: handling its call failed: %s: %s", self.name, peer,
                          type(exc).__name__, exc)

    def _serve_calls(self, conn: socket.socket, peer: str) -> None:
        connected = False
        while not self._stopping.is_set():
            frame = read_frame(conn, self.limits)
            if frame is None:
                return
            serial, payload = frame
            reply, connected = self._call(payload, connected, peer)
            if reply is not None:
                conn.sendall(encode_frame(serial, reply))

    def _call(self, payload: bytes, connected: bool, peer: str) -> tuple[bytes | None, bool]:
        """The reply to one frame, and whether the connection is now connected."""
        fo = io.BytesIO(payload)
        out = io.BytesIO()
        try:
            if not connected:
                match = self._handshake(ipc.read(fo, ipc.HANDSHAKE_REQUEST), out)
                if match == "NONE":
                    return out.getvalue(), False
                connected = True
            head = ipc.read(fo, ipc.CALL_HEAD)
            name = head["name"]
            if name == "":  # a handshake-only ping
                return out.getvalue(), connected
            message = self.protocol.messages.get(name)
            if message is None:
                log.warning("%s: %s called %r, which %s does not have; answered with an error", self.name, peer,
                            name[:100], self.protocol.name)
                out.write(ipc.encode_error(f"unknown message {name[:100]!r}: {self.protocol.name} has "
                                           f"{sorted(self.protocol.messages)}"))
                return out.getvalue(), connected
            request = ipc.read(fo, message.request)
        except ProtocolError:
            raise
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on bytes that are not Avro
            raise ProtocolError(f"the request does not decode as {self.protocol.name} "
                                f"({type(exc).__name__}: {str(exc)[:200]})") from None
        if fo.tell() != len(payload):
            raise ProtocolError(f"{len(payload) - fo.tell()} bytes follow the {name} request")
        out.write(ipc.encode_response(message, self.handler(name, request)))
        return out.getvalue(), connected

    def _handshake(self, request: dict[str, Any], out: io.BytesIO) -> str:
        protocol = self.protocol
        if request["clientHash"] in protocol.known_hashes:
            if request["serverHash"] in protocol.known_hashes:
                response = {"match": "BOTH", "serverProtocol": None, "serverHash": None, "meta": None}
            else:
                response = {"match": "CLIENT", "serverProtocol": protocol.text, "serverHash": protocol.md5,
                            "meta": None}
        elif request["clientProtocol"] is not None:
            if not protocol.same_as(request["clientProtocol"]):
                raise ProtocolError(f"the client speaks another protocol than {protocol.name} (client hash "
                                    f"{request['clientHash'].hex()})")
            response = {"match": "CLIENT", "serverProtocol": protocol.text, "serverHash": protocol.md5, "meta": None}
        else:
            response = {"match": "NONE", "serverProtocol": protocol.text, "serverHash": protocol.md5, "meta": None}
        ipc.write(out, ipc.HANDSHAKE_RESPONSE, response)
        return response["match"]
