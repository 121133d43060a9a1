"""A stateful word count that survives a restart: `get_or_create` and a checkpoint.

Each batch takes one line of a short text and adds its words to running totals kept by
`update_state_by_key`. The totals are stored with every commit: stop the job (or kill
it) and run it again with the same CHECKPOINT_DIR, and it goes on from the next line
with the totals it had. Feeds the first LINES lines (default: all 8), runs SECONDS
(default 3; a graceful stop counts the lines still queued), then prints the totals.

    python examples/word_count_checkpoint.py /tmp/wc 3     # counts lines 1-3
    python examples/word_count_checkpoint.py /tmp/wc       # resumes: lines 4-8, totals of all 8
"""

import sys

from ingest import StreamingContext

checkpoint = sys.argv[1]
TEXT = """the quick brown fox
jumps over the lazy dog
the dog sleeps
the fox runs
over the hills and far away
a fox a dog a day
the end of the day
the quick end""".splitlines()
lines_fed = int(sys.argv[2]) if len(sys.argv) > 2 else len(TEXT)
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
totals = {}


def build():                             # called on every start: the checkpoint holds data, never code
    ssc = StreamingContext(batch_interval=0.5)
    lines = ssc.queue_stream([[line] for line in TEXT[:lines_fed]], name="lines")  # a line a batch
    counts = (lines.flat_map(str.split).map(lambda word: (word, 1))
              .update_state_by_key(lambda new, total: sum(new) + (total or 0), name="totals"))
    counts.foreach_batch(lambda batch: totals.update(batch.collect()))
    return ssc


ssc = StreamingContext.get_or_create(checkpoint, build)
ssc.start()
ssc.await_termination(timeout=seconds)
ssc.stop()
print("words counted:", sum(totals.values()))
print(" ".join(f"{word}={n}" for word, n in sorted(totals.items())))
