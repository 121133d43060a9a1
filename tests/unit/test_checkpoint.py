"""Checkpoints: the intent/commit log, state that survives restarts, recovery
from damaged files, and the record framing, serde and storage underneath.

Restarts happen in-process: a context is stopped at once (`stop(graceful=False)`,
so queued input is not drained) and a new one is built from the same factory
with `StreamingContext.get_or_create`, as an application's `main` would after
a crash. A batch whose output failed (`max_batch_retries=0`) stays with an
intent and no commit, which is what a crash between the two leaves behind.
Records are strings ("key:value") so that they are plain JSON values.
"""

from __future__ import annotations

import json
import logging
import operator
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import BatchFailedError, CheckpointError, CorruptRecordError, DStream, ManualClock, StreamingContext
from ingest.serde import JsonSerde
from ingest.storage import LocalStorage
from offsets import QueueItems
from offsets.records import RecordId, frame, unframe

MS = 1000

LINES = [["a:1", "b:2"], ["a:3"], [], ["c:1", "b:1"], ["a:2"], [], ["e:2"], ["b:5"], ["c:2", "a:1"], [], ["d:1"],
         [], ["a:4"], []]
N = len(LINES)


def new_context(batch_interval: float = 1.0) -> StreamingContext:
    return StreamingContext(batch_interval=batch_interval, clock=ManualClock(), stop_on_signal=False,
                            log_batches=False)


def parse(line: str) -> tuple[str, int]:
    key, value = line.split(":")
    return key, int(value)


def add_values(values: list[int], old: int | None) -> int | None:
    if not values:
        return None if old is None or old <= 1 else old - 1  # idle keys decay and go away
    return (old or 0) + sum(values)


def tally(key: str, value: int | None, state: Any) -> Any:
    if state.is_timing_out():
        return ("timeout", key, state.get())
    total = state.get_option(0) + value
    state.update(total)
    return ("total", key, total)


def nonzero(kv: tuple[str, int]) -> bool:
    return kv[1] != 0


def stateful_job(lines: DStream[str]) -> dict[str, DStream[Any]]:
    """One operator of each stateful kind (their state ids are the defaults)."""
    pairs = lines.map(parse)
    tallies = pairs.map_with_state(tally, timeout=3.0)
    return {
        "lines": lines,
        "totals": pairs.update_state_by_key(add_values),  # update_state_by_key-0
        "tallies": tallies,  # map_with_state-0
        "snapshots": tallies.state_snapshots(),
        "window": pairs.window(3.0, 2.0),  # window-0
        "sums": pairs.reduce_by_key_and_window(operator.add, operator.sub, 3.0,  # reduce_by_key_and_window-0
                                               filter_fn=nonzero),
    }


STATE_IDS = ["map_with_state-0", "reduce_by_key_and_window-0", "update_state_by_key-0", "window-0"]


class App:
    """An application whose `factory` builds the same graph on every call, as
    `get_or_create` needs. Every output records what it saw; a last output on
    the input fails once at each of `fail_once_at` (batch times)."""

    def __init__(self, batches: list[list[str]] = LINES,
                 build: Callable[[DStream[str]], dict[str, DStream[Any]]] = stateful_job, *,
                 fail_once_at: tuple[int, ...] = (), batch_interval: float = 1.0) -> None:
        self.batches = batches
        self.build = build
        self.fail_once_at = set(fail_once_at)
        self.batch_interval = batch_interval
        self.results: dict[str, dict[int, list[Any]]] = {}
        """The latest records of each output by batch time (a sink keyed by batch)."""
        self.deliveries: list[tuple[str, int, bool]] = []
        """(output, batch time, recovered) for every call."""
        self.batches_seen: list[Any] = []
        """(time, id, positions, attempt, recovered) of every batch the last output saw."""

    def factory(self) -> StreamingContext:
        ssc = new_context(self.batch_interval)
        lines = ssc.queue_stream(self.batches, name="lines")
        for name, stream in self.build(lines).items():
            stream.foreach_batch(lambda batch, name=name: self._collect(name, batch))
        lines.foreach_batch(self._maybe_fail)
        return ssc

    def _collect(self, name: str, batch: Any) -> None:
        self.results.setdefault(name, {})[batch.time] = sorted(batch.collect(), key=repr)
        self.deliveries.append((name, batch.time, batch.recovered))

    def _maybe_fail(self, batch: Any) -> None:
        self.batches_seen.append((batch.time, batch.id, dict(batch.positions), batch.attempt,
                                  batch.recovered))
        if batch.time in self.fail_once_at:
            self.fail_once_at.discard(batch.time)
            raise RuntimeError(f"sink unavailable at {batch.time}")

    def committed_times(self) -> list[int]:
        return [t for t, *_ in self.batches_seen]


