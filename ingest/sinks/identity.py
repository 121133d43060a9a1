"""A sink's identity: the key its stored positions live under.

It is the sink's explicit `name=`, else derived from what the sink writes to:
the Kafka sink's transactional id, `SqlSink`'s write function's qualified name
(`module.qualname`). Never from the order of registration: adding an output
operation before another must not make a sink read someone else's positions.

Renaming the write function changes a derived identity (the sink then starts
with no stored positions): give a sink `name=` to keep it stable.

Sinks expose `sink_id` (their identity) and `sink_claims` (every key that no
other sink of the job may share: the identity, and for the Kafka sink its
transactional id and consumer group); `ingest.output` refuses, when a sink is
registered, the same instance twice and two sinks with a common claim.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ingest.errors import ConfigError

_MAX = 200  # the width of the `sink` column of SqlSink's tables
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


def check_name(name: Any, where: str) -> str:
    """Validate an explicit or derived identity."""
    if not isinstance(name, str) or not name or len(name) > _MAX or not _PRINTABLE.match(name):
        raise ConfigError(f"{where}: sink name {name!r} is not usable: give name= a non-empty string of at most "
                          f"{_MAX} printable characters, stable across restarts")
    return name


def name_of_function(fn: Callable[..., Any], where: str) -> str:
    """`module.qualname` of a function (of the class, for a callable object)."""
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(fn).__name__
    derived = f"{module}.{qualname}"
    if len(derived) > _MAX:
        raise ConfigError(f"{where}: the name derived from the write function, {derived[:60]!r}..., is longer "
                          f"than {_MAX} characters; give the sink name=")
    return check_name(derived, where)


__all__ = ["check_name", "name_of_function"]
