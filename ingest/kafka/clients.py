"""Kafka clients behind one interface: confluent-kafka (default) and kafka-python.

`kafka_params` are given as Kafka's dotted property names (`bootstrap.servers`,
`group.id`, `security.protocol`, ...), as Spark users know them; the
kafka-python backend translates them. They are checked when the stream is
built: an unknown or forbidden key is a ConfigError that names it.

Driver side (`KafkaClient`): topic metadata, earliest/latest offsets (latest
is the last stable offset under `isolation.level=read_committed`), committed
group offsets, commits; each call bounded by a timeout and retrying retriable
errors through `ingest.kafka.calls`. Executor side (`read_range`): each offset
range is read by a consumer of its own, cached per partition and never shared
by two tasks at once; auto-commit is off and an offset that is out of range is
a `DataLossError`, never a silent reset. Reading goes up to `until_offset` by offsets
seen, so gaps (compaction, transaction markers, aborted records) are crossed.
Secrets in `kafka_params` never appear in messages or logs.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping, Sequence

from ingest.errors import ConfigError, SourceError
from ingest.install_hint import install_hint
from ingest.kafka.calls import BrokerCallError, call, retriable_confluent, retriable_kafka_python
from ingest.kafka.client_logs import ClientLogRelay, route_kafka_python_logs, shared_relay, with_client_logs
from ingest.kafka.config import OURS, check_common, kafka_python_config, params_fingerprint, redact
from ingest.kafka.errors import rerun_data_loss
from ingest.kafka.records import (confluent_columns, confluent_converter, kafka_python_columns,
                                  kafka_python_converter)
from ingest.kafka.security import (
    ConfluentCauses,
    HandshakeRefusedError,
    KafkaPythonCauses,
    first_contact,
    is_secured,
    refusal_seen_by_confluent,
)
from offsets import OffsetRange

log = logging.getLogger("ingest.kafka.clients")

TP = tuple[str, int]

class KafkaClient:
    """Driver-side access to one cluster."""

    name = ""
    log_relay: ClientLogRelay | None = None  # where the client's own log lines go (see client_logs)

    # Every call retries retriable errors (`ingest.kafka.calls`) and gives up
    # after `timeout` seconds with a BrokerCallError naming the cause; the
    # stream decides whether to try again (it waits out a broker restart that way).

    def list_topics(self, timeout: float = 15.0) -> dict[str, list[int]]:
        raise NotImplementedError

    def watermarks(self, tps: list[TP], timeout: float = 15.0) -> dict[TP, tuple[int, int]]:
        """(earliest, latest) per partition; latest honours isolation.level."""
        raise NotImplementedError

    def committed(self, group: str, tps: list[TP], timeout: float = 15.0) -> dict[TP, int | None]:
        raise NotImplementedError

    def commit(self, group: str, offsets: Mapping[TP, int], timeout: float = 10.0) -> None:
        """Synchronous, bounded by `timeout`: a commit never blocks its caller for longer."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# -- the consumer cache (per process) -----------------------------------------------------


