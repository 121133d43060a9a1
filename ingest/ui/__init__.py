"""The job's web UI and JSON API (`StreamingContext(ui_port=...)`): pages like
Spark's Streaming tab plus source lag, receiver and WAL health and the
checkpoint's state, served from snapshots so that it never slows a batch.

The names below load their module on first use: a context without a UI (the
library's default) and the `ingest` command never import the HTTP server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from offsets.lazy_names import lazy_getattr

_EXPORTS = {
    "UIHistory": "ingest.ui.history",
    "UIOptions": "ingest.ui.options", "resolve": "ingest.ui.options", "set_process_default": "ingest.ui.options",
    "UIServer": "ingest.ui.server",
    "Views": "ingest.ui.views",
}

__all__ = ["UIHistory", "UIOptions", "UIServer", "Views", "resolve", "set_process_default"]


__getattr__ = lazy_getattr('ingest.ui', _EXPORTS, globals())


if TYPE_CHECKING:
    from ingest.ui.history import UIHistory
    from ingest.ui.options import UIOptions, resolve, set_process_default
    from ingest.ui.server import UIServer
    from ingest.ui.views import Views
