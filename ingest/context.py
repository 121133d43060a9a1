"""`StreamingContext`: the entry point of every job.

It owns the graph, the batch clock and scheduler thread, the executor for
partition tasks, the listener bus and the receivers of its inputs. Whoever
starts a thread here stops and joins it in `stop()`.

Stopping: `stop(graceful=True)` stops the receivers (their buffered data is
cut into blocks), runs batches until every input's received data has been
processed (bounded by `timeout`), then closes everything. SIGTERM and Ctrl-C
trigger a graceful stop; a second signal stops at once.
"""

from __future__ import annotations

import atexit
import logging
import math
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, TypeVar

from ingest.batch_log import BatchLog
from ingest.batch_stats import BatchStats
from ingest.clock import Clock, ManualClock, SystemClock
from ingest.dstream import DStream
from ingest.errors import CheckpointError, ConfigError, IngestError, ReceiverError, StateError
from ingest.cluster import process_default as cluster_default
from ingest.executor import TaskExecutor, make_executor
from ingest.graph import StreamGraph
from ingest.lag_watch import LagWatch
from ingest.listener import (
    ListenerBus,
    LoggingListener,
    ProgressTracker,
    StreamingListener,
    StreamingStarted,
    StreamingStopped,
)
from ingest.queue_stream import QueueInputDStream
from ingest.scheduler import BatchScheduler
from ingest.sources import ReceiverLike, stream_factory
from ingest.ui.options import resolve as resolve_ui

if TYPE_CHECKING:
    from ingest.ui.history import UIHistory
    from ingest.ui.server import UIServer

log = logging.getLogger("ingest.context")

T = TypeVar("T")

INITIALIZED, ACTIVE, STOPPING, STOPPED = "initialized", "active", "stopping", "stopped"


def _seconds_to_ms(name: str, value: float) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"StreamingContext: {name} must be a positive number of seconds, got {value!r} "
                          f"(a {type(value).__name__}): pass a number, e.g. {name}=1.0")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"StreamingContext: {name} must be a positive number of seconds, got {value!r}: "
                          f"pass e.g. {name}=1.0 (one batch a second) or {name}=0.5")
    ms = round(value * 1000)
    if ms < 1 or abs(ms - value * 1000) > 1e-6:
        raise ConfigError(f"{name} must be a whole number of milliseconds (>= 0.001 s), got {value!r}")
    return int(ms)