def run_once(app: App, directory: Path | None, steps: int, **options: Any) -> StreamingContext:
    """One life of the job: start (recovering from `directory`), run `steps`
    new batches, stop at once. A failed batch ends the life early."""
    if directory is None:
        ssc = app.factory()
    else:
        ssc = StreamingContext.get_or_create(str(directory), app.factory, **options)
    ssc.start()
    try:
        ssc.step(steps)
    except BatchFailedError:
        pass
    finally:
        ssc.stop(graceful=False)
    return ssc


def reference(build: Callable[[DStream[str]], dict[str, DStream[Any]]] = stateful_job,
              batches: list[list[str]] = LINES, steps: int = N) -> dict[str, dict[int, list[Any]]]:
    app = App(batches, build)
    run_once(app, None, steps)
    return app.results


def newest(directory: Path, sub: str) -> Path:
    return sorted((directory / sub).iterdir())[-1]


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def read_record(path: Path) -> Any:
    return json.loads(unframe(path.read_bytes(), str(path))[1])


# -- the batch log -----------------------------------------------------------------------------------


def test_committed_batches_are_never_rerun_and_the_queue_resumes_after_them(tmp_path):
    app = App()
    run_once(app, tmp_path, 3)
    run_once(app, tmp_path, 2)
    assert app.committed_times() == [1000, 2000, 3000, 4000, 5000]
    assert [(t, recovered) for name, t, recovered in app.deliveries if name == "lines"] == [
        (1000, False), (2000, False), (3000, False), (4000, False), (5000, False)]
    assert app.results["lines"] == {i * MS: sorted(LINES[i - 1]) for i in range(1, 6)}


def test_batch_without_commit_is_rerun_with_exactly_the_same_inputs(tmp_path):
    app = App(fail_once_at=(4000,))
    with pytest.raises(BatchFailedError, match="sink unavailable at 4000"):
        ssc = StreamingContext.get_or_create(str(tmp_path), app.factory)
        ssc.start()
        try:
            ssc.step(6)
        finally:
            ssc.stop(graceful=False)
    assert sorted(os.listdir(tmp_path / "offsets"))[-1] == f"{4000:020d}"
    assert sorted(os.listdir(tmp_path / "commits"))[-1] == f"{3000:020d}"
    failed = app.batches_seen[-1]

    run_once(app, tmp_path, 1)
    rerun, after = app.batches_seen[-2:]
    assert rerun[0] == 4000 and rerun[4] is True  # recovered
    assert rerun[2] == failed[2] == {"lines": QueueItems(("c:1", "b:1"), next_seq=4)}
    assert after[0] == 5000 and list(after[2]["lines"].items) == LINES[4]
    assert app.committed_times() == [1000, 2000, 3000, 4000, 4000, 5000]
    assert app.results["lines"][4000] == ["b:1", "c:1"]


def test_rerun_batch_sees_tuple_records_as_tuples(tmp_path):
    seen: list[tuple[int, list[Any]]] = []
    fail = {2000}

    def factory() -> StreamingContext:
        ssc = new_context()
        pairs = ssc.queue_stream([[("a", 1)], [("b", 2), (("x", "y"), 3)]])

        def sink(batch: Any) -> None:
            seen.append((batch.time, batch.collect()))
            if batch.time in fail:
                fail.discard(batch.time)
                raise RuntimeError("sink unavailable")
        pairs.foreach_batch(sink)
        return ssc

    for _ in range(2):
        ssc = StreamingContext.get_or_create(str(tmp_path), factory)
        ssc.start()
        try:
            ssc.step(2)
        except BatchFailedError:
            pass
        finally:
            ssc.stop(graceful=False)
    assert seen[1] == (2000, [("b", 2), (("x", "y"), 3)])  # the failed first attempt
    assert seen[2] == seen[1]  # the re-run after the restart


