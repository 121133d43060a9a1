"""The job's web UI and JSON API (`StreamingContext(ui_port=...)`): pages like
Spark's Streaming tab plus source lag, receiver and WAL health and the
checkpoint's state, served from snapshots so that it never slows a batch."""

from ingest.ui.history import UIHistory
from ingest.ui.options import UIOptions, resolve, set_process_default
from ingest.ui.server import UIServer
from ingest.ui.views import Views

__all__ = ["UIHistory", "UIOptions", "UIServer", "Views", "resolve", "set_process_default"]
