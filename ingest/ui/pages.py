"""Server-rendered HTML of the web UI: every page is complete without
JavaScript; `static/ui.js` only keeps it live (see the README's "Web UI").
Every value comes from `ingest.ui.views` and is escaped here."""

from __future__ import annotations

import datetime as _dt
from html import escape
from typing import Any, Iterable, Sequence

from ingest.listener import format_batch_time
from ingest.ui.charts import histogram_svg, timeline_svg

NAV = (("overview", "/", "Overview"), ("batches", "/batches", "Batches"), ("inputs", "/inputs", "Inputs"),
       ("checkpoint", "/checkpoint", "Checkpoint"))

CHARTS = (("input_rate", "Input rate", "records/s"), ("scheduling_delay_ms", "Scheduling delay", "ms"),
          ("processing_ms", "Processing time", "ms"), ("total_delay_ms", "Total delay", "ms"))


def _v(value: Any) -> str:
    """A cell's text: '-' for nothing, thousands separators for counts."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):  # as ui.js prints numbers: whole ones without decimals
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    return escape(str(value))


def _when(epoch_s: float | None) -> str:
    if epoch_s is None:
        return "-"
    return _dt.datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "", empty: str = "none") -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="empty">{escape(empty)}</td></tr>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv(pairs: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    return f'<dl class="{cls}">' + "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _cards(pairs: Iterable[tuple[str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="label">{escape(k)}</div><div class="value">{v}</div></div>'
        for k, v in pairs) + "</div>"


def layout(page: str, title: str, status: dict[str, Any], body: str) -> str:
    nav = "".join(f'<a href="{href}"{" class=current" if key == page else ""}>{label}</a>'
                  for key, href, label in NAV)
    state = status["state"]
    error = ""
    if status.get("error"):
        error = (f'<div class="error" id="job-error"><strong>Job {escape(state)}:</strong> '
                 f'<pre>{escape(status["error"])}</pre></div>')
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} - ingest</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/ui.css"><script src="/static/ui.js" defer></script>'
        f'</head><body data-page="{page}">'
        f'<header><span class="brand">ingest</span><nav>{nav}</nav>'
        f'<span class="state state-{escape(state.replace(" ", "-"))}" id="job-state" data-field="state">'
        f"{escape(state)}</span>"
        "</header>"
        f'<main id="live">{error}<h1>{escape(title)}</h1>{body}</main>'
        '<footer>Updates live with JavaScript on; reload to refresh without it. '
        'Data: <a href="/api/v1/status">/api/v1/</a></footer>'
        "</body></html>")


def _live(status: dict[str, Any], field: str, element_id: str | None = None) -> str:
    """A status value that ui.js keeps up to date (by its data-field)."""
    ident = f'id="{element_id}" ' if element_id else ""
    return f'<span {ident}data-field="{field}">{_v(status[field])}</span>'


def overview(status: dict[str, Any], batches: dict[str, Any]) -> str:
    s = status
    cards = _cards([
        ("State", _live(s, "state")),
        ("Running for", _live(s, "uptime_s") + " s"),
        ("Batch interval", f'{_v(s["batch_interval_s"])} s'),
        ("Batches completed", _live(s, "batches_completed", "batches-completed")),
        ("Batches failed", _live(s, "batches_failed")),
        ("Batches active", _live(s, "batches_active")),
        ("Records processed", _live(s, "records_processed")),
        ("Inputs / receivers", f'{_v(s["inputs"])} / {_v(s["receivers"])}'),
    ])
    rows = []
    for metric, label, unit in CHARTS:
        values = s["timeline"][metric]
        clean = [v for v in values if v is not None]
        avg = sum(clean) / len(clean) if clean else None
        rows.append((f"<strong>{escape(label)}</strong><br><span class=avg data-avg=\"{metric}\">"
                     f"avg {_v(avg)} {escape(unit)}</span>",
                     timeline_svg(metric, label, unit, values), histogram_svg(metric, label, unit, values)))
    charts = _table(["Metric", "Over time (last batches)", "Histogram"], rows, "charts")
    recent = batch_table(batches["recent"], "recent-batches")
    return cards + f"<h2>Statistics</h2>{charts}<h2>Recent batches</h2>{recent}"


def batch_table(batches: Sequence[dict[str, Any]], table_id: str, empty: str = "no batches") -> str:
    rows = [(f'<a href="/batches/{b["id"]}">{escape(b["time"])}</a>', _v(b["records"]), _v(b["input_rate"]),
             _v(b["scheduling_delay_ms"]), _v(b["processing_ms"]), _v(b["total_delay_ms"]),
             f'{b["output_operations"] - b["failed_output_operations"]}/{b["output_operations"]}',
             f'<span class="status status-{b["status"]}">{escape(b["status"])}</span>'
             + (f'<br><span class="failure">{escape(b["failure"])}</span>' if b["failure"] else ""))
            for b in batches]
    return _table(["Batch time", "Records", "Input rate (rec/s)", "Scheduling delay (ms)", "Processing (ms)",
                   "Total delay (ms)", "Outputs ok", "Status"], rows, f"batches {table_id}", empty).replace(
        "<table ", f'<table id="{table_id}" ', 1)


def batches_page(batches: dict[str, Any]) -> str:
    return (f'<h2>Active batches ({len(batches["active"])})</h2>{batch_table(batches["active"], "active-batches")}'
            f'<h2>Completed batches (newest {len(batches["completed"])})</h2>'
            f'{batch_table(batches["completed"], "completed-batches")}'
            f'<h2>Failed batches ({len(batches["failed"])})</h2>{batch_table(batches["failed"], "failed-batches")}')


def batch_page(b: dict[str, Any]) -> str:
    head = _kv([("Status", f'<span class="status status-{b["status"]}">{escape(b["status"])}</span>'),
                ("Records", _v(b["records"])), ("Scheduling delay", f'{_v(b["scheduling_delay_ms"])} ms'),
                ("Processing time", f'{_v(b["processing_ms"])} ms'), ("Total delay", f'{_v(b["total_delay_ms"])} ms'),
                ("Attempts", _v(b["attempts"])), ("Re-run after a restart", _v(b["recovered"]))]
               + ([("Tasks per worker", escape(", ".join(f"{w}: {n}" for w, n in b["workers"].items())))]
                  if b.get("workers") else [])
               + ([("Failure", f'<span class="failure">{escape(b["failure"])}</span>')] if b["failure"] else []))
    ops = _table(["#", "Output operation", "Status", "Duration (ms)", "Error"], [
        (_v(op["id"]), f'{escape(op["name"])}<br><small>{escape(op["description"])}</small>',
         f'<span class="status status-{op["status"]}">{escape(op["status"])}</span>', _v(op["duration_ms"]),
         "-" if not op["failure"] else f'{escape(op["failure"])}<details><summary>traceback</summary>'
                                       f'<pre>{escape(op["traceback"] or "")}</pre></details>')
        for op in b["output_operations"]], "ops", "no output operation ran")
    inputs = []
    for i in b["inputs"]:
        pos = i["position"]
        part = f'<h3>Input <code>{escape(i["name"])}</code>: {_v(i["records"])} records</h3>'
        if pos is None:
            part += "<p>Read nothing in this batch.</p>"
        else:
            part += _kv([("Position kind", escape(pos["kind"]))] + [(k, _v(v)) for k, v in pos["fields"].items()])
            for name, t in pos["tables"].items():
                part += f"<h4>{escape(name.replace('_', ' '))}</h4>" + _table(
                    [c.replace("_", " ") for c in t["columns"]], [[_v(c) for c in row] for row in t["rows"]],
                    f"position position-{escape(pos['kind'])}")
        inputs.append(part)
    return (head + f"<h2>Output operations</h2>{ops}<h2>Inputs and their positions</h2>"
            + ("".join(inputs) or "<p>No inputs.</p>"))


def inputs_page(inputs: Sequence[dict[str, Any]]) -> str:
    out = []
    for i in inputs:
        part = (f'<section class="input"><h2>{escape(i["kind"])} input <code>{escape(i["name"])}</code></h2>'
                + _kv([("Description", escape(i["description"])),
                       ("Records in the last batch", _v(i["last_batch_records"])),
                       ("Rate (records/s)", _v(i["rate"]))]
                      + ([("Lag (records)", f'<span data-lag="{escape(i["name"])}">{_v(i["lag_records"])}</span>'),
                          ("Lag (time, s)", _v(i["lag_seconds"]))] if "partitions" in i else [])
                      + ([("Stalled on the brokers", _v(i["health"].get("stalled"))),
                          ("Last broker error", _v(i["health"].get("last_error")))]
                         if isinstance(i.get("health"), dict) and "stalled" in i["health"] else [])))
        if "partitions" in i:
            part += _table(["Topic", "Partition", "Last batch's range", "Next offset", "Latest offset",
                            "Lag (records)", "Lag (time, s)"], [
                (escape(p["topic"]), _v(p["partition"]),
                 "-" if p["batch_from"] is None else f'{p["batch_from"]:,} .. {p["batch_until"]:,}',
                 _v(p["next_offset"]), _v(p["latest_offset"]), _v(p["lag_records"]), _v(p["lag_seconds"]))
                for p in i["partitions"]], "partitions", "not planned yet")
        r = i.get("receiver")
        if r is not None:
            part += "<h3>Receiver</h3>" + _kv([
                ("Receiver", _v(r["name"])), ("State", _v(r["state"])),
                ("Dask worker", _v(r.get("worker") or "the driver")), ("Restarts", _v(r["restarts"])),
                ("Last error", _v(r["last_error"])), ("Last error at", _when(r["last_error_time"])),
                ("Write-ahead log", "off" if r["wal_bytes"] is None
                 else f'{r["wal_segments"]:,} segment(s), {r["wal_bytes"]:,} bytes')])
        out.append(part + "</section>")
    return "".join(out) or "<p>No inputs.</p>"


def checkpoint_page(c: dict[str, Any]) -> str:
    if not c["durable"]:
        head = "<p>No checkpoint directory: the batch log is in memory and a restart starts afresh.</p>"
    else:
        head = ""
    kv = _kv([("Directory", _v(c["directory"])), ("Last commit", _v(c["last_commit_time"])),
              ("Committed at", _when(c["last_commit_at"])),
              ("Pending intents", ", ".join(f'<a href="/batches/{t}">{escape(format_batch_time(t))}</a>'
                                            for t in c["pending_intents"]) or "none"),
              ("Receivers' write-ahead log", "on" if c["write_ahead_log"] else "off")])
    state = _table(["Stateful operator", "State size (bytes)"],
                   [(escape(k), _v(v)) for k, v in sorted(c["state_bytes"].items())], "state-sizes",
                   "no stateful operator")
    return head + kv + "<h2>State</h2>" + state


def not_found(path: str) -> str:
    return f"<p>Nothing at <code>{escape(path)}</code>. <a href=\"/\">Overview</a></p>"
