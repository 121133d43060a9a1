"""Dask cluster benchmarks: prints figures, asserts nothing.

- ``scale``: records/s of a CPU-heavy map (``--rounds`` SHA-256 rounds per
  record) over the direct Kafka stream, with partition tasks on a LocalCluster
  of 1, 2 and 4 worker processes (one thread each), next to the machine's
  cores: past the cores, more workers cannot help. The topic has 8 partitions
  of ``--records`` records in all; batches of at most ``--batch-records``
  records run back to back (a ManualClock stepped as fast as batches complete);
  timed from the first batch until every record was mapped (cluster start-up
  and the first batch's imports excluded by one untimed warm-up batch).
- ``recovery``: with 3 workers, a partition task kills its own worker with
  SIGKILL in the middle of a batch; the figure is the time from the kill to
  the end of that batch (Dask runs the lost tasks again on the live workers;
  the nanny restarts the dead one meanwhile).

- ``state``: keyed state kept on the workers (``ingest.state_store``) against
  state shipped to the tasks and back every batch (the same job with the
  executor's ``keeps_state`` off): ms per batch of a ``map_with_state`` over
  ``--state-keys`` keys (100,000) when each batch touches 2,000 of them, on 3
  workers, with a checkpoint (full snapshots every 10 commits, deltas
  between). Then the same stateful job with a worker killed with SIGKILL by its
  own state task: the time from the kill to the next completed batch (the
  dead worker's partitions are sent again from the last commit). And the
  same comparison for a windowed reduce (``reduce_by_key_and_window`` with its
  inverse, whose window is keyed state), and for ``window()`` over the same
  records: ms per batch with the window's partitions on the workers vs
  shipped.
  No Kafka needed (a queue stream).
- ``receivers`` (no Kafka needed): records/s of the
  same CPU-heavy map over receivers running on the workers (one receiver per
  worker, each storing blocks of ``--block-records`` records as fast as it can)
  with 1, 2 and 4 worker processes; the time ``store_batch`` takes per block
  with replication 1 and 2 (measured on the receiver's worker); and, with 3
  workers, the time from SIGKILL of the receiver's worker to the next
  completed batch (batches stepped back to back; the blocks received on the
  dead worker are read from their replicas).

Kafka (``scale`` and ``recovery``, the direct stream's parts): ``--bootstrap``, else ``$KAFKA_BOOTSTRAP_SERVERS``.

Usage: ``.venv/bin/python bench/cluster.py [--quick] [--records N] [--rounds R] [--parts scale,recovery,state,receivers]``
(``--quick``: 8,000 records instead of 40,000, 6 timed state batches instead of 20).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout without installing
    sys.path.insert(0, str(REPO))

from direct import kafka_direct_stream  # noqa: E402
from ingest import DaskExecutor, ManualClock, StreamingContext, StreamingListener  # noqa: E402
from receivers import Receiver  # noqa: E402

PARTITIONS = 8


def fill_topic(bootstrap: str, records: int) -> str:
    from confluent_kafka import Producer

    from ingest.testing.kafka import create_topic

    topic = f"cluster-bench-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    for i in range(records):
        while True:
            try:
                producer.produce(topic, value=f"record-{i}".encode(), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("producing the benchmark data failed: records left unacknowledged")
    return topic


def heavy(rounds: int):
    def digest(record: Any) -> bytes:
        value = record.value
        for _ in range(rounds):
            value = hashlib.sha256(value).digest()
        return value
    return digest


def cluster(workers: int) -> Any:
    import distributed

    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, host="127.0.0.1", memory_limit="400MiB")


class Ends(StreamingListener):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_batch_completed(self, event: Any) -> None:
        self.ends.append(event.info.processing_end_time)


def job(client: Any, bootstrap: str, topic: str, batch_records: int, fn: Any) -> tuple[StreamingContext, list[int]]:
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False,
                           log_batches=False)
    stream = kafka_direct_stream(ssc, [topic], client="confluent", max_records_per_batch=batch_records,
                                 kafka_params={"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4().hex}",
                                               "auto.offset.reset": "earliest"})
    counted = [0]
    stream.map(fn).count().foreach_batch(lambda b: counted.__setitem__(0, counted[0] + sum(b.collect())))
    return ssc, counted


def scale(bootstrap: str, topic: str, records: int, batch_records: int, rounds: int, workers: int) -> float:
    import distributed

    with cluster(workers) as local, distributed.Client(local) as client:
        ssc, counted = job(client, bootstrap, topic, batch_records, heavy(rounds))
        ssc.start()
        try:
            ssc.step(timeout=120)  # warm-up: imports and first consumers on every worker
            first = counted[0]
            started = time.perf_counter()
            while counted[0] < records:
                ssc.step(timeout=120)
            elapsed = time.perf_counter() - started
        finally:
            ssc.stop(graceful=False)
    return (records - first) / elapsed


def kill_at(marker: str, record_value: bytes, rounds: int):
    digest = heavy(rounds)

    def fn(record: Any) -> bytes:
        if record.value == record_value:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return digest(record)
            os.write(fd, repr(time.time()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        return digest(record)
    return fn


def recovery(bootstrap: str, topic: str, records: int, batch_records: int, rounds: int) -> tuple[float, int]:
    import distributed

    with tempfile.TemporaryDirectory() as tmp, cluster(3) as local, distributed.Client(local) as client:
        marker = os.path.join(tmp, "killed")
        victim = f"record-{records // 2}".encode()
        ssc, counted = job(client, bootstrap, topic, batch_records, kill_at(marker, victim, rounds))
        ends = Ends()
        ssc.add_listener(ends)
        ssc.start()
        try:
            while counted[0] < records:
                ssc.step(timeout=180)
        finally:
            ssc.stop(graceful=False)
        killed = float(Path(marker).read_text())
        after = min(end for end in ends.ends if end >= killed)
        return after - killed, counted[0]


# -- keyed state on the workers ----------------------------------------------------------


class _Timed(StreamingListener):
    def __init__(self) -> None:
        self.infos: list[Any] = []

    def on_batch_completed(self, event: Any) -> None:
        self.infos.append(event.info)


def _touch_count(key: Any, value: Any, state: Any) -> None:
    state.update(state.get_option(0) + value)


def _state_job(client: Any, checkpoint: str, keys: int, batches: int, touched: int, *, keep_on_workers: bool,
               fn: Any = _touch_count, marked_batch: int | None = None) -> tuple[StreamingContext, _Timed]:
    """map_with_state over `keys` keys (the first batch creates them all), then
    `batches` batches of `touched` records each on distinct keys; batch
    `marked_batch` starts with the record ("key-0", 2)."""
    executor = DaskExecutor(client)
    executor.keeps_state = keep_on_workers  # off: the local path, the state shipped to and from the tasks
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(checkpoint)
    data = [[(f"key-{k}", 1) for k in range(keys)]] + [
        [(f"key-{(b * touched + i) * 7919 % keys}", 1) for i in range(touched)] for b in range(batches)]
    if marked_batch is not None:
        data[marked_batch].insert(0, ("key-0", 2))
    ssc.queue_stream(data, num_partitions=6).map_with_state(fn, num_partitions=6, name="counts").foreach_batch(
        lambda b: None)
    timed = _Timed()
    ssc.add_listener(timed)
    return ssc, timed


def state_cost(keys: int, batches: int, touched: int = 2_000) -> tuple[dict[bool, float], int]:
    """ms per batch (median of the timed batches), state on workers vs
    shipped; and the bytes of state the shipped mode sends to the tasks per
    batch (what stays on the workers otherwise)."""
    import statistics

    import cloudpickle
    import distributed

    result, shipped = {}, 0
    with cluster(3) as local, distributed.Client(local) as client:
        for keep in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                ssc, timed = _state_job(client, tmp, keys, batches + 1, touched, keep_on_workers=keep)
                ssc.start()
                try:
                    ssc.step(batches + 2, timeout=600)  # the first two (all keys created, then seeds sent) untimed
                    if not keep:
                        shipped = len(cloudpickle.dumps(ssc._graph.stateful[0]._committed))
                finally:
                    ssc.stop(graceful=False)
                times = [(i.processing_end_time - i.processing_start_time) * 1000 for i in timed.infos[2:]]
                result[keep] = statistics.median(times)
    return result, shipped


def _window_job(client: Any, checkpoint: str, keys: int, batches: int, touched: int, *,
                keep_on_workers: bool, records: bool = False) -> tuple[StreamingContext, _Timed]:
    """reduce_by_key_and_window (with its inverse) over `keys` keys (the first
    batch brings them all), then `batches` batches of `touched` records each
    on distinct keys; a 60 s window sliding every 60 s, so that every key
    stays in the window and the timed batches maintain it without emitting
    it (output costs the same either way). With `records`, `window()` over
    the same records instead (the window holds them all)."""
    import operator

    executor = DaskExecutor(client)
    executor.keeps_state = keep_on_workers
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=executor, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(checkpoint)
    data = [[(f"key-{k}", 1) for k in range(keys)]] + [
        [(f"key-{(b * touched + i) * 7919 % keys}", 1) for i in range(touched)] for b in range(batches)]
    pairs = ssc.queue_stream(data, num_partitions=6)
    if records:
        pairs.window(60.0, 60.0, name="window-records").foreach_batch(lambda b: None)
    else:
        pairs.reduce_by_key_and_window(operator.add, operator.sub, 60.0, 60.0, num_partitions=6,
                                       name="window-counts").foreach_batch(lambda b: None)
    timed = _Timed()
    ssc.add_listener(timed)
    return ssc, timed


def window_cost(keys: int, batches: int, touched: int = 2_000, *, records: bool = False
                ) -> tuple[dict[bool, float], int]:
    """As `state_cost`, for a windowed reduce: ms per batch with the window's
    partitions on the workers vs shipped, and the bytes of window state the
    shipped mode sends to the tasks per batch."""
    import statistics

    import cloudpickle
    import distributed

    result, shipped = {}, 0
    with cluster(3) as local, distributed.Client(local) as client:
        for keep in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                ssc, timed = _window_job(client, tmp, keys, batches + 1, touched, keep_on_workers=keep,
                                         records=records)
                ssc.start()
                try:
                    ssc.step(batches + 2, timeout=600)  # the first two (all keys brought, seeds sent) untimed
                    if not keep:
                        shipped = len(cloudpickle.dumps(ssc._graph.stateful[0]._committed))
                finally:
                    ssc.stop(graceful=False)
                times = [(i.processing_end_time - i.processing_start_time) * 1000 for i in timed.infos[2:]]
                result[keep] = statistics.median(times)
    return result, shipped


def _kill_once(marker: str, key: str):
    def fn(k: Any, value: Any, state: Any) -> None:
        if k == key and value == 2:  # the marked record of the chosen batch
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                fd = None
            if fd is not None:
                os.write(fd, repr(time.time()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        state.update(state.get_option(0) + 1)
    return fn


def state_recovery(keys: int, batches: int = 6, touched: int = 2_000) -> tuple[float, float, int]:
    """Seconds from a state task's worker SIGKILL to the next completed batch;
    the median batch time without a death, for comparison; partitions reloaded."""
    import statistics

    import distributed

    with tempfile.TemporaryDirectory() as tmp, cluster(3) as local, distributed.Client(local) as client:
        marker = os.path.join(tmp, "killed")
        ssc, timed = _state_job(client, os.path.join(tmp, "ckpt"), keys, batches, touched, keep_on_workers=True,
                                fn=_kill_once(marker, "key-0"), marked_batch=4)
        ssc.start()
        try:
            ssc.step(batches + 1, timeout=600)
        finally:
            ssc.stop(graceful=False)
        killed = float(Path(marker).read_text())
        after = min(i.processing_end_time for i in timed.infos if i.processing_end_time >= killed)
        normal = statistics.median((i.processing_end_time - i.processing_start_time) for i in timed.infos[2:4])
        reloads = ssc._graph.stateful[0].resident_reloads
        return after - killed, normal, reloads


def state_figures(keys: int, batches: int) -> None:
    cost, shipped = state_cost(keys, batches)
    print(f"state: map_with_state over {keys:,} keys, 2,000 touched per batch, 3 workers: "
          f"{cost[True]:.0f} ms per batch with the state on the workers, {cost[False]:.0f} ms with it shipped "
          f"to the tasks and back ({cost[False] / cost[True]:.1f}x; {shipped / 1e6:.1f} MB of state sent to "
          "the tasks per batch when shipped, none when on the workers)", flush=True)
    cost, shipped = window_cost(keys, batches)
    print(f"window state: reduce_by_key_and_window (with inverse) over {keys:,} keys in the window, 2,000 "
          f"touched per batch, 3 workers: {cost[True]:.0f} ms per batch with the window on the workers, "
          f"{cost[False]:.0f} ms with it shipped to the tasks and back ({cost[False] / cost[True]:.1f}x; "
          f"{shipped / 1e6:.1f} MB of window state sent to the tasks per batch when shipped, none when on the "
          "workers)", flush=True)
    cost, shipped = window_cost(keys, batches, records=True)
    print(f"window records: window() holding {keys:,} records and 2,000 more per batch, 3 workers: "
          f"{cost[True]:.0f} ms per batch with the slices on the workers, {cost[False]:.0f} ms with them shipped "
          f"to the tasks and back ({cost[False] / cost[True]:.1f}x; {shipped / 1e6:.1f} MB of the window sent to "
          "the tasks per batch when shipped, none when on the workers)", flush=True)
    seconds, normal, reloads = state_recovery(keys)
    print(f"state recovery: a state task's worker killed -> the next batch completed {seconds:.2f} s later "
          f"(a batch takes {normal:.2f} s without a death; {reloads} partition(s) sent again from the last "
          "commit)", flush=True)
# -- receivers on workers ---------------------------------------------------------------

class SequenceReceiver(Receiver[bytes]):
    """Stores `total` records in blocks of `block_records` as fast as it can;
    each block's metadata carries how long the previous `store_batch` took."""

    def __init__(self, name: str, total: int, block_records: int) -> None:
        super().__init__(name)
        self.total, self.block_records = total, block_records

    def on_start(self) -> None:
        self.start_thread(self._loop, name=f"sequence-{self.name}")

    def on_stop(self) -> None:
        pass

    def _loop(self) -> None:
        previous_ms = None
        i = 0
        while i < self.total and not self.stop_event.is_set():
            block = [f"{self.name}-{j}".encode() for j in range(i, min(i + self.block_records, self.total))]
            started = time.perf_counter()
            self.store_batch(block, {"previous_store_ms": previous_ms})
            previous_ms = (time.perf_counter() - started) * 1000
            i += len(block)