class _ConsumerCache:
    """Reader consumers keyed by (client, params, topic, partition). A consumer
    in use by one task is never handed to another: a concurrent task gets a
    fresh one that is closed after use. Least recently used idle consumers are
    closed beyond `capacity`."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        # key -> [consumer, in_use, offset it was last assigned at (None: unknown)]
        self._entries: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()

    def acquire(self, key: tuple[Any, ...], create: Callable[[], Any]) -> tuple[Any, bool]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not entry[1]:
                entry[1] = True
                self._entries.move_to_end(key)
                return entry[0], True
            cache_it = entry is None
        consumer = create()
        if cache_it:
            with self._lock:
                if key not in self._entries:
                    self._entries[key] = [consumer, True, None]
                    self._evict()
                    return consumer, True
        return consumer, False

    def acquire_idle(self, key: tuple[Any, ...], create: Callable[[], Any]) -> Any | None:
        """The cached consumer of `key` (created and cached if there is none),
        or None when a task is using it: for work that only helps later tasks."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[1]:
                    return None
                entry[1] = True
                self._entries.move_to_end(key)
                return entry[0]
        consumer, cached = self.acquire(key, create)
        if not cached:
            _quiet_close(consumer)
            return None
        return consumer

    def assigned_at(self, key: tuple[Any, ...], consumer: Any) -> int | None:
        """The offset the cached `consumer` of `key` was last assigned at."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[2] if entry is not None and entry[0] is consumer else None

    def note_assigned(self, key: tuple[Any, ...], consumer: Any, offset: int | None) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is consumer:
                entry[2] = offset

    def release(self, key: tuple[Any, ...], consumer: Any, cached: bool, close: Callable[[Any], None],
                broken: bool = False) -> None:
        if not cached:
            close(consumer)
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is consumer:
                if broken:
                    del self._entries[key]
                else:
                    entry[1] = False
                    return
        close(consumer)

    def _evict(self) -> None:
        while len(self._entries) > self.capacity:
            for key, entry in self._entries.items():
                if not entry[1]:
                    del self._entries[key]
                    threading.Thread(target=_quiet_close, args=(entry[0],), name="kafka-consumer-close").start()
                    break
            else:
                return

    def partitions(self) -> list[tuple[str, int]]:
        """(topic, partition) of every cached consumer of this process: which
        partitions this process (a cluster worker) reads with a kept consumer."""
        with self._lock:
            return [(key[-2], key[-1]) for key in self._entries]

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for consumer, *_ in entries:
            _quiet_close(consumer)


def _quiet_close(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception:  # noqa: BLE001 - closing a broken consumer
        pass


CONSUMERS = _ConsumerCache()


def read_timeout_error(r: OffsetRange, reached: int, waited: float) -> SourceError:
    return SourceError(
        f"reading {r}: no record at or after offset {reached} arrived within {waited:.0f} s "
        f"(expected records up to {r.until_offset - 1}); is the broker reachable? Raise poll_timeout for slow "
        "clusters. The batch is not committed and is re-run with the same range.")


# -- confluent-kafka -----------------------------------------------------------------------


def _ck() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ConfigError(f"client='confluent' needs confluent-kafka: {install_hint('kafka')}") from exc
    return confluent_kafka


ADMIN_KEYS = ("bootstrap.servers", "client.id", "security.protocol", "socket.", "ssl.", "sasl.",
              "broker.address.family", "client.dns.lookup", "request.timeout.ms")


class ConfluentClient(KafkaClient):
    name = "confluent"

    def __init__(self, params: Mapping[str, Any]) -> None:
        ck = _ck()
        self.params = check_common(params)
        base = {k: v for k, v in self.params.items() if k not in OURS}
        base.setdefault("isolation.level", "read_committed")
        base.setdefault("group.id", "ingest-direct")
        self.log_relay = ClientLogRelay()  # its own: start() quotes the last problem it reported
        try:  # validate every key now (librdkafka names the unknown one); no connection is made
            ck.Consumer(with_client_logs(base, self.log_relay)).close()
        except (ck.KafkaException, ValueError, TypeError) as exc:
            raise ConfigError(f"invalid kafka_params for confluent-kafka: {_ck_message(exc)}") from None
        self._consumer_conf = base
        self._admin_conf = {k: v for k, v in base.items()
                            if any((k.startswith(a) if a.endswith(".") else k == a) for a in ADMIN_KEYS)}
        self._admin: Any = None
        self._meta_consumer: Any = None
        # Authentication and TLS failures reach error_cb only (see ingest.kafka.security).
        self._causes = ConfluentCauses(self.params)
        self._contacted = False
        self._commit_results: list[tuple[Any, Any]] = []
        self._lock = threading.Lock()

    def _admin_client(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(with_client_logs({**self._admin_conf, "error_cb": self._causes},
                                                       self.log_relay))
        return self._admin

    def _first_contact(self, seconds: float) -> float:
        """Before the first metadata call (the first call of every stream): see
        `ingest.kafka.security.first_contact`."""
        try:
            left = first_contact(self._admin_client(), self._causes, seconds, str(self.params["bootstrap.servers"]))
        except HandshakeRefusedError as exc:
            raise BrokerCallError(str(exc), retriable=False) from exc
        self._contacted = True
        return left

    def _attempt(self, what: str, fn: Callable[[float], Any]) -> Callable[[float], Any]:
        """`fn(seconds)` with confluent-kafka's exceptions as BrokerCallErrors."""
        ck = _ck()

        def attempt(seconds: float) -> Any:
            try:
                result = fn(seconds)
                self._contacted = True
                return result
            except ck.KafkaException as exc:
                cause = self._causes.take()
                if cause is not None:
                    raise BrokerCallError(f"cannot {what} on {self.params['bootstrap.servers']}: {cause}",
                                          retriable=False) from exc
                raise BrokerCallError(f"cannot {what} on {self.params['bootstrap.servers']}: {_ck_message(exc)}",
                                      retriable_confluent(exc)) from exc
            finally:
                if self._admin is not None:
                    self._admin.poll(0)  # hands the client's queued log lines to the relay

        return attempt

    def list_topics(self, timeout: float = 15.0) -> dict[str, list[int]]:
        def run(seconds: float) -> dict[str, list[int]]:
            if not self._contacted:  # a stream's first call: see _first_contact
                seconds = self._first_contact(seconds)
            meta = self._admin_client().list_topics(timeout=seconds)
            return {name: sorted(t.partitions) for name, t in meta.topics.items() if t.error is None}

        what = "read topic metadata"
        return call(what, self._attempt(what, run), timeout=timeout)

    def watermarks(self, tps: list[TP], timeout: float = 15.0) -> dict[TP, tuple[int, int]]:
        if not tps:
            return {}
        ck = _ck()
        from confluent_kafka.admin import OffsetSpec

        iso = ck.IsolationLevel.READ_COMMITTED if self._consumer_conf["isolation.level"] == "read_committed" \
            else ck.IsolationLevel.READ_UNCOMMITTED

        def run(seconds: float) -> dict[TP, tuple[int, int]]:
            out: dict[TP, list[int]] = {tp: [0, 0] for tp in tps}
            for index, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
                request = {ck.TopicPartition(t, p): spec for t, p in tps}
                futures = self._admin_client().list_offsets(request, isolation_level=iso, request_timeout=seconds)
                for tp, future in futures.items():
                    out[(tp.topic, tp.partition)][index] = future.result().offset
            return {tp: (lo, hi) for tp, (lo, hi) in out.items()}

        what = "list offsets"
        return call(what, self._attempt(what, run), timeout=timeout)

    def committed(self, group: str, tps: list[TP], timeout: float = 15.0) -> dict[TP, int | None]:
        ck = _ck()
        if not tps:
            return {}

        def run(seconds: float) -> dict[TP, int | None]:
            with self._lock:
                parts = self._group_consumer(group).committed([ck.TopicPartition(t, p) for t, p in tps],
                                                              timeout=seconds)
            return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in parts}

        what = f"read committed offsets of group {group!r}"
        return call(what, self._attempt(what, run), timeout=timeout)

    def commit(self, group: str, offsets: Mapping[TP, int], timeout: float = 10.0) -> None:
        ck = _ck()
        if not offsets:
            return

        def run(seconds: float) -> None:
            # An asynchronous commit whose answer is awaited for `seconds` at
            # most: confluent-kafka's synchronous commit takes no timeout.
            with self._lock:
                consumer = self._group_consumer(group)
                self._commit_results = results = []
                consumer.commit(offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=True)
                end = time.monotonic() + seconds
                while not results and time.monotonic() < end:
                    # poll() serves the commit's callback but returns only at its
                    # timeout (no message comes to this unassigned consumer): short
                    # polls end the wait soon after the answer, not up to 100 ms later.
                    consumer.poll(min(0.005, max(0.0, end - time.monotonic())))
                if not results:
                    # Its answer may still come; a fresh consumer never takes it for a later commit's.
                    self._discard_group_consumer()
                    raise BrokerCallError(f"commit of group {group!r} not answered within {seconds:.1f} s", True)
            err, parts = results[0]
            failed = [tp for tp in parts or () if tp.error is not None]
            if err is None and failed:
                err = failed[0].error
            if err is not None:
                raise ck.KafkaException(err)

        what = f"commit offsets of group {group!r}"
        call(what, self._attempt(what, run), timeout=timeout)

    def _on_commit(self, err: Any, partitions: Any) -> None:
        self._commit_results.append((err, partitions))

    def _discard_group_consumer(self) -> None:
        consumer, self._meta_consumer = self._meta_consumer, None
        if consumer is not None:  # closing may wait for the lost answer: not on the caller's thread
            threading.Thread(target=_quiet_close, args=(consumer,), name="kafka-consumer-close").start()

    def _group_consumer(self, group: str) -> Any:
        if self._meta_consumer is None or self._consumer_conf.get("group.id") != group:
            if self._meta_consumer is not None:
                self._meta_consumer.close()
            self._consumer_conf = {**self._consumer_conf, "group.id": group}
            self._meta_consumer = _ck().Consumer(with_client_logs(
                {**self._consumer_conf, "on_commit": self._on_commit, "error_cb": self._causes}, self.log_relay))
        return self._meta_consumer

    def close(self) -> None:
        if self._meta_consumer is not None:
            _quiet_close(self._meta_consumer)
            self._meta_consumer = None
        self._admin = None

    def reader(self) -> "ConfluentReader":
        return ConfluentReader(self._consumer_conf)