def test_outputs_see_batch_time_id_and_positions(tmp_path):
    app = App(build=lambda lines: {})
    run_once(app, tmp_path, 2)
    assert app.batches_seen == [
        (1000, "1000", {"lines": QueueItems(("a:1", "b:2"), next_seq=1)}, 1, False),
        (2000, "2000", {"lines": QueueItems(("a:3",), next_seq=2)}, 1, False),
    ]


def test_non_json_queue_record_with_a_checkpoint_names_the_input(tmp_path):
    ssc = new_context()
    ssc.checkpoint(str(tmp_path))
    ssc.queue_stream([[{1, 2}]], name="sets").foreach_batch(lambda batch: None)
    ssc.start()
    try:
        with pytest.raises(CheckpointError, match=r"\['sets'\].*JSON") as err:
            ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert "queue_stream" in str(err.value)
    assert not (tmp_path / "offsets").exists() or os.listdir(tmp_path / "offsets") == []


# -- state across restarts ----------------------------------------------------------------------------


@pytest.mark.parametrize("lives, fail_once_at", [
    ([N], ()),
    ([3, 4, 5, 2], ()),
    ([1] * N, ()),
    ([N, N, N, N], (2000, 5000, 9000)),
    ([4, 4, 4, 4], (4000, 6000)),
], ids=["no-restart", "uneven", "every-batch", "failures", "restarts-and-failures"])
def test_state_of_every_kind_continues_across_restarts_exactly(tmp_path, lives, fail_once_at):
    app = App(fail_once_at=fail_once_at)
    for steps in lives:
        done = app.committed_times()[-1] // MS if app.batches_seen else 0  # a failed batch re-runs first
        if done >= N:
            break
        run_once(app, tmp_path, min(steps, N - done), retain_batches=4, full_snapshot_every=3)
    assert app.results == reference()
    counts: dict[tuple[str, int], int] = {}
    for name, t, _ in app.deliveries:
        counts[name, t] = counts.get((name, t), 0) + 1
    # Committed batches were delivered once; failed ones once more, from their intent.
    assert {key for key, n in counts.items() if n != 1} == {key for key in counts if key[1] in fail_once_at}
    assert max(counts.values()) <= 2
    assert {t for _, t, recovered in app.deliveries if recovered} == set(fail_once_at)


def test_initial_state_is_used_only_on_the_first_start(tmp_path):
    def build(lines: DStream[str]) -> dict[str, DStream[Any]]:
        return {"totals": lines.map(parse).update_state_by_key(add_values, initial_state={"z": 3})}

    app = App(build=build)
    run_once(app, tmp_path, 2)
    run_once(app, tmp_path, 2)
    assert app.results == reference(build, steps=4)
    assert app.results["totals"][4000] == [("a", 2), ("b", 1), ("c", 1)]


def test_added_transformation_and_output_run_after_a_restart(tmp_path):
    app = App()
    run_once(app, tmp_path, 5)

    def extended(lines: DStream[str]) -> dict[str, DStream[Any]]:
        streams = stateful_job(lines)
        streams["keys"] = lines.map(parse).map(lambda kv: kv[0]).count_by_value()
        return streams

    app.build = extended
    run_once(app, tmp_path, 3)
    expected = reference(steps=8)
    assert {name: app.results[name] for name in expected} == expected
    assert app.results["keys"] == {6000: [], 7000: [("e", 1)], 8000: [("b", 1)]}


def test_renamed_functions_keep_their_state(tmp_path):
    app = App()
    run_once(app, tmp_path, 6)

    def renamed_job(lines: DStream[str]) -> dict[str, DStream[Any]]:
        def to_pair(text: str) -> tuple[str, int]:
            return parse(text)

        def totals_v2(values: list[int], old: int | None) -> int | None:
            return add_values(values, old)

        def tally_v2(key: str, value: Any, state: Any) -> Any:
            return tally(key, value, state)

        pairs = lines.map(to_pair)
        tallies = pairs.map_with_state(tally_v2, timeout=3.0)
        return {"lines": lines, "totals": pairs.update_state_by_key(totals_v2), "tallies": tallies,
                "snapshots": tallies.state_snapshots(), "window": pairs.window(3.0, 2.0),
                "sums": pairs.reduce_by_key_and_window(lambda a, b: a + b, lambda a, b: a - b, 3.0,
                                                       filter_fn=lambda kv: kv[1] != 0)}

    app.build = renamed_job
    run_once(app, tmp_path, N - 6)
    assert app.results == reference()


