"""The graph of one context: its inputs, streams and output operations.

The graph is built by the application's code before `start()` and frozen
afterwards. Inputs and output operations get stable names/ids from their order
of creation, which is how a checkpoint refers to them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ingest.errors import ConfigError, StateError

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream, InputDStream
    from ingest.output import OutputOperation
    from ingest.state import StatefulDStream

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class StreamGraph:
    def __init__(self, ssc: "StreamingContext") -> None:
        self._ssc = ssc
        self.streams: list["DStream[Any]"] = []
        self.inputs: list["InputDStream[Any]"] = []
        self.outputs: list["OutputOperation"] = []
        self.stateful: list["StatefulDStream[Any]"] = []
        self.zero_time_ms: int | None = None
        self.frozen = False
        self._kind_counts: dict[str, int] = {}

    def _check_open(self, what: str) -> None:
        if self.frozen:
            raise StateError(
                f"cannot add {what} after the StreamingContext started: build every stream and "
                "output operation before calling start()")

    def add_stream(self, stream: "DStream[Any]") -> int:
        self._check_open(f"stream {stream.op_name}")
        self.streams.append(stream)
        return len(self.streams) - 1

    def input_name(self, kind: str, name: str | None) -> str:
        self._check_open(f"a {kind} input")
        index = self._kind_counts.get(kind, 0)
        self._kind_counts[kind] = index + 1
        if name is None:
            name = f"{kind}-{index}"
        if not _NAME.match(name):
            raise ConfigError(
                f"input name {name!r} is not usable: use 1-100 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit (it names files in the checkpoint)")
        if any(i.name == name for i in self.inputs):
            raise ConfigError(f"two inputs are named {name!r}: give each input a unique name=")
        return name

    def add_input(self, stream: "InputDStream[Any]") -> None:
        self.inputs.append(stream)

    def add_stateful(self, stream: "StatefulDStream[Any]", name: str | None) -> str:
        """Register a stateful operator; returns its stable state id."""
        if name is None:
            rank = sum(1 for s in self.stateful if s.op_name == stream.op_name)
            name = f"{stream.op_name}-{rank}"
        if not _NAME.match(name):
            raise ConfigError(f"state name {name!r} is not usable: use 1-100 letters, digits, '.', '_' or '-'")
        if any(s.state_id == name for s in self.stateful):
            raise ConfigError(f"two stateful operators are named {name!r}: give each a unique name=")
        self.stateful.append(stream)
        return name

    def add_output(self, op: "OutputOperation") -> int:
        self._check_open(f"output operation {op.name}")
        self.outputs.append(op)
        return len(self.outputs)

    def validate(self) -> None:
        if not self.outputs:
            raise ConfigError(
                "no output operation is registered, so no batch would do anything: call pprint(), "
                "foreach_batch() or save_as_text_files() on a stream before start()")

    def discard(self, time_ms: int) -> None:
        for s in self.streams:
            s.discard(time_ms)

    def forget(self, before_ms: int) -> None:
        for s in self.streams:
            s.forget(before_ms)
