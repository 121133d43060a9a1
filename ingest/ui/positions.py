"""A typed position as the web UI shows it: its scalar fields, and its tuples
of typed entries (offset ranges, blocks, sequence numbers, files) as tables.
Computed once per batch, when the batch is submitted, so the UI's history keeps
these small views and never the positions themselves (a queue stream's
position holds its records)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from offsets import Position


def position_view(position: Position) -> dict[str, Any]:
    """A position's typed fields: scalars as `fields`, tuples of typed entries
    (offset ranges, blocks, sequence numbers, files) as `tables`. Records held
    by value (a queue stream's items) are counted, not shown."""
    fields: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(position) if dataclasses.is_dataclass(position) else ():
        value = getattr(position, f.name)
        if isinstance(value, tuple) and value and all(dataclasses.is_dataclass(v) for v in value):
            columns = [c.name for c in dataclasses.fields(value[0])]
            extra = ["count"] if all(hasattr(v, "count") and isinstance(v.count, int) for v in value) else []
            tables[f.name] = {"columns": columns + extra,
                              "rows": [[_plain(getattr(v, c)) for c in columns + extra] for v in value]}
        elif isinstance(value, (tuple, list)):
            fields[f.name] = f"{len(value)} item(s)"
        else:
            fields[f.name] = _plain(value)
    return {"kind": position.kind, "summary": position.describe(), "records": position.records,
            "fields": fields, "tables": tables}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if dataclasses.is_dataclass(value) and callable(getattr(value, "describe", None)):
        return str(value.describe())  # an entry that says itself readably (a block of a Flume batch)
    if isinstance(value, dict) or dataclasses.is_dataclass(value) or isinstance(value, (list, tuple)):
        text = json.dumps(value if not dataclasses.is_dataclass(value) else dataclasses.asdict(value),
                          default=str, sort_keys=True)
        return text if len(text) <= 200 else text[:197] + "..."
    return str(value)