class _Reader:
    """Reads offset ranges; picklable (it carries only the configuration). Its
    consumers are cached per process under `key` plus the partition."""

    client = ""

    def __init__(self, conf: Mapping[str, Any]) -> None:
        self.conf = dict(conf)
        self.key = (self.client, params_fingerprint(self.conf))

    def prefetch(self, ranges: Sequence[OffsetRange]) -> None:
        """Start fetching the ranges of a batch before its tasks read them
        (tasks that run in this process only). By default nothing is done."""

    def read(self, r: OffsetRange, poll_timeout: float) -> list[Any]:
        raise NotImplementedError

    def read_converted(self, r: OffsetRange, poll_timeout: float, convert: Callable[[list[Any]], Any]) -> list[Any]:
        """The range read as chunks of messages, each given to `convert` as it
        arrives: the list of its results, in order. By default the whole range
        is one chunk."""
        return [convert(self.read(r, poll_timeout))]


READER_PREFETCH = {"queued.min.messages": 20_000, "fetch.queue.backoff.ms": 10}
"""How far a reader's consumer fetches ahead of the range it reads, unless
kafka_params say otherwise. librdkafka's defaults (100,000 messages per
partition, then a 1 s pause once that is reached) made a 1M-record catch-up
read hold 2.5x the bare loop's memory: every partition's consumer of a batch
buffered up to 100,000 records besides the batch itself. 20,000 is most of a
default batch's share per partition (100,000 records over a few partitions),
and a 10 ms pause refills the buffer as soon as it is read, so throughput stays."""


