"""The seed example: lines from a TCP socket, the ones that contain "error" printed batch by batch.

A built-in line generator (the one `ingest demo` uses) serves log-like lines on a free
port of 127.0.0.1; replace it with your own server's host and port. Runs SECONDS (default
10) or until Ctrl-C, then stops gracefully: what was received is processed first.

    python examples/socket_errors.py [SECONDS]
"""

import sys

from ingest import StreamingContext
from ingest.demo import LineGenerator

seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
server = LineGenerator(port=0)                           # stands in for your server

ssc = StreamingContext(batch_interval=1.0)               # seconds
lines = ssc.socket_text_stream("localhost", server.port)
lines.filter(lambda line: "error" in line).pprint()
ssc.start()
ssc.await_termination(timeout=seconds)                   # Ctrl-C or SIGTERM stops it gracefully
ssc.stop()
server.close()
