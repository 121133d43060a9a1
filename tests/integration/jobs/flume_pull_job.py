"""A job polling a Flume agent's pull sink with the write-ahead log on, for the
test of a batch re-run after a kill (tests/integration/test_flume_pull.py).

    python flume_pull_job.py CHECKPOINT OUT PORT [--die-after-first-output]

Every non-empty batch is written to OUT/batch-<time>-<pid>.json: its time,
whether it is a re-run, its position as the intent log stores it, and its
bodies in order. With --die-after-first-output the job SIGKILLs itself right
after the first such file is written: the batch's outputs are done and its
commit is not. OUT/wire.log gets, for every non-empty getEventBatch answer,
the sequence number the sink sent and its number of events, as read off the
wire (before our stream plans anything). The receiver takes at most 200
events/s, so that the first batch holds only part of the agent's events.
"""

import argparse
import json
import os
import signal
import threading

import receivers.flume.pull as pull
from ingest import StreamingContext
from offsets import position_to_data
from receivers import flume_polling_stream

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("port", type=int)
parser.add_argument("--die-after-first-output", action="store_true")
args = parser.parse_args()

wire_lock = threading.Lock()
real_call = pull.AvroIpcClient.call


def call_and_note(self, message, request):
    response = real_call(self, message, request)
    if message == "getEventBatch" and response["events"]:
        with wire_lock, open(os.path.join(args.out, "wire.log"), "a") as f:
            f.write(json.dumps([response["sequenceNumber"], len(response["events"])]) + "\n")
    return response


pull.AvroIpcClient.call = call_and_note


def output(batch):
    bodies = batch.collect()
    if not bodies:
        return
    record = {"time_ms": batch.time, "recovered": batch.recovered,
              "position": position_to_data(batch.positions["pull"]), "bodies": bodies}
    path = os.path.join(args.out, f"batch-{batch.time}-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
    if args.die_after_first_output:
        os.kill(os.getpid(), signal.SIGKILL)


def factory():
    ssc = StreamingContext(batch_interval=0.5, write_ahead_log=True, stop_on_signal=False, log_batches=False)
    bodies = flume_polling_stream(ssc, [("127.0.0.1", args.port)], max_batch_size=50, body_only=True,
                                  value_deserializer="utf-8", name="pull", max_rate=200)
    bodies.foreach_batch(output)
    return ssc


ssc = StreamingContext.get_or_create(args.checkpoint, factory)
ssc.start()
ssc.await_termination()
