"""Write-ahead log benchmarks: prints figures, asserts nothing.

Sections (run all by default, or pick with ``--section``):

- ``wal``: `WriteAheadLog.append_many` with ``fsync="always"``, one call per
  block as a receiver writes a block, next to a raw sequential ``write`` +
  ``fdatasync`` of the same bytes per block on the same disk. Cases are blocks of
  100 records of 1 KiB and of 64 KiB, and a 100 KiB block stored as one record
  (the per-record cost of the other two shows against it). Figures are payload
  MB/s (1 MB = 10^6 bytes); the ratio is WAL/raw.

- ``receiver``: a receiver storing blocks with `store_batch` through a real
  `StreamingContext` with a checkpoint, with ``write_ahead_log=True`` (each
  block appended and fsynced before `store_batch` returns) and without (blocks
  kept in memory). Blocks are 100 records of 100-1000 random bytes; the figure
  is records/s from the first `store_batch` until an output operation has
  counted all ``--receiver-records`` records, next to the DESIGN target
  (WAL >= 0.8x no WAL). Runs alternate between the two modes and a raw
  write + fdatasync of a block of the same size: the floor, on this disk, of
  any log that syncs every block.

Add a section by writing ``def run_<name>(args) -> None`` and registering it in
`SECTIONS`.

Usage: ``.venv/bin/python bench/wal.py [--dir DIR] [--seconds S] [--section wal|receiver]
[--receiver-records N]``.
By default the files go to a temporary directory under ``bench/out/`` in the
repository (git-ignored), that is on the repository's disk; the directory and its
filesystem are printed. ``--dir /tmp`` measures /tmp instead (check that it is
not a tmpfs, where fdatasync costs nothing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from receivers.wal import FILE_HEADER_SIZE, WriteAheadLog  # noqa: E402
from _common import filesystem_of  # noqa: E402  (bench/ is the script directory)

SEGMENT_BYTES = 64 << 20


@dataclass
class Run:
    payload_bytes: int = 0
    seconds: float = 0.0
    blocks: int = 0
    fsyncs: int = 0

    def add(self, other: Run) -> None:
        self.payload_bytes += other.payload_bytes
        self.seconds += other.seconds
        self.blocks += other.blocks
        self.fsyncs += other.fsyncs

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / self.seconds / 1e6 if self.seconds else 0.0


def block_of(record_bytes: int, records: int) -> list[bytes]:
    # Distinct random payloads: nothing along the path can shortcut repeated data.
    return [os.urandom(record_bytes) for _ in range(records)]


def raw_run(directory: Path, block: list[bytes], seconds: float) -> Run:
    """Sequential write + fdatasync of one block at a time into one file."""
    data = memoryview(b"".join(block))
    path = directory / "raw.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    run = Run()
    in_file = 0
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            view = data
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
            run.blocks += 1
            run.fsyncs += 1
            in_file += len(data)
            if in_file >= SEGMENT_BYTES:  # bound the disk use, as the WAL's clean-up does
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                in_file = 0
    finally:
        run.seconds = time.perf_counter() - start
        os.close(fd)
        path.unlink()
    run.payload_bytes = run.blocks * len(data)
    return run


def wal_run(directory: Path, block: list[bytes], seconds: float) -> Run:
    """append_many of one block at a time, fsync="always", cleaning up behind."""
    run = Run()
    log_dir = directory / "wal"
    with WriteAheadLog(log_dir, fsync="always", segment_max_bytes=SEGMENT_BYTES) as wal:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            handles = wal.append_many(block)
            run.blocks += 1
            if handles[0].offset == FILE_HEADER_SIZE and handles[0].segment > 1:  # a new segment
                wal.delete_segments_before(handles[0])
        run.seconds = time.perf_counter() - start
        run.fsyncs = wal.fsyncs
    shutil.rmtree(log_dir)
    run.payload_bytes = run.blocks * sum(len(p) for p in block)
    return run


def run_wal(args: argparse.Namespace) -> None:
    directory = args.work_dir
    print('WAL append_many per block, fsync="always", vs raw write + fdatasync per block')
    print(f"files in {directory} ({filesystem_of(directory)}), {args.seconds:g} s per case")
    print(
        f"{'record':>9} {'records':>8} {'block':>10} {'raw MB/s':>10} {'WAL MB/s':>10} "
        f"{'WAL/raw':>8} {'raw blk/s':>10} {'WAL blk/s':>10} {'WAL fsync/blk':>14}"
    )
    for record_bytes, records_per_block in args.cases:
        block = block_of(record_bytes, records_per_block)
        raw, wal = Run(), Run()
        # Alternate the two in rounds so that drift of the disk affects both alike.
        rounds = 5
        for _ in range(rounds):
            raw.add(raw_run(directory, block, args.seconds / (2 * rounds)))
            wal.add(wal_run(directory, block, args.seconds / (2 * rounds)))
        ratio = wal.mb_per_s / raw.mb_per_s if raw.mb_per_s else float("nan")
        print(
            f"{_size(record_bytes):>9} {records_per_block:>8} "
            f"{_size(record_bytes * records_per_block):>10} "
            f"{raw.mb_per_s:>10.1f} {wal.mb_per_s:>10.1f} {ratio:>8.2f} "
            f"{raw.blocks / raw.seconds:>10.1f} {wal.blocks / wal.seconds:>10.1f} "
            f"{wal.fsyncs / wal.blocks:>14.2f}"
        )


# ------------------------------------------------------------- section "receiver"

RECEIVER_BLOCK_RECORDS = 100
RECEIVER_RATIO_TARGET = 0.8  # DESIGN.md: reliable receiver with WAL >= 0.8x without


@dataclass
class ReceiverRun:
    records: int = 0
    blocks: int = 0
    seconds: float = 0.0
    """From the first store_batch until the output counted every record."""
    store_seconds: float = 0.0
    """From the first store_batch until the last one returned."""
    fsyncs: int = 0

    def add(self, other: ReceiverRun) -> None:
        self.records += other.records
        self.blocks += other.blocks
        self.seconds += other.seconds
        self.store_seconds += other.store_seconds
        self.fsyncs += other.fsyncs

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def receiver_blocks(count: int, seed: int = 1) -> list[list[bytes]]:
    """Distinct blocks of RECEIVER_BLOCK_RECORDS random records of 100-1000 bytes,
    cycled through by the receiver (made up front: not part of the timing)."""
    import random

    rng = random.Random(seed)
    return [[os.urandom(rng.randint(100, 1000)) for _ in range(RECEIVER_BLOCK_RECORDS)] for _ in range(count)]


def receiver_run(directory: Path, wal: bool, total_records: int, blocks: list[list[bytes]]) -> ReceiverRun:
    """One job: a receiver stores `total_records` records with store_batch as
    fast as it can; batches of 50 ms count them in an output operation."""
    import threading

    from ingest import StreamingContext
    from receivers import Receiver

    class BlockReceiver(Receiver[bytes]):
        def __init__(self) -> None:
            super().__init__("bench receiver")
            self.started_at = self.stored_at = 0.0
            self.error: BaseException | None = None
            self._thread: threading.Thread | None = None

        def on_start(self) -> None:
            self._thread = threading.Thread(target=self._store_all, name="bench-receiver")
            self._thread.start()

        def on_stop(self) -> None:
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join()

        def _store_all(self) -> None:
            try:
                self.started_at = time.perf_counter()
                for i in range(total_records // RECEIVER_BLOCK_RECORDS):
                    if self.stop_event.is_set():
                        return
                    self.store_batch(blocks[i % len(blocks)], {"block": i})
                self.stored_at = time.perf_counter()
            except BaseException as exc:  # noqa: BLE001 - reported by the run
                self.error = exc

    checkpoint = directory / ("receiver-wal" if wal else "receiver-memory")
    ssc = StreamingContext(batch_interval=0.05, write_ahead_log=wal, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(checkpoint))
    receiver = BlockReceiver()
    stream = ssc.receiver_stream(receiver, name="bench")
    counted = [0]
    done = threading.Event()
    finished_at = [0.0]

    def count(batch) -> None:
        counted[0] += batch.count()
        if counted[0] >= total_records and not done.is_set():
            finished_at[0] = time.perf_counter()
            done.set()

    stream.foreach_batch(count)
    ssc.start()
    try:
        if not done.wait(600):
            raise RuntimeError(f"only {counted[0]} of {total_records} records were processed in 600 s")
        if receiver.error is not None:
            raise receiver.error
        fsyncs = stream.block_log.wal.fsyncs if stream.block_log is not None else 0
    finally:
        ssc.stop(graceful=False)
        shutil.rmtree(checkpoint, ignore_errors=True)
    records = total_records // RECEIVER_BLOCK_RECORDS * RECEIVER_BLOCK_RECORDS
    return ReceiverRun(records, records // RECEIVER_BLOCK_RECORDS, finished_at[0] - receiver.started_at,
                       receiver.stored_at - receiver.started_at, fsyncs)


def run_receiver(args: argparse.Namespace) -> None:
    directory = args.work_dir
    total = max(RECEIVER_BLOCK_RECORDS, args.receiver_records)
    blocks = receiver_blocks(64)
    block_bytes = sum(len(r) for b in blocks for r in b) / len(blocks)
    print("Receiver storing blocks with store_batch, write_ahead_log=True (fsync per block) vs off")
    print(f"files in {directory} ({filesystem_of(directory)}); {RECEIVER_BLOCK_RECORDS} records of 100-1000 B "
          f"per block ({block_bytes / 1024:.0f} KiB on average), {total} records per run, batches of 50 ms")
    receiver_run(directory, True, min(total, 20 * RECEIVER_BLOCK_RECORDS), blocks)  # warm up imports and caches
    with_wal, without = ReceiverRun(), ReceiverRun()
    # The floor under any WAL with fsync per block on this disk: the same bytes
    # per block, written and fdatasync'ed with nothing else around them.
    floor = Run()
    # Alternate the three in rounds so that drift of the disk affects all alike.
    for _ in range(3):
        without.add(receiver_run(directory, False, total, blocks))
        with_wal.add(receiver_run(directory, True, total, blocks))
        floor.add(raw_run(directory, blocks[0], 0.5))
    print(f"{'':>8} {'records/s':>11} {'MB/s':>8} {'blocks/s':>9} {'store-only rec/s':>17} {'fsync/blk':>10}")
    for label, run in (("no WAL", without), ("WAL", with_wal)):
        print(f"{label:>8} {run.records_per_s:>11,.0f} {run.records_per_s * block_bytes / RECEIVER_BLOCK_RECORDS / 1e6:>8.1f} "
              f"{run.blocks / run.seconds:>9.1f} {run.records / run.store_seconds:>17,.0f} "
              f"{run.fsyncs / run.blocks:>10.2f}")
    ratio = with_wal.records_per_s / without.records_per_s if without.records_per_s else float("nan")
    verdict = "meets" if ratio >= RECEIVER_RATIO_TARGET else "MISSES"
    print(f"WAL / no WAL: {ratio:.2f}x (DESIGN target >= {RECEIVER_RATIO_TARGET}x: {verdict} it)")
    floor_records = floor.blocks / floor.seconds * RECEIVER_BLOCK_RECORDS
    print(f"disk floor: raw write + fdatasync of one such block: {floor.blocks / floor.seconds:,.0f} blocks/s, "
          f"i.e. at most {floor_records:,.0f} records/s with fsync per block; the WAL receiver reaches "
          f"{with_wal.records_per_s / floor_records:.2f} of it")


def kafka_receiver_run(bootstrap: str, topic: str, total: int, directory: Path, wal: bool) -> float:
    """records/s of the reliable Kafka receiver until `total` records were counted."""
    import threading
    import uuid

    from ingest import StreamingContext
    from receivers import kafka_stream

    ssc = StreamingContext(batch_interval=0.5, write_ahead_log=wal, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory / f"ckpt-{uuid.uuid4().hex[:8]}"))
    counted = [0]
    done = threading.Event()

    def count(batch: Any) -> None:
        counted[0] += sum(batch.collect())
        if counted[0] >= total:
            done.set()

    kafka_stream(ssc, [topic], {"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                                "auto.offset.reset": "earliest"}).count().foreach_batch(count)
    start = time.perf_counter()
    ssc.start()
    if not done.wait(300):
        raise RuntimeError(f"only {counted[0]} of {total} records arrived within 300 s")
    elapsed = time.perf_counter() - start
    ssc.stop(graceful=False)
    return total / elapsed


def run_kafka_receiver(args: argparse.Namespace) -> None:
    """The reliable Kafka receiver (blocks of up to 10,000 records) with and
    without the WAL: the same receiver doing its real work, consuming."""
    import os
    import uuid

    from ingest.testing.kafka import KafkaBroker, create_topic, produce

    print("== kafka-receiver: the reliable Kafka receiver, WAL (fsync per block) vs no WAL")
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    if not bootstrap:
        broker = KafkaBroker().start()
        bootstrap = broker.bootstrap
    try:
        total = args.kafka_records
        topic = f"wal-bench-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, topic, partitions=2)
        produce(bootstrap, topic, [os.urandom(100) for _ in range(total)], config={"linger.ms": 20})
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(2):
            for wal in (False, True):
                rates[wal].append(kafka_receiver_run(bootstrap, topic, total, args.work_dir, wal))
        no_wal, with_wal = max(rates[False]), max(rates[True])
        print(f"{total:,} records of 100 B on 2 partitions, best of 2 runs each")
        print(f"  without WAL: {no_wal:>10,.0f} records/s")
        print(f"  with WAL:    {with_wal:>10,.0f} records/s")
        print(f"  ratio WAL / no WAL: {with_wal / no_wal:.2f}x   (target >= 0.8x, DESIGN.md)")
    finally:
        if broker is not None:
            broker.stop()


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {
    "wal": run_wal,
    "receiver": run_receiver,
    "kafka-receiver": run_kafka_receiver,
}


DEFAULT_CASES = "1024x100,65536x100,102400x1"


def _cases(text: str) -> list[tuple[int, int]]:
    try:
        return [(int(size), int(count)) for size, count in (c.split("x") for c in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not RECORD_BYTESxRECORDS,...") from None


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):g} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):g} KiB"
    return f"{n} B"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS),
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write (default: a temporary directory under bench/out/)")
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="time per case, split between raw and WAL (default 6)")
    parser.add_argument("--cases", type=_cases, default=_cases(DEFAULT_CASES),
                        help=f"RECORD_BYTESxRECORDS_PER_BLOCK,... (default {DEFAULT_CASES})")
    parser.add_argument("--receiver-records", type=int, default=1_000_000,
                        help="records per run of the receiver section (default 1000000)")
    parser.add_argument("--kafka-records", type=int, default=500_000,
                        help="records per run of the kafka-receiver section (default 500000)")
    parser.add_argument("--bootstrap", default=None,
                        help="Kafka for the kafka-receiver section (default: $KAFKA_BOOTSTRAP_SERVERS, "
                             "else a broker started for the run)")
    args = parser.parse_args(argv)

    parent = args.dir if args.dir is not None else REPO / "bench" / "out"
    parent.mkdir(parents=True, exist_ok=True)
    args.work_dir = Path(tempfile.mkdtemp(prefix="wal-bench-", dir=parent)).resolve()
    try:
        for name in args.section or list(SECTIONS):
            SECTIONS[name](args)
            print()
    finally:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
