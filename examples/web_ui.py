"""A job with its web UI and JSON API: what Spark's Streaming tab shows, and more.

What it shows: `StreamingContext(ui_port=...)` (0 picks a free port, 4040 is
Spark's), `ssc.ui_url`, and pages that update while the job runs: the overview
with its charts, the batches, each batch's inputs, the checkpoint. `ingest run
app.py` serves the same UI for any job without a line of code (`--no-ui` turns
it off). Runs SECONDS (default 60), then stops.

    python examples/web_ui.py            # then open the printed address in a browser
    curl -s http://127.0.0.1:PORT/api/v1/status
"""

import sys

from ingest import StreamingContext

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0

ssc = StreamingContext(batch_interval=1.0, ui_port=0)       # 0: any free port
numbers = ssc.queue_stream([[n, n + 1, n + 2] for n in range(0, 3000, 3)], name="numbers")
numbers.map(lambda n: n * n).count().pprint()
ssc.start()
print("web UI at", ssc.ui_url, flush=True)                   # e.g. http://127.0.0.1:4040/
ssc.await_termination(timeout=seconds)
ssc.stop()