class StreamingContext:
    """Micro-batch streaming: build a graph of DStreams, then `start()`.

    >>> ssc = StreamingContext(batch_interval=1.0)
    >>> lines = ssc.socket_text_stream("localhost", 7777)      # doctest: +SKIP
    >>> lines.filter(lambda line: "error" in line).pprint()    # doctest: +SKIP
    >>> ssc.start(); ssc.await_termination()                   # doctest: +SKIP

    Options:
      batch_interval: seconds between batches.
      clock: `SystemClock()` (default) or `ManualClock()` for tests; with a
        manual clock, `step()` runs one batch at a time.
      executor / parallelism: where partition tasks run: "inline" (default),
        "threads", "processes", or a `TaskExecutor` such as `DaskExecutor`.
      block_interval: how often receivers cut received records into blocks
        (default 0.2 s, or the batch interval if that is shorter).
      max_batch_retries: how often a failed batch is retried with the same
        inputs before the context stops with the error (default 0).
      write_ahead_log: make receivers store blocks in a write-ahead log under
        the checkpoint directory before acknowledging them.
      stop_on_signal: stop gracefully on SIGTERM/SIGINT (main thread only).
      log_batches: log one line per batch at INFO on logger "ingest.batches".
      ui_port: serve the web UI and JSON API on this port from `start()` on
        (0: any free port; see `ui_url`). Off by default, on under `ingest run`.
      ui_host: the address to listen on (default 127.0.0.1, this machine only).
      ui_token: an access token the UI requires (default: the environment
        variable INGEST_UI_TOKEN, if set); see the README's "Web UI".
    """

    @staticmethod
    def _choose_executor(executor: str | TaskExecutor | None, parallelism: int | None) -> TaskExecutor:
        """The app's executor, unless `ingest run --cluster/--workers` set one
        for the process: the operator's choice of where the job runs wins."""
        override = cluster_default()
        if override is None:
            return make_executor(executor, parallelism)
        asked = executor if isinstance(executor, str) or executor is None else type(executor).__name__
        log.info("partition tasks run on the cluster of the command line (%s), not on the application's "
                 "executor=%r", override.description, asked)
        if isinstance(executor, TaskExecutor) and executor is not override.executor:
            executor.shutdown()  # the context owned it and will never use it
        return override.executor

    def __init__(
        self,
        batch_interval: float,
        *,
        clock: Clock | None = None,
        executor: str | TaskExecutor | None = "inline",
        parallelism: int | None = None,
        block_interval: float | None = None,
        max_batch_retries: int = 0,
        write_ahead_log: bool = False,
        stop_on_signal: bool = True,
        log_batches: bool = True,
        ui_port: int | None = None,
        ui_host: str | None = None,
        ui_token: str | None = None,
    ) -> None:
        self.batch_interval_ms = _seconds_to_ms("batch_interval", batch_interval)
        self.block_interval_ms = (min(200, self.batch_interval_ms) if block_interval is None
                                  else _seconds_to_ms("block_interval", block_interval))
        if self.block_interval_ms > self.batch_interval_ms:
            raise ConfigError(
                f"block_interval ({block_interval} s) must not exceed batch_interval ({batch_interval} s): "
                "a batch would often get no block at all")
        if not isinstance(max_batch_retries, int) or max_batch_retries < 0:
            raise ConfigError(f"max_batch_retries must be an integer >= 0, got {max_batch_retries!r}")
        if clock is not None and not isinstance(clock, Clock):
            raise ConfigError(f"clock must be a SystemClock or ManualClock, got {type(clock).__name__}")
        self.clock: Clock = clock or SystemClock()
        self.executor: TaskExecutor = self._choose_executor(executor, parallelism)
        # An executor imposed by `ingest run` belongs to the command, which closes it.
        self._owns_executor = cluster_default() is None or self.executor is not cluster_default().executor
        self.max_batch_retries = max_batch_retries
        self.write_ahead_log = bool(write_ahead_log)
        self.stop_on_signal = stop_on_signal
        self.checkpoint_dir: str | None = None

        self._graph = StreamGraph(self)
        self._bus = ListenerBus()
        self._progress = ProgressTracker()
        self._bus.add(self._progress)
        self.batch_stats = BatchStats()  # what ingest.metrics exports
        self._bus.add(self.batch_stats)
        if log_batches:
            self._bus.add(LoggingListener())
        self._bus.add(LagWatch())  # a warning, not a batch line: always on
        self._log: BatchLog = BatchLog()
        self._scheduler = BatchScheduler(self)
        self._state = INITIALIZED
        self._state_lock = threading.RLock()
        self._terminated = threading.Event()
        self._error: BaseException | None = None
        self._old_handlers: dict[int, Any] = {}
        self._signals_seen = 0
        self._ui_options = resolve_ui(ui_port, ui_host, ui_token)
        self._ui: UIServer | None = None
        self._ui_history: UIHistory | None = None
        if self._ui_options is not None:
            # The UI's modules (an HTTP server, its pages) load only for a context that serves one.
            from ingest.ui.history import UIHistory

            self._ui_history = UIHistory()
            self._bus.add(self._ui_history)

    # -- properties ------------------------------------------------------------------

    @property
    def batch_interval(self) -> float:
        return self.batch_interval_ms / 1000.0

    @property
    def state(self) -> str:
        """'initialized', 'active', 'stopping' or 'stopped'."""
        return self._state

    @property
    def error(self) -> BaseException | None:
        """The error the context stopped with, if any."""
        return self._error

    @property
    def ui_url(self) -> str | None:
        """The web UI's address once `start()` served it (None when it is off)."""
        return None if self._ui is None else self._ui.url

    def close_ui(self) -> None:
        """Stop serving the web UI. A context that stopped cleanly does it
        itself; one that failed keeps showing its failure until this is
        called or the process exits."""
        ui, self._ui = self._ui, None
        if ui is not None:
            ui.close()
            atexit.unregister(ui.close)

    # -- sources ---------------------------------------------------------------------

    def queue_stream(self, batches: Iterable[Iterable[T]] = (), *, one_at_a_time: bool = True,
                     default: Iterable[T] | None = None, num_partitions: int = 1,
                     name: str | None = None) -> QueueInputDStream[T]:
        """A stream fed from in-memory lists, one list per batch; more can be
        queued with `.push(records)`. Meant for tests and demos."""
        return QueueInputDStream(self, batches, one_at_a_time=one_at_a_time, default=default,
                                 num_partitions=num_partitions, name=name)

    def socket_text_stream(self, host: str, port: int, *, encoding: str = "utf-8",
                           errors: str = "report", max_rate: float | None = None,
                           name: str | None = None, connect_timeout: float = 10.0,
                           read_timeout: float | None = 60.0, max_line_bytes: int = 1 << 20,
                           **stream_options: Any) -> DStream[str]:
        """Lines of text read from a TCP server (the receiver connects to it).

        `errors`: what to do with a line that is not valid in `encoding`:
        "report" (skip it and report it to listeners, the default), "replace"
        (keep it with U+FFFD) or "strict" (stop the stream with an error).
        A closed connection is reopened with backoff, and so is one that
        delivers nothing for `read_timeout` seconds (None: wait forever;
        TCP keepalive is on). `stream_options` are
        those of `receiver_stream` (restart_delay, max_buffered_records, ...).
        A socket cannot be replayed: see the README's guarantees table.

        Provided by the `receivers` package (registered in `ingest.sources`,
        loaded on first use)."""
        return stream_factory("socket_text_stream")(
            self, host, port, encoding=encoding, errors=errors, max_rate=max_rate, name=name,
            connect_timeout=connect_timeout, read_timeout=read_timeout, max_line_bytes=max_line_bytes,
            **stream_options)

    def text_file_stream(self, directory: str, *, encoding: str = "utf-8", errors: str = "report",
                         glob: str | None = None, recursive: bool = False, new_files_only: bool = True,
                         max_files_per_batch: int | None = None, remember: float = 60.0,
                         min_partition_bytes: int = 64 << 20, storage_options: Mapping[str, Any] | None = None,
                         name: str | None = None) -> DStream[str]:
        """Lines of the files that appear in `directory` (a local path, or a
        URL of a registered storage backend such as hdfs:// or s3://), each
        file read exactly once, also across restarts: every batch takes the
        files that appeared since the previous one, and that list is in the
        intent log. Receiver-less: nothing is read until a batch runs.

        Files must appear complete: write them elsewhere, then rename them
        into the directory (a file whose size changed after it was planned
        fails its batch). Names starting with '.' or '_', and ending with
        `._COPYING_` or `.tmp`, are never read.

        `glob`: only paths (relative to `directory`) matching this pattern.
        `recursive`: subdirectories too. `new_files_only` (default True):
        files already there when the job first starts are skipped (False:
        they are read by the first batch). `max_files_per_batch`: the oldest
        new files first, the rest in later batches. `remember` (seconds,
        default 60): files modified longer than that before the newest file
        taken are ignored; it must exceed the time between a file's last
        write and its move into the directory. `min_partition_bytes`
        (default 64 MiB): a file of at least twice this size is read by
        several tasks, by byte range (a line belongs to the range it starts
        in); small files share tasks up to this size. `errors`: a line not
        valid in `encoding` is skipped and counted ("report", the default),
        kept with U+FFFD ("replace"), or fails the batch ("strict").
        A file deleted between listing and reading is skipped, logged and
        counted (`stream.metrics()`, `ssc.status()["inputs"]`).
        `storage_options`: options of the directory's storage backend, as for
        `checkpoint()`: for s3:// `endpoint_url`, `region`, `profile`,
        `aws_access_key_id`, `aws_secret_access_key`, ...; for hdfs:// `user`,
        `webhdfs_url`, `timeout`. They may hold secrets: they are never logged
        or shown in the status (pass secrets here, never in the URL).

        Provided by the `direct` package (registered in `ingest.sources`,
        loaded on first use)."""
        return stream_factory("text_file_stream")(
            self, directory, encoding=encoding, errors=errors, glob=glob, recursive=recursive,
            new_files_only=new_files_only, max_files_per_batch=max_files_per_batch, remember=remember,
            min_partition_bytes=min_partition_bytes, storage_options=storage_options, name=name)

    def binary_records_stream(self, directory: str, record_length: int, *, glob: str | None = None,
                              recursive: bool = False, new_files_only: bool = True,
                              max_files_per_batch: int | None = None, remember: float = 60.0,
                              min_partition_bytes: int = 64 << 20,
                              storage_options: Mapping[str, Any] | None = None,
                              name: str | None = None) -> DStream[bytes]:
        """Fixed-length records (`record_length` bytes each) of the files that
        appear in `directory`; a file whose size is not a multiple of it fails
        its batch. Options and guarantees as `text_file_stream` (large files
        are split at record boundaries).

        Provided by the `direct` package (loaded on first use)."""
        return stream_factory("binary_records_stream")(
            self, directory, record_length, glob=glob, recursive=recursive, new_files_only=new_files_only,
            max_files_per_batch=max_files_per_batch, remember=remember,
            min_partition_bytes=min_partition_bytes, storage_options=storage_options, name=name)

    def file_stream(self, directory: str, reader: Callable[[Any], Iterable[T]], *, glob: str | None = None,
                    recursive: bool = False, new_files_only: bool = True, max_files_per_batch: int | None = None,
                    remember: float = 60.0, min_partition_bytes: int = 64 << 20,
                    storage_options: Mapping[str, Any] | None = None, name: str | None = None) -> DStream[T]:
        """Records made by `reader(f)` from each file that appears in
        `directory`, where `f` is a readable binary file object (JSON lines,
        CSV, Avro container files, Parquet: read them with your library).
        Files are read whole, one call each; `reader` runs in partition tasks,
        so with executor="processes" it must be importable or picklable.
        Options and guarantees as `text_file_stream`.

        Provided by the `direct` package (loaded on first use)."""
        return stream_factory("file_stream")(
            self, directory, reader, glob=glob, recursive=recursive, new_files_only=new_files_only,
            max_files_per_batch=max_files_per_batch, remember=remember,
            min_partition_bytes=min_partition_bytes, storage_options=storage_options, name=name)

    def receiver_stream(self, receiver: ReceiverLike, *, max_rate: float | None = None,
                        name: str | None = None, kind: str = "receiver", **options: Any) -> DStream[Any]:
        """A stream fed by a custom `receivers.Receiver`.

        Options: `max_buffered_records` (store() blocks beyond it, default
        10,000), `max_queued_blocks` (10), `max_unprocessed_records` (received
        records not yet in a committed batch; store() waits beyond it, default
        200,000), `restart_delay` (2 s, doubled on quick repeated failures),
        `max_restart_delay` (30 s) and `max_consecutive_failures` (5: restarts
        tried after the receiver failed, i.e. on_start or a thread started
        with `Receiver.start_thread` raised, before the job stops with a
        `ReceiverError`; a run of 30 s or more starts the count again),
        `replication` (on a Dask executor, the workers that hold each received
        block before `store_batch` returns: 2 by default there, 1 in one process).

        Provided by the `receivers` package (registered in `ingest.sources`,
        loaded on first use)."""
        return stream_factory("receiver_stream")(self, receiver, max_rate=max_rate, name=name, kind=kind, **options)

    def stream(self, factory: str, *args: Any, **options: Any) -> DStream[Any]:
        """A stream made by the factory a source package registered as `factory`
        (see `ingest.sources`), e.g. ``ssc.stream("kafka_direct_stream",
        topics=["events"], kafka_params={...})``; the same as calling the
        package's function with `ssc` first. Raises `ConfigError` naming the
        known factories when none has that name."""
        return stream_factory(factory)(self, *args, **options)

    def union(self, *streams: DStream[T]) -> DStream[T]:
        if not streams:
            raise ConfigError("union() needs at least one stream")
        return streams[0].union(*streams[1:])

    # -- listeners and status -----------------------------------------------------------

    def add_listener(self, listener: StreamingListener) -> None:
        self._bus.add(listener)

    def remove_listener(self, listener: StreamingListener) -> None:
        self._bus.remove(listener)

    def status(self) -> dict[str, Any]:
        """A readable snapshot: state, batches, records, last batch, receivers."""
        snap = self._progress.snapshot()
        snap["state"] = self._state
        snap["batch_interval_s"] = self.batch_interval
        snap["next_batch_time_ms"] = self._scheduler.next_time_ms
        snap["error"] = None if self._error is None else f"{type(self._error).__name__}: {self._error}"
        # Inputs that watch their source's health (e.g. a Kafka stream stalled on its brokers) say so here.
        snap["inputs"] = {i.name: i.health() for i in self._graph.inputs if callable(getattr(i, "health", None))}
        # A checkpoint on HDFS or S3 whose server does not answer: the call that waits, its path, for how long.
        stalled = getattr(getattr(self._log, "storage", None), "stalled", None)
        snap["checkpoint_waiting"] = stalled() if callable(stalled) else None
        return snap

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start receiving and processing. Returns at once."""
        with self._state_lock:
            if self._state == ACTIVE:
                raise StateError("StreamingContext.start() was already called")
            if self._state != INITIALIZED:
                raise StateError("a stopped StreamingContext cannot be restarted: create a new one")
            self._graph.validate()
            if self.write_ahead_log and self.checkpoint_dir is None:
                raise ConfigError("write_ahead_log=True needs a checkpoint directory: call ssc.checkpoint(directory) "
                                  "(or use StreamingContext.get_or_create); the log lives under it")
            self._start_ui()
            try:
                self._log.acquire()
            except BaseException:
                self.close_ui()
                raise
            try:
                self._start_locked()
            except BaseException:
                self._log.close()  # releases the checkpoint's lock
                self.close_ui()
                raise

    def _start_ui(self) -> None:
        options = self._ui_options
        if options is None or self._ui is not None:
            return
        assert self._ui_history is not None
        from ingest.ui.server import UIServer
        from ingest.ui.views import Views

        self._ui = UIServer(Views(self, self._ui_history), options.host, options.port, options.token)
        self._ui.start()
        if options.announce:
            print(f"ingest: web UI at {self._ui.url}" + (" (send the access token)" if options.token else ""),
                  file=sys.stderr, flush=True)
        atexit.register(self._ui.close)  # a failed job's UI stays up until then

    def _start_locked(self) -> None:
        """`start()` with the batch log's lock held (the caller releases it on failure)."""
        interval = self.batch_interval_ms
        if self._log.durable:
            self._log.describe_app([i.name for i in self._graph.inputs],
                                   [s.state_id for s in self._graph.stateful], interval)
        recovery = self._log.recover(interval)
        if recovery is not None:
            zero = self._apply_recovery(recovery)
            now = self.clock.now_ms()
            first = zero + (max(0, now - zero) // interval + 1) * interval
            done = [t for t, _ in recovery.pending] + (
                [recovery.last_committed_ms] if recovery.last_committed_ms is not None else [])
            if done:
                first = max(first, max(done) + interval)
            pending = recovery.pending
        else:
            zero = (self.clock.now_ms() // interval) * interval
            first = zero + interval
            pending = []
            self._log.start(zero, interval)
        self._graph.zero_time_ms = zero
        self._graph.frozen = True
        try:
            for inp in self._graph.inputs:
                inp.start()
        except BaseException:
            for inp in self._graph.inputs:  # the one that failed too: it may hold connections
                try:
                    inp.stop_input(graceful=False, timeout=5.0)
                    inp.close()
                except Exception:  # noqa: BLE001 - the start error is the one to report
                    log.exception("closing input %s after a failed start failed", inp.name)
            self._state = STOPPED
            self._terminated.set()
            raise
        self._state = ACTIVE
        self._install_signal_handlers()
        self._bus.post(StreamingStarted(time.time()))
        self._scheduler.start(first, pending)
        log.info("streaming started: batch interval %.3f s, %d input(s), %d output operation(s)%s",
                 self.batch_interval, len(self._graph.inputs), len(self._graph.outputs),
                 f", re-running {len(pending)} uncommitted batch(es)" if pending else "")

    def await_termination(self, timeout: float | None = None) -> bool:
        """Block until the context stopped (True) or `timeout` seconds passed
        (False). Raises the error the context stopped with, if any."""
        if self._state == INITIALIZED:
            raise StateError("await_termination() before start()")
        terminated = self._terminated.wait(timeout)
        if terminated and self._error is not None:
            raise self._error
        return terminated

    def stop(self, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop the context. Graceful: stop receivers, then process the data
        they already received (at most `timeout` seconds; default 10 batch
        intervals, at least 10 s), then release everything. Idempotent.

        Never closes inputs under a running batch: if a batch is still
        running when `timeout` has passed, this returns (the state stays
        'stopping') and everything is closed when the batch ends;
        `await_termination()` waits for that. Received records that no batch
        processed are kept in the write-ahead log when it is on; without it
        they are lost, and their count is logged at WARNING and given in the
        `StreamingStopped` event (and, for a graceful stop, in `ssc.error`)."""
        if timeout is None:
            timeout = max(10.0, 10 * self.batch_interval)
        with self._state_lock:
            state = self._state
            if state == INITIALIZED:
                self._state = STOPPED
                self._terminated.set()
                return
            if state == ACTIVE:
                self._state = STOPPING
        if state == ACTIVE:
            self._shutdown(graceful, timeout)
        elif threading.current_thread() is not self._scheduler._thread:
            self._terminated.wait(timeout)  # someone else is stopping it: wait for them

    def step(self, batches: int = 1, timeout: float = 30.0) -> None:
        """With a `ManualClock`: advance to the next batch time(s) and wait
        until those batches completed. Raises the context's error if a batch failed."""
        if not isinstance(self.clock, ManualClock):
            raise StateError("step() needs StreamingContext(clock=ManualClock())")
        if self._state != ACTIVE:
            if self._error is not None:  # e.g. a batch re-run at start() failed before the first step
                self._raise_after_stop(timeout)
            raise StateError(f"step() needs an active context (state: {self._state})")
        for _ in range(batches):
            target = self._scheduler.next_time_ms
            assert target is not None
            if self.clock.now_ms() < target:
                self.clock.set_time(target / 1000.0)
            if not self._scheduler.wait_for_batch(target, timeout):
                if self._error is not None:
                    self._raise_after_stop(timeout)
                raise IngestError(f"batch {target} did not complete within {timeout} s")

    def _raise_after_stop(self, timeout: float) -> None:
        """Raise the error the context stops with, once it has stopped (bounded by
        `timeout`): its inputs are closed and its checkpoint released by then, so
        the caller may start a new context on the same checkpoint at once."""
        self._terminated.wait(timeout)
        assert self._error is not None
        raise self._error

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint(self, directory: str, *, retain_batches: int = 10, full_snapshot_every: int = 10,
                   allow_changes: bool = False, storage_options: Mapping[str, Any] | None = None,
                   lease_seconds: float = 30.0) -> None:
        """Keep the batch log and state in `directory` (a path, or a URL of a
        registered storage backend), so that a restarted job resumes where it
        was: batches with an intent and no commit are re-run with the same
        inputs, committed ones never.

        retain_batches: committed batches whose files are kept (at least 1).
        full_snapshot_every: state snapshots are full every N commits, deltas between.
        allow_changes: go on when the application changed in a way the
          checkpoint cannot honour (removed inputs or stateful operators,
          another batch interval), dropping what no longer fits.
        storage_options: options of the storage backend of `directory`, e.g.
          {"endpoint_url": ..., "region": ...} for s3://, {"user": ...} for
          hdfs:// (see ingest.storage_s3 and ingest.storage_hdfs). Kept out of
          the URL on purpose: they may hold credentials, and they are never
          logged nor written to the checkpoint.
        lease_seconds: the single-writer lock is a lease renewed every third of
          this; a context that stops renewing it (killed) is taken over by a
          new one this long after its last renewal."""
        from ingest.checkpoint import CheckpointLog

        if self._state != INITIALIZED:
            raise StateError("checkpoint() must be called before start()")
        self._log = CheckpointLog(directory, retain_batches=retain_batches,
                                  full_snapshot_every=full_snapshot_every, allow_changes=allow_changes,
                                  storage_options=storage_options, lease_seconds=lease_seconds)
        self.checkpoint_dir = self._log.location

    @classmethod
    def get_or_create(cls, directory: str, factory: "Callable[[], StreamingContext]", *,
                      allow_changes: bool = False, **checkpoint_options: Any) -> "StreamingContext":
        """Build the context with `factory()` and attach the checkpoint in `directory`.

        The application's code always builds the graph (so code changes take
        effect); the checkpoint supplies only data: the batch clock, batches
        to re-run, input positions and state, applied by `start()`. Without a
        checkpoint in `directory`, the job starts afresh."""
        ssc = factory()
        if not isinstance(ssc, StreamingContext):
            raise ConfigError(f"get_or_create: the factory must return a StreamingContext, got {type(ssc).__name__}")
        from ingest.storage import storage_for

        wanted = storage_for(directory, checkpoint_options.get("storage_options")).url
        if ssc.checkpoint_dir is None:
            ssc.checkpoint(directory, allow_changes=allow_changes, **checkpoint_options)
        elif ssc.checkpoint_dir != wanted:
            raise ConfigError(f"get_or_create({directory!r}): the factory set another checkpoint directory "
                              f"({ssc.checkpoint_dir}); set it in one place")
        else:
            ssc._log.allow_changes = allow_changes  # type: ignore[attr-defined]
        return ssc

    def _apply_recovery(self, recovery: Any) -> int:
        """Check the application against the checkpoint, restore state and
        input positions; returns the zero time of the batch clock."""
        meta = recovery.metadata
        graph = self._graph
        interval = self.batch_interval_ms
        inputs = {i.name for i in graph.inputs}
        stateful = {s.state_id for s in graph.stateful}
        problems = []
        old_interval = int(meta.get("batch_interval_ms", interval))
        if old_interval != interval:
            problems.append(f"the batch interval changed from {old_interval / 1000} s to {interval / 1000} s")
        gone_inputs = [n for n in meta.get("inputs", []) if n not in inputs]
        if gone_inputs:
            problems.append(f"input(s) {gone_inputs} of the checkpoint are not in the application (renamed or "
                            "removed? give an input its old name with name=...)")
        gone_state = sorted(set(meta.get("stateful", [])) - stateful)
        if gone_state:
            problems.append(f"stateful operator(s) {gone_state} of the checkpoint are not in the application "
                            "(renamed or removed? give the operator its old name with name=...); their state "
                            "would be lost")
        if problems:
            if not self._log.allow_changes:  # type: ignore[attr-defined]
                raise CheckpointError(
                    f"the application changed in ways the checkpoint in {self.checkpoint_dir} cannot honour: "
                    + "; ".join(problems)
                    + ". Revert the change, or pass allow_changes=True to get_or_create()/checkpoint() to go on.")
            log.warning("going on despite application changes (allow_changes=True): %s", "; ".join(problems))
        zero = recovery.zero_time_ms
        if old_interval != interval:
            times = [t for t, _ in recovery.pending] + (
                [recovery.last_committed_ms] if recovery.last_committed_ms is not None else [])
            zero = max(times) if times else zero  # new batch times are multiples of the new interval after it
        for s in graph.stateful:
            files = recovery.state_files.get(s.state_id)
            if files:
                full, deltas = self._log.load_state(files)  # type: ignore[attr-defined]
                try:
                    s.restore(full, deltas)
                except Exception as exc:  # noqa: BLE001 - bytes that passed their checksum but not the serde
                    where = [self._log.storage.describe(f) for f in files]  # type: ignore[attr-defined]
                    raise CheckpointError(
                        f"the state of {s.describe()} in {where} cannot be decoded ({type(exc).__name__}: "
                        f"{exc}): the files were written with another serde or edited; restore them, or start "
                        "from a new checkpoint directory") from exc
        pending_times = [t for t, _ in recovery.pending]
        for inp in graph.inputs:
            inp.on_recovery(recovery.last_committed_ms, pending_times)
            resume = _resume_point(inp, recovery)
            if resume is not None:
                inp.restore(resume)
        self._graph.zero_time_ms = zero
        for t, plans in recovery.replay:
            self._scheduler.replay_state(t, plans)
        if recovery.replay:
            self._log.force_full_snapshots()  # type: ignore[attr-defined]
        meta = dict(meta)
        meta.update({"inputs": sorted(inputs | set(meta.get("inputs", [])) - set(gone_inputs)),
                     "stateful": sorted(stateful), "batch_interval_ms": interval, "zero_time_ms": zero})
        self._log.write_metadata(meta)  # type: ignore[attr-defined]
        log.info("recovered from checkpoint %s: last committed batch %s, %d batch(es) to re-run",
                 self.checkpoint_dir, recovery.last_committed_ms, len(recovery.pending))
        return zero

    # -- internals --------------------------------------------------------------------------------

    def _on_fatal(self, exc: BaseException) -> None:
        """Called from the scheduler or a receiver when the job cannot go on."""
        with self._state_lock:
            first = self._error is None
            if first:
                self._error = exc
            if self._state in (STOPPING, STOPPED):
                # Already stopping: the first error is the job's; a later one is still logged, never swallowed.
                log.error("while stopping the streaming context%s: %s: %s",
                          "" if first else " (after an earlier error)", type(exc).__name__, exc)
                return
            self._state = STOPPING
        log.error("stopping the streaming context: %s: %s", type(exc).__name__, exc)
        # Receivers' threads and the scheduler must not join themselves: stop from a fresh thread.
        threading.Thread(target=self._shutdown, args=(False, 10.0), name="ingest-stopper").start()

    def _shutdown(self, graceful: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        batch_ended = True
        try:
            for inp in self._graph.inputs:
                try:
                    inp.stop_input(graceful, max(0.0, deadline - time.monotonic()))
                except Exception as exc:  # noqa: BLE001
                    log.exception("stopping input %s failed", inp.name)
                    if self._error is None:
                        self._error = exc
            self._scheduler.request_stop(graceful, max(0.0, deadline - time.monotonic()))
            if threading.current_thread() is self._scheduler._thread:
                batch_ended = False  # stop() called by an output operation: its batch is still running
            else:
                batch_ended = self._scheduler.join(max(1.0, deadline - time.monotonic()))
        except BaseException:
            log.exception("stopping the streaming context failed")
        finally:
            self._restore_signal_handlers()  # here: only the thread that called stop() may do it
        if batch_ended:
            self._close(graceful)
            return
        # Closing now would pull inputs, the write-ahead log, shared consumers
        # and the executor from under the batch: the batch is left to end (it
        # commits, or stays uncommitted if it fails), then everything is closed.
        log.warning("the batch in progress did not finish within the stop timeout (%.1f s); inputs are closed "
                    "when it ends (await_termination() waits for that)", timeout)
        threading.Thread(target=self._close_after_last_batch, args=(graceful,), name="ingest-closer").start()

    def _close_after_last_batch(self, graceful: bool) -> None:
        try:
            self._scheduler.join(None)
        finally:
            self._close(graceful)

    def _close(self, graceful: bool) -> None:
        """After the scheduler thread ended: count what was received and never
        processed, close inputs, the log and the executor, and report the stop."""
        lost: list[str] = []
        try:
            for inp in self._graph.inputs:
                # Optional hook of inputs that receive (receivers.ReceiverInputDStream).
                count = getattr(inp, "records_lost_on_stop", lambda: 0)()
                if count:
                    lost.append(f"{count} received record(s) of input {inp.name}")
            for inp in self._graph.inputs:
                try:
                    inp.close()
                except Exception:  # noqa: BLE001
                    log.exception("closing input %s failed", inp.name)
            for s in self._graph.stateful:
                try:
                    s.release()
                except Exception:  # noqa: BLE001 - a worker gone meanwhile keeps nothing anyway
                    log.exception("releasing the state of %s on the workers failed", s.describe())
            self._log.close()
            if self._owns_executor:
                self.executor.shutdown()
        finally:
            loss = None
            if lost:
                loss = ("stopped with " + ", ".join(lost) + " never processed and lost: they were in memory only "
                        "(StreamingContext(write_ahead_log=True) with a checkpoint keeps them for the next start; "
                        "a longer stop timeout gives the last batches time to process them)")
                log.warning("%s", loss)
            with self._state_lock:
                if loss is not None and graceful and self._error is None:
                    # A graceful stop promises to process what was received: it did not.
                    self._error = ReceiverError(loss)
                self._state = STOPPED
            err = None if self._error is None else f"{type(self._error).__name__}: {self._error}"
            if loss is not None and (err is None or loss not in err):
                err = loss if err is None else f"{err}; {loss}"
            self._bus.post(StreamingStopped(time.time(), err))
            self._terminated.set()
            log.info("streaming stopped%s", f" with error: {err}" if err else "")
            if err is None:
                self.close_ui()
            elif self._ui is not None:
                log.info("the web UI at %s keeps showing the failure until the process exits (or close_ui())",
                         self._ui.url)

    def _install_signal_handlers(self) -> None:
        if not self.stop_on_signal or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):  # not allowed here (embedded interpreter)
                pass

    def _restore_signal_handlers(self) -> None:
        if not self._old_handlers or threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):
                pass
        self._old_handlers.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals_seen += 1
        name = signal.Signals(signum).name
        graceful = self._signals_seen == 1
        if graceful:
            log.warning("%s received: stopping gracefully (send it again to stop at once)", name)
        else:
            log.warning("%s received again: stopping now", name)
            self._scheduler.request_stop(graceful=False, timeout=0)
        threading.Thread(target=self.stop, kwargs={"graceful": graceful}, name="ingest-signal-stop").start()

    def __enter__(self) -> "StreamingContext":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop(graceful=exc[0] is None)


def _resume_point(inp: Any, recovery: Any) -> Any:
    """Where `inp` resumes: its `resume_point` from the next position stored
    with the newest readable commit and the plans of the batches that are
    re-run (their intents are newer). An input without resume points
    (`resume_point` returns None) gets its newest readable planned position,
    as `restore` documents."""
    pending = [plans[inp.name] for _t, plans in recovery.pending if plans.get(inp.name) is not None]
    position = inp.resume_point(recovery.next_positions.get(inp.name), pending)
    if position is None:
        position = recovery.last_plans.get(inp.name)
    return position


__all__ = ["StreamingContext"]