def test_changing_the_partitions_of_stateful_operators_keeps_their_state(tmp_path):
    def partitioned(n: int) -> Callable[[DStream[str]], dict[str, DStream[Any]]]:
        def build(lines: DStream[str]) -> dict[str, DStream[Any]]:
            pairs = lines.map(parse)
            tallies = pairs.map_with_state(tally, timeout=3.0, num_partitions=n)
            return {"totals": pairs.update_state_by_key(add_values, num_partitions=n), "tallies": tallies,
                    "snapshots": tallies.state_snapshots()}
        return build

    app = App(build=partitioned(1))
    run_once(app, tmp_path, 5, full_snapshot_every=3)
    app.build = partitioned(4)
    run_once(app, tmp_path, N - 5, full_snapshot_every=3)
    assert app.results == reference(partitioned(1))


def job_without_map_with_state(lines: DStream[str]) -> dict[str, DStream[Any]]:
    pairs = lines.map(parse)
    return {"lines": lines, "totals": pairs.update_state_by_key(add_values),
            "window": pairs.window(3.0, 2.0),
            "sums": pairs.reduce_by_key_and_window(operator.add, operator.sub, 3.0, filter_fn=nonzero)}


def test_removing_a_stateful_operator_is_refused_naming_it(tmp_path):
    app = App()
    run_once(app, tmp_path, 4)
    app.build = job_without_map_with_state
    ssc = StreamingContext.get_or_create(str(tmp_path), app.factory)
    with pytest.raises(CheckpointError, match=r"stateful operator\(s\) \['map_with_state-0'\]") as err:
        ssc.start()
    assert "allow_changes=True" in str(err.value)
    ssc.stop(graceful=False)
    assert app.committed_times() == [1000, 2000, 3000, 4000]


def test_removing_a_stateful_operator_with_allow_changes_keeps_the_other_state(tmp_path, caplog):
    app = App()
    run_once(app, tmp_path, 4)
    app.build = job_without_map_with_state
    with caplog.at_level(logging.WARNING, logger="ingest"):
        run_once(app, tmp_path, N - 4, allow_changes=True)
    assert any("map_with_state-0" in r.getMessage() for r in caplog.records)
    expected = reference()
    for name in ("lines", "totals", "window", "sums"):
        assert app.results[name] == expected[name], name
    meta = read_record(tmp_path / "metadata")
    assert meta["stateful"] == ["reduce_by_key_and_window-0", "update_state_by_key-0", "window-0"]


def totals_only(lines: DStream[str]) -> dict[str, DStream[Any]]:
    return {"lines": lines, "totals": lines.map(parse).update_state_by_key(add_values)}


def test_changing_the_batch_interval_is_refused_naming_both_intervals(tmp_path):
    app = App(build=totals_only)
    run_once(app, tmp_path, 3)
    app.batch_interval = 2.0
    ssc = StreamingContext.get_or_create(str(tmp_path), app.factory)
    with pytest.raises(CheckpointError, match=r"batch interval changed from 1\.0 s to 2\.0 s"):
        ssc.start()
    ssc.stop(graceful=False)


def test_changing_the_batch_interval_with_allow_changes_goes_on_from_the_last_batch(tmp_path):
    app = App(build=totals_only)
    run_once(app, tmp_path, 3)
    app.batch_interval = 2.0
    run_once(app, tmp_path, 2, allow_changes=True)
    assert app.committed_times() == [1000, 2000, 3000, 5000, 7000]
    # The state went on: batch 5000 took the 4th queued list, as batch 4000 would have.
    expected = reference(totals_only, steps=5)["totals"]
    assert app.results["totals"][5000] == expected[4000] == [("a", 2), ("b", 1), ("c", 1)]
    assert app.results["totals"][7000] == expected[5000]
    assert read_record(tmp_path / "metadata")["batch_interval_ms"] == 2000


# -- clean-up ---------------------------------------------------------------------------------------------


