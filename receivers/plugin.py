"""What the `receivers` package adds to the core, registered when imported.

The core loads this module through the `ingest.sources` entry point (or its
list of built-in source modules) the first time a receiver stream is asked
for, so `from ingest import StreamingContext; ssc.socket_text_stream(...)`
needs no other import. It registers:

- the stream factories `receiver_stream`, `socket_text_stream`, `kafka_stream`,
  `flume_stream` and `flume_polling_stream`;
- an `ingest checkpoint fsck` check of every receiver's write-ahead log
  (`<checkpoint>/receivers/<stream>/`).

Registering is cheap: each factory and the check import what they need when
first called, so a job that uses another source (a file or direct Kafka
stream) does not load the receivers' machinery, Kafka client or WAL.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterator

from ingest.fsck_checks import register_fsck_check
from ingest.errors import IngestError
from ingest.sources import register_stream_factory
from receivers.flume_extra import flume_polling_stream, flume_stream  # fastavro only when used

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream
    from receivers.receiver import Receiver

WAL_ROOT = "receivers"
"""Where receivers keep their write-ahead logs, under the checkpoint directory."""


def receiver_stream(ssc: "StreamingContext", receiver: "Receiver[Any]", *, max_rate: float | None = None,
                    name: str | None = None, kind: str = "receiver", **options: Any) -> "DStream[Any]":
    """`StreamingContext.receiver_stream`: see its documentation."""
    from receivers.input import ReceiverInputDStream

    return ReceiverInputDStream(ssc, receiver, max_rate=max_rate, name=name, kind=kind, **options)


def socket_text_stream(ssc: "StreamingContext", host: str, port: int, *, encoding: str = "utf-8",
                       errors: str = "report", max_rate: float | None = None, name: str | None = None,
                       connect_timeout: float = 10.0, read_timeout: float | None = 60.0,
                       max_line_bytes: int = 1 << 20, **stream_options: Any) -> "DStream[str]":
    """`StreamingContext.socket_text_stream`: see its documentation."""
    from receivers.socket import SocketTextReceiver

    receiver = SocketTextReceiver(host, port, encoding=encoding, errors=errors, connect_timeout=connect_timeout,
                                  read_timeout=read_timeout, max_line_bytes=max_line_bytes)
    return ssc.receiver_stream(receiver, max_rate=max_rate, name=name, kind="socket", **stream_options)


def kafka_stream(ssc: "StreamingContext", *args: Any, **options: Any) -> "DStream[Any]":
    """`receivers.kafka_stream`: see its documentation."""
    from receivers.kafka import kafka_stream as make_stream

    return make_stream(ssc, *args, **options)


def wal_directories(checkpoint_dir: str) -> list[str]:
    """The write-ahead-log directory of every receiver stream in a checkpoint."""
    root = os.path.join(checkpoint_dir, WAL_ROOT)
    if not os.path.isdir(root):
        return []
    return sorted(os.path.join(root, name) for name in os.listdir(root))


def check_write_ahead_logs(checkpoint_dir: str) -> Iterator[str]:
    """The fsck check: every problem `receivers.block_log.verify` finds in each
    receiver's log (segments, bounds, records, then a replay of the events).
    It reads without repairing: opening a `WriteAheadLog` would truncate torn
    tails and remove leftovers, which fsck must not do. On HDFS and S3 (one
    object per record) through the storage, configured as its client's usual
    configuration says (environment, ~/.aws, HADOOP_USER_NAME)."""
    from ingest.storage import storage_for
    from receivers import block_log

    if "://" in checkpoint_dir and not checkpoint_dir.startswith("file://"):
        yield from block_log.verify_storage(storage_for(checkpoint_dir))
        return
    batches = _checkpoint_batches(checkpoint_dir)
    for directory in wal_directories(checkpoint_dir):
        if not os.path.isdir(directory):
            yield f"{directory} is not a directory: a receiver's write-ahead log should be there"
            continue
        yield from (str(p) for p in block_log.verify(directory, checkpoint=batches))


def _checkpoint_batches(checkpoint_dir: str) -> tuple[int | None, list[int]] | None:
    """(last committed batch, batches to re-run) as a restart's recovery of the
    checkpoint finds them (reading only), for the logs' cross-check with the
    intents; None when that recovery fails (the core's checks report why)."""
    from ingest.checkpoint import CheckpointLog

    try:
        ckpt = CheckpointLog(checkpoint_dir)
        meta = ckpt.read_metadata()
        recovery = ckpt.recover(int((meta or {}).get("batch_interval_ms", 1000)))
    except IngestError:
        return None
    if recovery is None:  # no batch in the checkpoint: every allocation in a log lost its intent
        return None, []
    return recovery.last_committed_ms, [t for t, _ in recovery.pending]


register_stream_factory("receiver_stream", receiver_stream)
register_stream_factory("socket_text_stream", socket_text_stream)
register_stream_factory("kafka_stream", kafka_stream)
register_stream_factory("flume_stream", flume_stream)
register_stream_factory("flume_polling_stream", flume_polling_stream)
register_fsck_check(check_write_ahead_logs)