class ConfluentReader(_Reader):
    client = "confluent"

    def _create(self) -> Any:
        return _ck().Consumer({**READER_PREFETCH, **with_client_logs(self.conf), "enable.auto.commit": False,
                               "enable.partition.eof": True, "auto.offset.reset": "error"})

    def prefetch(self, ranges: Sequence[OffsetRange]) -> None:
        """Put this process's consumer of every range at its start, so all of
        them fetch at once while the first range is read: tasks run one after
        another (or fewer at a time than there are partitions) otherwise wait,
        each, for a connection and a first fetch. Only for tasks that run in
        this process, where the consumers are cached."""
        for r in ranges:
            key = (*self.key, r.topic, r.partition)
            consumer = CONSUMERS.acquire_idle(key, self._create)
            if consumer is None:  # a task is reading it; it stands where that task left it
                continue
            broken = True
            try:
                self._position(consumer, r, key)
                broken = False
            finally:
                CONSUMERS.release(key, consumer, True, _quiet_close, broken)

    def read(self, r: OffsetRange, poll_timeout: float) -> list[Any]:
        out: list[Any] = []
        self._read(r, poll_timeout, out.extend, 10_000)
        return out

    def read_converted(self, r: OffsetRange, poll_timeout: float, convert: Callable[[list[Any]], Any]) -> list[Any]:
        """Each fetched chunk converted as it arrives, so a range's messages
        (objects the garbage collector tracks) do not all live until the range
        is read: holding them, every range promoted 25,000 of them to the old
        generation and set off full collections. Chunks of 1,000 (not the 10,000
        `read` asks for) are mostly freed before a collection promotes them:
        a stateful job's full collections per 1M records fell from 30 to 19."""
        out: list[Any] = []
        self._read(r, poll_timeout, lambda msgs: out.append(convert(msgs)), 1_000)
        return out

    def _read(self, r: OffsetRange, poll_timeout: float, take: Callable[[list[Any]], Any], most: int) -> None:
        ck = _ck()
        key = (*self.key, r.topic, r.partition)
        consumer, cached = CONSUMERS.acquire(key, self._create)
        broken = True
        try:
            self._position(consumer, r, key)
            until = r.until_offset
            reached = r.from_offset
            deadline = time.monotonic() + poll_timeout
            while True:
                msgs = consumer.consume(min(most, max(1, until - reached)), 0.2)
                if not msgs:
                    if time.monotonic() > deadline:
                        raise read_timeout_error(r, reached, poll_timeout)
                    continue
                deadline = time.monotonic() + poll_timeout
                done = False
                if any(m.error() is not None for m in msgs):
                    good = []
                    for m in msgs:
                        err = m.error()
                        if err is None:
                            good.append(m)
                        elif err.code() == ck.KafkaError._PARTITION_EOF:
                            if m.offset() >= until:
                                done = True
                        elif err.code() in (ck.KafkaError._AUTO_OFFSET_RESET, ck.KafkaError.OFFSET_OUT_OF_RANGE):
                            raise rerun_data_loss(r, reached, err.str())
                        else:
                            raise SourceError(f"reading {r}: {err.str()}")
                    msgs = good
                if msgs:
                    last = msgs[-1].offset()
                    if last >= until - 1:
                        cut = bisect.bisect_left(msgs, until, key=_ck_offset)
                        if cut:
                            take(msgs[:cut])
                        done = True
                    else:
                        take(msgs)
                        reached = last + 1
                if done:
                    broken = False
                    return
        finally:
            CONSUMERS.release(key, consumer, cached, _quiet_close, broken)

    @staticmethod
    def _position(consumer: Any, r: OffsetRange, key: tuple[Any, ...]) -> None:
        """Put the consumer at `r.from_offset`. A cached consumer that already
        stands there (the previous batch ended where this one starts, or
        `prefetch` assigned it there and nothing was read since: its position
        is then still unset) keeps what it fetched ahead; assigning or seeking
        would throw that away."""
        ck = _ck()
        tp = ck.TopicPartition(r.topic, r.partition)
        assigned = consumer.assignment()
        if len(assigned) == 1 and (assigned[0].topic, assigned[0].partition) == (r.topic, r.partition):
            position = consumer.position([tp])[0].offset
            if position == r.from_offset or (
                    position < 0 and CONSUMERS.assigned_at(key, consumer) == r.from_offset):
                return
            consumer.seek(ck.TopicPartition(r.topic, r.partition, r.from_offset))
            CONSUMERS.note_assigned(key, consumer, None)  # the position now says where it stands
            return
        consumer.assign([ck.TopicPartition(r.topic, r.partition, r.from_offset)])
        CONSUMERS.note_assigned(key, consumer, r.from_offset)

    converter = staticmethod(confluent_converter)
    columns = staticmethod(confluent_columns)

    @staticmethod
    def raw_parts(m: Any) -> tuple[Any, Any, int]:
        return m.key(), m.value(), m.offset()


