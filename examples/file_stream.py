"""A file-directory stream: word counts of the text files that appear in a
directory, each file read exactly once, also across restarts.

What it shows: `ssc.text_file_stream` with a checkpoint (`get_or_create`), the
way writers must add files (write under a hidden name, then rename into the
directory), and the stream's counts in `ssc.status()`.

Run it (from a checkout: PYTHONPATH=. python examples/file_stream.py), then
drop files in from another shell the atomic way:

    python examples/file_stream.py /tmp/incoming /tmp/file-stream-checkpoint
    printf 'hello world\\nhello\\n' > /tmp/incoming/.a.txt && mv /tmp/incoming/.a.txt /tmp/incoming/a.txt

Stop it with Ctrl-C and start it again: files added while it was down are
read by the first batch, and no file is read twice. A third argument runs it
for that many seconds and then stops it gracefully.
"""

import os
import sys

from ingest import StreamingContext

incoming = sys.argv[1] if len(sys.argv) > 1 else "/tmp/incoming"
checkpoint = sys.argv[2] if len(sys.argv) > 2 else "/tmp/file-stream-checkpoint"
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else None
os.makedirs(incoming, exist_ok=True)


def build() -> StreamingContext:
    ssc = StreamingContext(batch_interval=2.0)
    lines = ssc.text_file_stream(incoming, glob="*.txt", name="incoming")
    words = lines.flat_map(str.split).map(lambda word: (word, 1)).reduce_by_key(lambda a, b: a + b)
    words.pprint()
    lines.foreach_batch(lambda batch: print("files so far:", ssc.status()["inputs"]["incoming"]["files_read"]))
    return ssc


ssc = StreamingContext.get_or_create(checkpoint, build)
ssc.start()
print("watching", incoming, flush=True)  # files that arrive from now on are read
ssc.await_termination(timeout=seconds)
ssc.stop()
