"""The reliable Kafka receiver: a consumer group member that stores before it commits.

    from receivers import kafka_stream
    stream = kafka_stream(ssc, topics=["events"],
                          kafka_params={"bootstrap.servers": "...", "group.id": "etl"})

The receiver consumes up to `block_records` records at a time, stores them as
one block with `store_batch` (with `write_ahead_log=True` the block is in the
WAL, fsynced, when that returns) and only then commits their offsets to the
group (waiting for the answer, at most `commit_timeout` seconds). A crash between the two leaves the block in the WAL with
its offsets as metadata; on restart the receiver resumes each partition after
the larger of the committed and the durable offset, so nothing is read twice
into a second block and nothing is lost.

Rebalances: when partitions are revoked, the records fetched for them and not
yet stored are dropped (their next owner reads them from the committed
offset) and a block being stored is stored and committed before the
revocation completes, so a rebalance inside one block neither loses nor
duplicates. Under `partition.assignment.strategy=cooperative-sticky` the
assignment changes incrementally. Backpressure: while a block waits to be
stored (the store is full, or the rate limit holds it), the partitions are
paused and the consumer keeps polling, so it never exceeds
`max.poll.interval.ms` and leaves the group. Broker faults: once nothing was
stored for 30 s after a client error, a warning names the cause, repeated each
minute, and the receiver's `last_error` in `ssc.status()` shows it. A handshake the
brokers refuse (wrong password, untrusted certificate, SASL mechanism not offered)
stops the job at once with the cause and the setting to fix (`ingest.kafka.security`).

Without the WAL, blocks live in memory and a crash loses those not yet
processed even though their offsets were committed: use the WAL, or the
direct stream (`direct.kafka_direct_stream`), which needs neither.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ingest.errors import ConfigError, ReceiverError
from ingest.install_hint import install_hint
from ingest.kafka.calls import BrokerCallError, call, retriable_confluent
from ingest.kafka.client_logs import with_client_logs
from ingest.kafka.config import check_common, redact
from ingest.kafka.records import KafkaRecord, from_confluent
from ingest.kafka.security import HandshakeRefusedError, confluent_refusal
from ingest.kafka.stall import StallWatch
from receivers.receiver import Receiver

if TYPE_CHECKING:
    from ingest.context import StreamingContext
    from ingest.dstream import DStream

log = logging.getLogger("receivers.kafka")

COMMITTED_TIMEOUT = 30.0  # seconds to read a new assignment's committed offsets, retrying retriable errors


class KafkaReceiver(Receiver[KafkaRecord]):
    _clock = staticmethod(time.monotonic)  # of stall tracking (tests drive it)

    def __init__(self, topics: Iterable[str], kafka_params: Mapping[str, Any], *, block_records: int = 10_000,
                 poll_timeout: float = 0.2, name: str | None = None) -> None:
        try:
            import confluent_kafka as ck
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(f"kafka_stream needs confluent-kafka: {install_hint('kafka')}") from exc
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            raise ConfigError(f"kafka_stream: topics must be a non-empty list of names, got {self.topics!r}")
        params = check_common(kafka_params)
        if not params.get("group.id"):
            raise ConfigError("kafka_stream needs kafka_params['group.id']: the receiver is a consumer group member")
        if not isinstance(block_records, int) or block_records < 1:
            raise ConfigError(f"block_records must be a positive integer, got {block_records!r}")
        self.conf = {**params, "enable.auto.commit": False}
        self.conf.setdefault("isolation.level", "read_committed")
        try:
            ck.Consumer(with_client_logs(self.conf)).close()  # checks every key now; librdkafka names an unknown one
        except (ck.KafkaException, ValueError, TypeError) as exc:
            arg = exc.args[0] if exc.args else exc
            raise ConfigError(f"invalid kafka_params: {arg.str() if hasattr(arg, 'str') else arg}") from None
        super().__init__(name or f"kafka {','.join(self.topics)} ({params['group.id']})")
        self.block_records = block_records
        self.poll_timeout = poll_timeout
        self._thread: threading.Thread | None = None
        # Next offset per partition already stored; survives restarts of this
        # receiver so that a restart never stores records twice.
        self._durable: dict[tuple[str, int], int] | None = None
        self.records_stored = 0
        self.dropped_after_revoke = 0  # fetched, not stored, of partitions revoked since: their new owner reads them
        self.revocations = 0
        self.pauses = 0  # blocks whose storing waited, with the partitions paused
        # Seconds a store may take before the partitions are paused: long
        # enough that an ordinary store never costs the prefetched records.
        self.pause_after = 0.5
        self.commit_timeout = 30.0  # seconds an offset commit may take before the receiver restarts
        strategy = str(self.conf.get("partition.assignment.strategy", ""))
        self.cooperative = "cooperative" in strategy or str(self.conf.get("group.protocol", "")) == "consumer"
        self._stall = StallWatch(self.name, log, clock=lambda: self._clock())
        self._told_unreachable = False
        self._refused = False  # a refused handshake stopped the job once; later reports add nothing

    def on_start(self) -> None:
        if self._durable is None:  # once per process: what the WAL already holds
            self._durable = self._durable_offsets()
        self._thread = self.start_thread(self._run, f"kafka-receiver-{self.topics[0]}")

    def on_stop(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None

    def health(self) -> dict[str, Any]:
        """Whether the receiver is stalled on its brokers, for how long, and the last error met."""
        return self._stall.status()

    def _durable_offsets(self) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for meta in self.recovered_metadata():
            for topic, partition, next_offset in meta.get("offsets", []):
                key = (topic, int(partition))
                out[key] = max(out.get(key, 0), int(next_offset))
        return out

    def _run(self) -> None:
        import confluent_kafka as ck

        run = _Run(self)
        try:
            consumer = ck.Consumer({**with_client_logs(self.conf), "error_cb": self._on_client_error, "on_commit": run.on_commit})
        except ck.KafkaException as exc:
            self.restart(f"cannot create the consumer: {exc}", exc)
            return
        run.consumer = consumer
        self._stall.progress()  # a (re)started consumer has its own 30 s before it counts as stalled
        storer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kafka-store-{self.topics[0]}")
        try:
            consumer.subscribe(self.topics, on_assign=run.on_assign, on_revoke=run.on_revoke, on_lost=run.on_lost)
            while not self.stop_event.is_set():
                self._check_stall()
                self._fill_block(consumer, run.pending)
                records, offsets = run.take_block()
                if records:
                    run.store(storer, records, offsets)
        except ck.KafkaException as exc:
            if not self.stop_event.is_set():
                self.restart(f"{self.name}: {exc}", exc)
        finally:
            storer.shutdown(wait=True)
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing after a failure
                pass

    def _on_client_error(self, err: Any) -> None:
        self._stall.failed(err.str())
        told = confluent_refusal(err, self.conf)
        if told is not None and not self._refused:
            # A refused handshake: no restart or retry mends it, a setting must change.
            self._refused = True
            self.stop(f"cannot reach {self.conf['bootstrap.servers']}", HandshakeRefusedError(told))
        elif err.name() == "_ALL_BROKERS_DOWN" and not self._told_unreachable:
            # Said once, at once: a wrong address otherwise shows only as a stall
            # warning after 30 s (the receiver keeps trying, as it must for an outage).
            self._told_unreachable = True
            log.warning("%s: no Kafka broker answers at %s (kafka_params['bootstrap.servers']): %s; check the "
                        "address (host:port of a broker's listener) and that the broker is running. The "
                        "receiver keeps trying", self.name, self.conf["bootstrap.servers"], err.str())

    def _check_stall(self) -> None:
        warning = self._stall.check()
        if warning is not None:
            self.report_error(warning)

    def _fill_block(self, consumer: Any, msgs: list[Any]) -> None:
        """Consume into `msgs` up to `block_records` messages, for at most one
        block interval after the first arrives: bigger blocks mean fewer fsyncs
        and commits. `msgs` is the run's pending list, which a revocation
        inside `consume()` filters."""
        if len(msgs) < self.block_records:
            msgs.extend(consumer.consume(self.block_records - len(msgs), self.poll_timeout))
        if not msgs:
            return
        deadline = time.monotonic() + self.supervisor.block_interval
        while len(msgs) < self.block_records and not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = consumer.consume(self.block_records - len(msgs), min(left, self.poll_timeout))
            if not more:
                break
            msgs.extend(more)

    def describe_config(self) -> dict[str, Any]:
        return redact(self.conf)


class _Run:
    """One consumer's life inside the receiving thread: its assignment, the
    messages fetched and not yet stored, and the block being stored.

    Rebalances: a revocation drops the fetched-but-unstored messages of the
    revoked partitions (their new owner reads them from the committed offset,
    so nothing is lost and nothing is read twice), and waits for a block in
    the middle of being stored, committing its offsets before the partitions
    go. Under a cooperative protocol the assignment changes incrementally.

    Backpressure: a block is stored on the storer thread; if storing waits
    (the store is full, or the rate limit holds it), the partitions are paused
    and the consumer keeps polling, so it stays in the group however long the
    wait, and resumes once the block is stored.
    """

    def __init__(self, receiver: KafkaReceiver) -> None:
        self.receiver = receiver
        self.consumer: Any = None  # set once created: its configuration names this run's on_commit
        self.assigned: set[tuple[str, int]] = set()
        self.pending: list[Any] = []
        self.storing: Future[Any] | None = None
        self.storing_offsets: dict[tuple[str, int], int] = {}
        self.paused = False
        self.commit_results: list[tuple[Any, Any]] = []

    # -- rebalance callbacks (on the receiving thread, inside poll/consume) ------------

    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        r = self.receiver
        durable = r._durable or {}
        if durable and partitions:
            committed = {(tp.topic, tp.partition): tp.offset for tp in self._committed(partitions)}
            for tp in partitions:
                resume = durable.get((tp.topic, tp.partition))
                if resume is not None and resume > committed.get((tp.topic, tp.partition), -1):
                    tp.offset = resume
                    log.info("%s: %s[%d] resumes at %d (stored in the write-ahead log, not yet committed)",
                             r.name, tp.topic, tp.partition, resume)
        if r.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        self.assigned.update((tp.topic, tp.partition) for tp in partitions)
        if self.paused and partitions:  # a block is still being stored: new partitions wait too
            consumer.pause(partitions)

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        r = self.receiver
        gone = {(tp.topic, tp.partition) for tp in partitions}
        r.revocations += 1
        self._settle_store(gone)
        kept = [m for m in self.pending if (m.topic(), m.partition()) not in gone]
        r.dropped_after_revoke += len(self.pending) - len(kept)
        self.pending[:] = kept
        self.assigned.difference_update(gone)
        if r.cooperative:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()
        log.info("%s: partitions revoked: %s", r.name, [f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # The group already gave them away: nothing can be committed for them any more.
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self.storing_offsets = {tp: o for tp, o in self.storing_offsets.items() if tp not in gone}
        self.on_revoke(consumer, partitions)

    def _settle_store(self, gone: set[tuple[str, int]]) -> None:
        """A block being stored is stored and committed before its partitions are given up."""
        if self.storing is None:
            return
        self.storing.result()
        self.storing = None
        offsets = {tp: o for tp, o in self.storing_offsets.items() if tp in gone}
        self.storing_offsets = {tp: o for tp, o in self.storing_offsets.items() if tp not in gone}
        if offsets:
            # Inside a rebalance callback the consumer must not be polled: a
            # synchronous commit (bounded by librdkafka's request timeout) it is.
            import confluent_kafka as ck

            self.consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=False)

    # -- blocks ----------------------------------------------------------------------------

    def take_block(self) -> tuple[list[KafkaRecord], dict[tuple[str, int], int]]:
        import confluent_kafka as ck

        r = self.receiver
        msgs, self.pending[:] = list(self.pending), []
        records: list[KafkaRecord] = []
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise ReceiverError(f"{r.name}: fatal consumer error: {err.str()}")
                if err.code() != ck.KafkaError._PARTITION_EOF:
                    r._stall.failed(err.str())
                    r.report_error(f"{r.name}: {err.str()}")
                continue
            key = (m.topic(), m.partition())
            if key not in self.assigned:
                r.dropped_after_revoke += 1
                continue
            records.append(from_confluent(m))
            offsets[key] = m.offset() + 1
        return records, offsets

    def store(self, storer: ThreadPoolExecutor, records: list[KafkaRecord],
              offsets: dict[tuple[str, int], int]) -> None:
        """Store one block (pausing and polling while that waits), then commit its offsets."""
        r = self.receiver
        self.storing_offsets = dict(offsets)
        self.storing = storer.submit(
            r.store_batch, records, {"offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())]})
        try:
            self._wait_polling(self.storing)
        finally:
            if self.paused:
                self.paused = False
                assignment = self.consumer.assignment()
                if assignment:
                    self.consumer.resume(assignment)
        if self.storing is not None:  # else a revocation settled it, and committed its partitions
            self.storing.result()
            self.storing = None
        r.records_stored += len(records)
        durable = r._durable
        assert durable is not None
        for key, value in offsets.items():
            durable[key] = max(durable.get(key, 0), value)
        self._commit({tp: o for tp, o in self.storing_offsets.items() if tp in self.assigned})
        self.storing_offsets = {}
        r._stall.progress()

    def _wait_polling(self, future: "Future[Any]") -> None:
        r = self.receiver
        try:
            future.result(timeout=r.pause_after)
            return
        except FutureTimeout:
            pass
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        self.paused = True
        r.pauses += 1
        log.info("%s: storing waits (the store is full or rate-limited); partitions paused, still polling", r.name)
        while self.storing is future and not future.done():
            # Heartbeats, rebalances and max.poll.interval.ms are served by polling;
            # paused partitions return nothing, anything else waits for the next block.
            self.pending.extend(self.consumer.consume(r.block_records, r.poll_timeout))
            r._check_stall()

    def _committed(self, partitions: list[Any]) -> list[Any]:
        import confluent_kafka as ck

        def attempt(seconds: float) -> list[Any]:
            try:
                return self.consumer.committed(partitions, timeout=seconds)
            except ck.KafkaException as exc:
                raise BrokerCallError(f"cannot read the committed offsets: {exc}", retriable_confluent(exc)) from exc

        return call("read committed offsets", attempt, timeout=COMMITTED_TIMEOUT)

    def on_commit(self, err: Any, partitions: Any) -> None:
        self.commit_results.append((err, partitions))

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit and wait for the answer at most `commit_timeout` seconds,
        polling meanwhile (what arrives is kept for the next block): a commit
        never holds the receiver without a bound. Not answered or failed: the
        receiver restarts; its stored offsets keep it from storing a record twice."""
        import confluent_kafka as ck

        if not offsets:
            return
        r = self.receiver
        self.commit_results = results = []
        self.consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                             asynchronous=True)
        deadline = time.monotonic() + r.commit_timeout
        while not results:
            if time.monotonic() > deadline:
                raise ck.KafkaException(ck.KafkaError(
                    ck.KafkaError._TIMED_OUT, f"offset commit not answered within {r.commit_timeout:.0f} s"))
            room = r.block_records - len(self.pending)
            if room > 0:
                self.pending.extend(self.consumer.consume(room, 0.05))
            else:
                message = self.consumer.poll(0.05)
                if message is not None:
                    self.pending.append(message)
        err, parts = results[0]
        failed = [tp.error for tp in parts or () if tp.error is not None]
        if err is not None or failed:
            raise ck.KafkaException(err if err is not None else failed[0])


def kafka_stream(ssc: "StreamingContext", topics: Iterable[str], kafka_params: Mapping[str, Any], *,
                 name: str | None = None, max_rate: float | None = None, block_records: int = 10_000,
                 **receiver_options: Any) -> "DStream[KafkaRecord]":
    """A stream of `KafkaRecord`s from a consumer group, stored before offsets are
    committed. Use it with `StreamingContext(write_ahead_log=True)` and a
    checkpoint for no loss on a crash (at-least-once; a sink that dedupes by
    block id gets exactly-once)."""
    receiver = KafkaReceiver(topics, kafka_params, block_records=block_records)
    return ssc.receiver_stream(receiver, max_rate=max_rate, name=name, kind="kafka-receiver", **receiver_options)