def test_clean_up_keeps_exactly_the_retained_commits_their_intents_and_state_files(tmp_path):
    app = App()
    ssc = StreamingContext.get_or_create(str(tmp_path), app.factory, retain_batches=3, full_snapshot_every=4)
    ssc.start()
    try:
        for i in range(1, N + 1):
            ssc.step(1)
            retained = [f"{t * MS:020d}" for t in range(max(1, i - 2), i + 1)]
            assert sorted(os.listdir(tmp_path / "commits")) == retained
            assert sorted(os.listdir(tmp_path / "offsets")) == retained
            referenced = {f for name in retained
                          for files in read_record(tmp_path / "commits" / name)["state"].values() for f in files}
            on_disk = {f"state/{sid}/{name}" for sid in os.listdir(tmp_path / "state")
                       for name in os.listdir(tmp_path / "state" / sid)}
            assert on_disk == referenced
    finally:
        ssc.stop(graceful=False)
    # map_with_state and the windows wrote deltas between full snapshots;
    # update_state_by_key only full ones.
    newest_commit = read_record(tmp_path / "commits" / f"{N * MS:020d}")["state"]
    with_deltas = ("map_with_state-0", "reduce_by_key_and_window-0", "window-0")
    for sid in with_deltas:
        assert [f.rsplit(".", 1)[1] for f in newest_commit[sid]] == ["full", "delta"]
    assert all(len(files) == 1 and files[0].endswith(".full")
               for sid, files in newest_commit.items() if sid not in with_deltas)


def test_clean_up_leaves_no_temporary_files(tmp_path):
    run_once(App(), tmp_path, 5, retain_batches=2)
    leftovers = [str(p) for p in tmp_path.rglob(".*")]
    assert leftovers == []


def test_lowering_retain_batches_on_restart_deletes_the_older_commits(tmp_path):
    app = App(build=totals_only)
    run_once(app, tmp_path, 6, retain_batches=5)
    run_once(app, tmp_path, 1, retain_batches=2)
    assert sorted(os.listdir(tmp_path / "commits")) == [f"{6000:020d}", f"{7000:020d}"]


# -- damaged files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "truncate-header", "flip-body-bit", "flip-magic-bit", "empty"])
def test_damaged_newest_commit_falls_back_to_the_one_before_and_reruns_its_batch(tmp_path, caplog, damage):
    app = App()
    run_once(app, tmp_path, 6)
    commit = newest(tmp_path, "commits")
    data = commit.read_bytes()
    header = data.index(b"\n") + 1
    if damage == "truncate":
        commit.write_bytes(data[:-3])
    elif damage == "truncate-header":
        commit.write_bytes(data[:header - 5])
    elif damage == "flip-body-bit":
        flip_bit(commit, header + 7, 3)
    elif damage == "flip-magic-bit":
        flip_bit(commit, 2, 1)
    else:
        commit.write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="ingest.checkpoint"):
        run_once(app, tmp_path, N - 6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(commit) in w and "re-run" in w for w in warnings), warnings
    assert app.committed_times() == [i * MS for i in range(1, 7)] + [i * MS for i in range(6, N + 1)]
    assert app.batches_seen[6][4] is True  # batch 6 again, from its intent
    assert app.results == reference()


@pytest.mark.parametrize("state_id", STATE_IDS)
def test_corrupt_newest_state_falls_back_to_older_state_and_replays(tmp_path, caplog, state_id):
    app = App()
    run_once(app, tmp_path, 7, full_snapshot_every=3)
    state_file = newest(tmp_path, f"state/{state_id}")
    assert state_file.name.startswith(f"{7000:020d}")
    flip_bit(state_file, len(state_file.read_bytes()) - 2, 5)

    with caplog.at_level(logging.WARNING, logger="ingest.checkpoint"):
        run_once(app, tmp_path, N - 7, full_snapshot_every=3)
    warnings = " | ".join(r.getMessage() for r in caplog.records)
    assert str(state_file) in warnings and "replaying 1 committed batch" in warnings
    # Batch 7 committed: replayed into the state only, never delivered again.
    assert app.committed_times() == [i * MS for i in range(1, N + 1)]
    assert not any(recovered for *_, recovered in app.deliveries)
    assert app.results == reference()


def test_corrupt_full_snapshot_under_deltas_falls_back_to_an_older_chain(tmp_path, caplog):
    app = App()
    run_once(app, tmp_path, 8, full_snapshot_every=3, retain_batches=6)
    # Commits 3..8 are retained; map_with_state's chains are full@4 d5 d6 and full@7 d8.
    full = tmp_path / "state" / "map_with_state-0" / f"{7000:020d}.full"
    flip_bit(full, len(full.read_bytes()) - 1)
    with caplog.at_level(logging.WARNING, logger="ingest.checkpoint"):
        run_once(app, tmp_path, N - 8, full_snapshot_every=3, retain_batches=6)
    assert "replaying 2 committed batch(es)" in " | ".join(r.getMessage() for r in caplog.records)
    assert app.results == reference()