def _ck_offset(m: Any) -> int:
    return m.offset()


def _ck_message(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.str() if hasattr(arg, "str") else str(arg)


# -- kafka-python ----------------------------------------------------------------------------


def kafka_python_consumer_config(params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` as KafkaConsumer arguments, each checked to be one it takes."""
    from kafka import KafkaConsumer

    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in OURS:
            continue
        name, value = next(iter(kafka_python_config({key: value}).items()))
        if name not in KafkaConsumer.DEFAULT_CONFIG:
            raise ConfigError(f"invalid kafka_params for kafka-python: {key!r} has no kafka-python equivalent "
                              f"(tried {name!r}); remove it or use client='confluent'")
        out[name] = value
    out.setdefault("isolation_level", "read_committed")
    out["enable_auto_commit"] = False
    return out


class KafkaPythonClient(KafkaClient):
    name = "kafka-python"

    def __init__(self, params: Mapping[str, Any]) -> None:
        try:
            import kafka  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise ConfigError(f"client='kafka-python' needs kafka-python: {install_hint('kafka')}") from exc
        self.params = check_common(params)
        route_kafka_python_logs()
        self.log_relay = shared_relay()
        self._conf = kafka_python_consumer_config(self.params)
        self._conf.pop("group_id", None)
        self._consumers: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self._contacted = False  # a consumer was built, so the cluster answered once
        self._answered = False  # a call succeeded: refused handshakes are no longer watched for
        self._causes = KafkaPythonCauses(self.params)

    def _consumer(self, group: str | None, timeout: float) -> Any:
        from kafka import KafkaConsumer

        consumer = self._consumers.get(group)
        if consumer is None:
            # Until the cluster answered once, bootstrap in short attempts: kafka-python
            # only logs a refused handshake, and `_call` must see the cause soon.
            seconds = timeout if self._contacted else min(timeout, self.FIRST_CONTACT_SLICE)
            consumer = KafkaConsumer(**{**self._conf, "bootstrap_timeout_ms": int(max(0.5, seconds) * 1000)},
                                     group_id=group)
            self._consumers[group] = consumer
            self._contacted = True
        return consumer

    # Seconds of one bootstrap attempt before the cluster first answered: kafka-python
    # bootstraps in its constructor, and logs (only) why a handshake failed.
    FIRST_CONTACT_SLICE = 3.0

    def _call(self, what: str, fn: Callable[[float], Any], timeout: float) -> Any:
        from kafka.errors import KafkaError

        def attempt(seconds: float) -> Any:
            with self._lock:
                if not self._answered:
                    self._causes.attach()
                try:
                    result = fn(seconds)
                    self._answered = True
                    self._causes.detach()
                    return result
                except KafkaError as exc:
                    cause = self._causes.last
                    if cause is None and not self._answered and is_secured(self.params):
                        cause = refusal_seen_by_confluent(self.params)
                    if cause is not None:  # a refused handshake, logged only: no retry mends it
                        raise BrokerCallError(f"cannot {what} on {self.params['bootstrap.servers']}: "
                                              f"{cause}", retriable=False) from exc
                    raise BrokerCallError(f"cannot {what} on {self.params['bootstrap.servers']}: "
                                          f"{type(exc).__name__}: {exc}", retriable_kafka_python(exc)) from exc

        return call(what, attempt, timeout=timeout)

    def list_topics(self, timeout: float = 15.0) -> dict[str, list[int]]:
        def run(seconds: float) -> dict[str, list[int]]:
            c = self._consumer(None, seconds)
            return {t: sorted(c.partitions_for_topic(t) or ()) for t in c.topics()}

        return self._call("read topic metadata", run, timeout)

    def watermarks(self, tps: list[TP], timeout: float = 15.0) -> dict[TP, tuple[int, int]]:
        from kafka import TopicPartition

        if not tps:
            return {}
        parts = [TopicPartition(t, p) for t, p in tps]

        def run(seconds: float) -> tuple[Any, Any]:
            c = self._consumer(None, seconds)
            ms = int(seconds * 1000)
            return c.beginning_offsets(parts, timeout_ms=ms), c.end_offsets(parts, timeout_ms=ms)

        lows, highs = self._call("list offsets", run, timeout)
        return {(tp.topic, tp.partition): (lows[tp], highs[tp]) for tp in parts}

    def committed(self, group: str, tps: list[TP], timeout: float = 15.0) -> dict[TP, int | None]:
        from kafka import TopicPartition

        def run(seconds: float) -> dict[TP, int | None]:
            c = self._consumer(group, seconds)
            ms = int(seconds * 1000)
            return {(t, p): c.committed(TopicPartition(t, p), timeout_ms=ms) for t, p in tps}

        return self._call(f"read committed offsets of group {group!r}", run, timeout)

    def commit(self, group: str, offsets: Mapping[TP, int], timeout: float = 10.0) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if not offsets:
            return
        request = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        self._call(f"commit offsets of group {group!r}",
                   lambda seconds: self._consumer(group, seconds).commit(request, timeout_ms=int(seconds * 1000)),
                   timeout)

    def close(self) -> None:
        with self._lock:
            self._causes.detach()
            for c in self._consumers.values():
                _quiet_close(c)
            self._consumers.clear()

    def reader(self) -> "KafkaPythonReader":
        return KafkaPythonReader(self._conf)


class KafkaPythonReader(_Reader):
    client = "kafka-python"

    def _create(self) -> Any:
        from kafka import KafkaConsumer

        return KafkaConsumer(**{**self.conf, "auto_offset_reset": "none", "group_id": None})

    def read(self, r: OffsetRange, poll_timeout: float) -> list[Any]:
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        key = (*self.key, r.topic, r.partition)
        consumer, cached = CONSUMERS.acquire(key, self._create)
        broken = True
        tp = TopicPartition(r.topic, r.partition)
        try:
            consumer.assign([tp])
            consumer.seek(tp, r.from_offset)
            out: list[Any] = []
            until = r.until_offset
            deadline = time.monotonic() + poll_timeout
            while True:
                try:
                    batch = consumer.poll(timeout_ms=200, max_records=max(1, min(10000, until - r.from_offset)))
                except KafkaError as exc:
                    if type(exc).__name__ == "OffsetOutOfRangeError":
                        raise rerun_data_loss(r, out[-1].offset + 1 if out else r.from_offset, str(exc)) from exc
                    raise SourceError(f"reading {r}: {exc}") from exc
                msgs = batch.get(tp, [])
                if msgs:
                    deadline = time.monotonic() + poll_timeout
                    if msgs[-1].offset >= until - 1:
                        out.extend(m for m in msgs if m.offset < until)
                        broken = False
                        return out
                    out.extend(msgs)
                if consumer.position(tp) >= until:  # crossed markers or compacted gaps at the end
                    broken = False
                    return out
                if not msgs and time.monotonic() > deadline:
                    raise read_timeout_error(r, out[-1].offset + 1 if out else r.from_offset, poll_timeout)
        finally:
            CONSUMERS.release(key, consumer, cached, _quiet_close, broken)

    converter = staticmethod(kafka_python_converter)
    columns = staticmethod(kafka_python_columns)

    @staticmethod
    def raw_parts(m: Any) -> tuple[Any, Any, int]:
        return m.key, m.value, m.offset


CLIENTS: dict[str, Callable[[Mapping[str, Any]], KafkaClient]] = {
    "confluent": ConfluentClient,
    "kafka-python": KafkaPythonClient,
}


def make_client(name: str, params: Mapping[str, Any]) -> KafkaClient:
    factory = CLIENTS.get(name)
    if factory is None:
        raise ConfigError(f"unknown Kafka client {name!r}: use 'confluent' (default) or 'kafka-python'")
    return factory(params)


__all__: Iterable[str] = ["CONSUMERS", "KafkaClient", "make_client", "redact"]