def bytes_heavy(rounds: int):
    def digest(value: bytes) -> bytes:
        for _ in range(rounds):
            value = hashlib.sha256(value).digest()
        return value
    return digest


def receiver_job(client: Any, receivers: int, total: int, block_records: int, rounds: int,
                 replication: int = 2) -> tuple[StreamingContext, list[Any], list[int]]:
    ssc = StreamingContext(1.0, clock=ManualClock(), executor=DaskExecutor(client), stop_on_signal=False,
                           log_batches=False)
    streams = [ssc.receiver_stream(SequenceReceiver(f"seq{r}", total // receivers, block_records),
                                   name=f"seq{r}", replication=replication) for r in range(receivers)]
    counted = [0]
    ssc.union(*streams).map(bytes_heavy(rounds)).count().foreach_batch(
        lambda b: counted.__setitem__(0, counted[0] + sum(b.collect())))
    return ssc, streams, counted


def receiver_scale(workers: int, records: int, block_records: int, rounds: int) -> float:
    """Records/s from the receivers' start until every record was mapped."""
    import distributed

    with cluster(workers) as local, distributed.Client(local) as client:
        ssc, _, counted = receiver_job(client, workers, records, block_records, rounds)
        started = time.perf_counter()
        ssc.start()
        try:
            while counted[0] < records:
                ssc.step(timeout=180)
            elapsed = time.perf_counter() - started
        finally:
            ssc.stop(graceful=False)
    return records / elapsed


def store_cost(replication: int, records: int, block_records: int) -> tuple[float, float]:
    """(median, p90) ms of one store_batch on the receiver's worker, 3 workers."""
    import statistics

    import distributed

    with cluster(3) as local, distributed.Client(local) as client:
        ssc, streams, _ = receiver_job(client, 1, records, block_records, 1, replication)
        ssc.start()
        try:
            while streams[0].records_received < records:
                time.sleep(0.05)
            ms = [b.metadata["previous_store_ms"] for b in streams[0].tracker.tracked()
                  if b.metadata and b.metadata.get("previous_store_ms") is not None]
        finally:
            ssc.stop(graceful=False)
    ms.sort()
    return statistics.median(ms), ms[int(len(ms) * 0.9)]


def receiver_recovery(records: int, block_records: int, rounds: int) -> tuple[float, int, int]:
    """Seconds from SIGKILL of the receiver's worker to the next completed batch,
    records lost (0 with replication 2), records mapped by then."""
    import distributed

    with cluster(3) as local, distributed.Client(local) as client:
        ssc, streams, counted = receiver_job(client, 1, records, block_records, rounds)
        ends = Ends()
        ssc.add_listener(ends)
        ssc.start()
        try:
            while streams[0].records_received < records // 2:
                ssc.step(timeout=180)
            worker = streams[0].supervisor.worker
            pid = client.run(os.getpid, workers=[worker])[worker]
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            before = len(ends.ends)
            while len(ends.ends) == before:
                ssc.step(timeout=180)
            after = ends.ends[before]
            lost = streams[0].records_lost
        finally:
            ssc.stop(graceful=False)
    return after - killed, lost, counted[0]


def receivers_part(records: int, block_records: int, rounds: int) -> None:
    print(f"receivers: {records:,} records in blocks of {block_records:,}, {rounds} SHA-256 rounds per record, "
          "one receiver per worker, replication 2", flush=True)
    base = None
    for workers in (1, 2, 4):
        rate = receiver_scale(workers, records, block_records, rounds)
        base = base or rate
        print(f"receivers: {workers} worker process(es): {rate:,.0f} records/s ({rate / base:.2f}x of 1 worker)",
              flush=True)
    costs = {r: store_cost(r, records, block_records) for r in (1, 2)}
    for r, (median, p90) in costs.items():
        print(f"receivers: store_batch per block of {block_records:,} with replication {r}: median "
              f"{median:.2f} ms, p90 {p90:.2f} ms", flush=True)
    print(f"receivers: replication 2 costs {costs[2][0] - costs[1][0]:+.2f} ms per block (median) over 1",
          flush=True)
    seconds, lost, mapped = receiver_recovery(records, block_records, rounds)
    print(f"receivers: receiver's worker killed -> next batch completed {seconds:.2f} s later "
          f"({lost} records lost; {mapped:,} mapped by then)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--batch-records", type=int, default=None,
                        help="records per batch at most (default: a tenth of --records)")
    parser.add_argument("--rounds", type=int, default=200, help="SHA-256 rounds per record: the CPU-heavy map")
    parser.add_argument("--quick", action="store_true", help="8,000 records")
    parser.add_argument("--parts", default="scale,recovery,state,receivers",
                        help="comma-separated: scale, recovery (direct stream), state (keyed state on workers), "
                             "receivers (receivers on workers)")
    parser.add_argument("--state-keys", type=int, default=100_000, help="keys of the state part's job")
    parser.add_argument("--block-records", type=int, default=200, help="records per received block")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    unknown = parts - {"scale", "recovery", "state", "receivers"}
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}: choose among scale, recovery, state, receivers")
    if parts & {"scale", "recovery"} and not args.bootstrap:
        parser.error("give --bootstrap or set KAFKA_BOOTSTRAP_SERVERS (or leave out the parts scale and recovery)")
    records = 8_000 if args.quick else args.records
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {os.cpu_count()} cores ({usable} usable by this process); load average "
          f"{os.getloadavg()[0]:.1f}")
    if "state" in parts:
        state_figures(args.state_keys, 6 if args.quick else 20)
    if "receivers" in parts:
        receivers_part(records, args.block_records, args.rounds)
    if not parts & {"scale", "recovery"}:
        return 0
    batch_records = args.batch_records or max(1, records // 10)
    topic = fill_topic(args.bootstrap, records)
    print(f"topic {topic}: {records:,} records on {PARTITIONS} partitions, batches of <= {batch_records:,}, "
          f"{args.rounds} SHA-256 rounds per record")
    if "scale" in parts:
        base = None
        for workers in (1, 2, 4):
            rate = scale(args.bootstrap, topic, records, batch_records, args.rounds, workers)
            base = base or rate
            print(f"scale: {workers} worker process(es): {rate:,.0f} records/s ({rate / base:.2f}x of 1 worker)",
                  flush=True)
    if "recovery" in parts:
        seconds, seen = recovery(args.bootstrap, topic, records, batch_records, args.rounds)
        print(f"recovery: worker killed mid-batch -> that batch completed {seconds:.2f} s later "
              f"({seen:,} of {records:,} records mapped: {'all' if seen == records else 'MISMATCH'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