def test_corrupt_intent_of_a_batch_to_rerun_is_an_error_naming_the_file(tmp_path):
    app = App(fail_once_at=(4000,))
    run_once(app, tmp_path, 6)
    intent = tmp_path / "offsets" / f"{4000:020d}"
    assert not (tmp_path / "commits" / intent.name).exists()
    flip_bit(intent, len(intent.read_bytes()) - 4)
    ssc = StreamingContext.get_or_create(str(tmp_path), app.factory)
    with pytest.raises(CheckpointError) as err:
        ssc.start()
    ssc.stop(graceful=False)
    assert str(intent) in str(err.value) and "must be re-run" in str(err.value)
    assert app.committed_times() == [1000, 2000, 3000, 4000]  # the last one is the failed attempt


def test_corrupt_intent_of_a_committed_batch_only_warns(tmp_path, caplog):
    app = App()
    run_once(app, tmp_path, 5)
    intent = tmp_path / "offsets" / f"{3000:020d}"
    flip_bit(intent, len(intent.read_bytes()) - 4)
    with caplog.at_level(logging.WARNING, logger="ingest.checkpoint"):
        run_once(app, tmp_path, N - 5)
    assert any(str(intent) in r.getMessage() for r in caplog.records)
    assert app.results == reference()


def test_missing_metadata_in_a_used_directory_is_an_error(tmp_path):
    run_once(App(), tmp_path, 2)
    (tmp_path / "metadata").unlink()
    ssc = StreamingContext.get_or_create(str(tmp_path), App().factory)
    with pytest.raises(CheckpointError, match="metadata"):
        ssc.start()
    ssc.stop(graceful=False)


# -- record framing ---------------------------------------------------------------------------------------------

BODY = b'{"time_ms":1000,"positions":{"lines":{"kind":"queue","v":1,"items":["a:1"],"next_seq":1}}}'
INTENT = RecordId("intent", 1000)


def test_frame_round_trips_and_names_kind_time_and_operator():
    record = frame(INTENT, BODY)
    assert record.startswith(b"INGEST-CKPT 2 intent 1000 - %d " % len(BODY))
    assert unframe(record, "f", INTENT) == (INTENT, BODY)
    state = RecordId("delta", 3000, "counts by key/v2")
    assert frame(state, b"").startswith(b"INGEST-CKPT 2 delta 3000 counts%20by%20key%2Fv2 0 ")
    assert unframe(frame(state, b""), "f", state) == (state, b"")


def test_every_bit_flip_in_the_body_is_reported_with_path_and_offset():
    record = frame(INTENT, BODY)
    header = record.index(b"\n") + 1
    for i in range(header, len(record)):
        for bit in range(8):
            damaged = bytearray(record)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptRecordError) as err:
                unframe(bytes(damaged), "/ckpt/offsets/x", INTENT)
            # The checksum covers the header and the body: the whole record is suspect.
            assert (err.value.path, err.value.offset) == ("/ckpt/offsets/x", 0)
            assert "/ckpt/offsets/x" in str(err.value) and "checksum mismatch" in str(err.value)


def test_every_truncation_is_reported():
    record = frame(RecordId("commit", 1000), BODY)
    for n in range(len(record)):
        with pytest.raises(CorruptRecordError, match="/ckpt/commits/x"):
            unframe(record[:n], "/ckpt/commits/x", RecordId("commit", 1000))


@pytest.mark.parametrize("found, expected", [
    (RecordId("intent", 1000), RecordId("commit", 1000)),
    (RecordId("intent", 1000), RecordId("intent", 2000)),
    (RecordId("full", 1000, "a"), RecordId("full", 1000, "b")),
    (RecordId("full", 1000, "a"), RecordId("delta", 1000, "a")),
])
def test_record_of_another_kind_time_or_operator_is_rejected_naming_the_file(found, expected):
    with pytest.raises(CorruptRecordError, match="/ckpt/f: holds the .* but its name says"):
        unframe(frame(found, BODY), "/ckpt/f", expected)


