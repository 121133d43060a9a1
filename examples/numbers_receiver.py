"""A custom receiver with the write-ahead log: fetch, store, then acknowledge.

`Numbers` stands in for a source that can be acknowledged (a queue, an API with
cursors). With `write_ahead_log=True` and a checkpoint, `store_batch` returns only once
the block is durable, so acknowledging after it never loses a record. Counts what each
batch received for SECONDS (default: until Ctrl-C, which stops gracefully).

    python examples/numbers_receiver.py [CHECKPOINT_DIR] [SECONDS]
"""

import sys

from ingest import StreamingContext
from receivers import Receiver

checkpoint = sys.argv[1] if len(sys.argv) > 1 else "/tmp/numbers-checkpoint"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else None


class Numbers(Receiver[int]):
    """Stands in for a source that can be acknowledged: fetch, store, then acknowledge."""

    def __init__(self):
        super().__init__("numbers")
        self.acknowledged = 0

    def on_start(self):              # must not block: start the receiving loop
        self.start_thread(self.receive, name="numbers-receiver")

    def on_stop(self):               # nothing to do: the loop ends once stop_event is set,
        pass                         # and the supervisor joins it

    def receive(self):               # if this raises, the receiver restarts with backoff
        while not self.stop_event.wait(0.1):
            fetched = list(range(self.acknowledged, self.acknowledged + 10))
            self.store_batch(fetched)          # returns once stored (durable with the WAL)
            self.acknowledged += len(fetched)  # only now tell the source


ssc = StreamingContext(batch_interval=1.0, write_ahead_log=True)
ssc.checkpoint(checkpoint)
ssc.receiver_stream(Numbers(), name="numbers").count().pprint()
ssc.start()
ssc.await_termination(timeout=seconds)  # Ctrl-C: a graceful stop that processes what was stored, no traceback
ssc.stop()