def test_every_bit_flip_in_the_header_is_reported():
    record = frame(INTENT, BODY)
    header = record.index(b"\n") + 1
    for i in range(header):
        for bit in range(8):
            damaged = bytearray(record)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptRecordError) as err:  # not accepted, nor taken for another format
                unframe(bytes(damaged), "/ckpt/offsets/x", INTENT)
            assert err.value.path == "/ckpt/offsets/x" and err.value.offset in (0, header)


# -- JSON serde ------------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
hashables = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                         lambda inner: st.tuples(inner, inner), max_leaves=4)
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                   | st.dictionaries(hashables, inner, max_size=4)),
    max_leaves=20)


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (1 is not 1.0 or True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) and type(k) is type(kb)
                                          for k, kb in zip(a, b))
    return a == b


@settings(max_examples=200, deadline=None)
@given(values)
def test_json_serde_round_trips_tuples_lists_and_dicts_with_any_keys(value):
    serde = JsonSerde()
    assert same(serde.loads(serde.dumps(value)), value)


@pytest.mark.parametrize("value", [
    ("k", 1),
    [("a", (1, 2)), ["b", [3]]],
    {1: "int key", "1": "str key", (2, "x"): ("tuple", "key"), None: [], 1.5: True},
    {"__tuple__": [1, 2]},
    {"__dict__": {"x": 1}},
    {"v": 1, "kind": "full", "items": [(("k", 2), (3, None))]},
    ((), [], {}),
], ids=["pair", "nested", "mixed-keys", "tuple-marker-key", "dict-marker-key", "snapshot", "empties"])
def test_json_serde_keeps_shapes(value):
    serde = JsonSerde()
    data = serde.dumps(value)
    assert same(serde.loads(data), value)
    assert json.loads(data) is not None  # still JSON


def test_json_serde_refuses_other_types_naming_them():
    with pytest.raises(TypeError, match="JsonSerde cannot store a set"):
        JsonSerde().dumps({"k": {1, 2}})
    with pytest.raises(ValueError):
        JsonSerde().dumps(float("nan"))


def test_state_the_serde_cannot_store_is_an_error_naming_the_operator(tmp_path):
    class Point:
        pass

    ssc = new_context()
    ssc.checkpoint(str(tmp_path))
    ssc.queue_stream([["a"]]).map(lambda _line: Point()).window(2.0, name="points").foreach_batch(lambda b: None)
    ssc.start()
    try:
        with pytest.raises(CheckpointError) as err:
            ssc.step(1)
    finally:
        ssc.stop(graceful=False)
    assert "window 'points'" in str(err.value) and "JsonSerde cannot store a Point" in str(err.value)


# -- storage ----------------------------------------------------------------------------------------------------


def test_write_atomic_creates_directories_and_replaces_content(tmp_path):
    storage = LocalStorage(str(tmp_path / "root"))
    storage.write_atomic("a/b/file", b"one")
    storage.write_atomic("a/b/file", b"two, longer")
    assert (tmp_path / "root" / "a" / "b" / "file").read_bytes() == b"two, longer"
    assert storage.read("a/b/file") == b"two, longer"
    assert storage.size("a/b/file") == len(b"two, longer")
    assert os.listdir(tmp_path / "root" / "a" / "b") == ["file"]  # no temporary file left


def test_write_new_refuses_an_existing_name_and_keeps_its_content(tmp_path):
    storage = LocalStorage(str(tmp_path))
    storage.write_new("x", b"first")
    with pytest.raises(FileExistsError):
        storage.write_new("x", b"second")
    assert storage.read("x") == b"first"
    assert os.listdir(tmp_path) == ["x"]


def test_list_exists_delete_and_describe(tmp_path):
    storage = LocalStorage(str(tmp_path))
    for name in ("d/2", "d/10", "d/1"):
        storage.write_atomic(name, b"")
    (tmp_path / "d" / ".hidden.tmp").write_bytes(b"")
    assert storage.list("d") == ["1", "10", "2"]
    assert storage.list("missing") == []
    assert storage.exists("d/1") and not storage.exists("d/3")
    storage.delete("d/1")
    storage.delete("d/1")  # a missing file is not an error
    assert storage.list("d") == ["10", "2"]
    assert storage.describe("d/2") == str(tmp_path / "d" / "2")
