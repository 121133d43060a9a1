"""The Flume pull stream's positions: `SequenceNumbers`.

A batch of `flume_polling_stream` plans, per agent address, the sequence numbers
(the pull sink's batch ids) whose events it holds, each with the block that
stores them; that is the intent, and a re-run after a restart reads exactly
those blocks from the write-ahead log. The resume point stored with each commit
is the newest batch taken from each agent. The codec reads the first format of
the kind (triples without blocks) and refuses a newer one.

The receiver here is fed by hand with what the pull receiver stores (records and
the agent's address and sequence number as block metadata); the real agent is
in tests/integration/test_flume_pull.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from ingest import StreamingContext
from ingest.checkpoint import CheckpointLog
from ingest.errors import BatchFailedError, CheckpointError
from ingest.ui.positions import position_view
from offsets import BlockRef, ReceivedBlocks, SequenceNumbers, SequenceRef, position_from_data, position_to_data
from receivers import Receiver
from receivers.flume.polling_input import FlumePollingInputDStream, newest_per_agent

STREAM = "pull"
A, B = "127.0.0.1:41416", "127.0.0.1:41417"


class HandFedReceiver(Receiver[Any]):
    """Stores what the test hands it, as the pull receiver stores a polled batch."""

    def __init__(self) -> None:
        super().__init__("hand-fed pull receiver")

    def on_start(self) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def polled(self, source: str, sequence: str, events: list[Any]) -> str:
        return self.store_batch(events, {"source": source, "sequence": sequence, "events": len(events)})


def block(block_id: str, records: int, wal: dict[str, int] | None = None) -> BlockRef:
    return BlockRef(block_id, STREAM, records, None, wal)


# -- the codec ---------------------------------------------------------------------------------


def test_a_plan_with_blocks_round_trips_through_json_unchanged() -> None:
    plan = SequenceNumbers((SequenceRef(A, "18c2f-7", 2, block("b-1", 2, {"segment": 0, "offset": 0, "length": 40})),
                            SequenceRef(B, "9ae01-1", 1, block("b-2", 1, {"segment": 0, "offset": 40, "length": 30})),
                            SequenceRef(A, "18c2f-8", 3, block("b-3", 3))))
    data = json.loads(json.dumps(position_to_data(plan)))
    assert data["kind"] == "flume" and data["v"] == 2
    assert data["batches"][0] == {"source": A, "sequence": "18c2f-7", "events": 2,
                                  "block": {"id": "b-1", "stream": STREAM, "records": 2,
                                            "wal": {"segment": 0, "offset": 0, "length": 40}}}
    assert position_from_data(data) == plan
    assert plan.records == 6 and [b.block_id for b in plan.blocks] == ["b-1", "b-2", "b-3"]


def test_a_resume_point_names_batches_without_blocks() -> None:
    resume = SequenceNumbers((SequenceRef(A, "18c2f-8", 3),))
    data = position_to_data(resume)
    assert data["batches"] == [{"source": A, "sequence": "18c2f-8", "events": 3}]
    assert position_from_data(data) == resume and resume.blocks == ()


def test_the_first_format_of_the_kind_is_still_read() -> None:
    old = {"kind": "flume", "v": 1, "batches": [[A, "17", 10], [B, "4", 2]]}
    assert position_from_data(old) == SequenceNumbers((SequenceRef(A, "17", 10), SequenceRef(B, "4", 2)))


def test_a_newer_format_is_refused_naming_the_versions() -> None:
    with pytest.raises(CheckpointError, match=r"flume position format version 3, this release reads versions 1\.\.2"):
        position_from_data({"kind": "flume", "v": 3, "batches": []})


def test_the_summary_lists_the_sequence_numbers_per_agent() -> None:
    plan = SequenceNumbers(tuple(SequenceRef(B if i == 2 else A, f"r-{i}", 1) for i in range(9)))
    assert plan.describe() == f"{A} #r-0, #r-1, #r-3, #r-4, #r-5, #r-6 (+2 more); {B} #r-2"
    assert SequenceNumbers().describe() == "no Flume batch"


def test_the_web_ui_shows_one_row_per_flume_batch_with_its_block_readably() -> None:
    plan = SequenceNumbers((SequenceRef(A, "r-1", 2, block("b-1", 2, {"segment": 3, "offset": 96, "length": 40})),))
    view = position_view(plan)
    assert view["summary"] == f"{A} #r-1" and view["records"] == 2
    assert view["tables"]["batches"] == {
        "columns": ["source", "sequence", "events", "block"],
        "rows": [[A, "r-1", 2, "b-1: 2 record(s), log length 40, offset 96, segment 3"]]}


# -- the stream ----------------------------------------------------------------------------------


class Job:
    def __init__(self, ssc: StreamingContext, stream: FlumePollingInputDStream, receiver: HandFedReceiver,
                 batches: list[tuple[Any, list[Any]]]) -> None:
        self.ssc, self.stream, self.receiver, self.batches = ssc, stream, receiver, batches


def build_job(make_context: Any, checkpoint: Path, *, fail: bool = False) -> Job:
    receiver = HandFedReceiver()
    batches: list[tuple[Any, list[Any]]] = []

    def output(batch: Any) -> None:
        if fail:
            raise RuntimeError("sink down")
        batches.append((batch.positions[STREAM], batch.collect()))

    def factory() -> StreamingContext:
        ssc = make_context(write_ahead_log=True, log_batches=False)
        stream = FlumePollingInputDStream(ssc, receiver, name=STREAM, kind="flume-polling")
        stream.foreach_batch(output)
        factory.stream = stream  # type: ignore[attr-defined]
        return ssc

    ssc = StreamingContext.get_or_create(str(checkpoint), factory)
    return Job(ssc, factory.stream, receiver, batches)  # type: ignore[attr-defined]


@pytest.fixture
def job(make_context: Any, tmp_path: Path) -> Any:
    return functools.partial(build_job, make_context, tmp_path)


def intent_of(checkpoint: Path, time_ms: int) -> Any:
    return CheckpointLog(str(checkpoint)).read_intent(time_ms).positions[STREAM]


def test_a_batch_plans_the_agents_sequence_numbers_with_their_blocks(job, tmp_path: Path) -> None:
    run = job()
    run.ssc.start()
    ids = [run.receiver.polled(A, "a-1", ["e0", "e1"]), run.receiver.polled(B, "b-1", ["e2"]),
           run.receiver.polled(A, "a-2", ["e3"])]
    run.ssc.step()
    (position, records), = run.batches
    assert records == ["e0", "e1", "e2", "e3"]
    assert isinstance(position, SequenceNumbers)
    assert [(r.source, r.sequence, r.events) for r in position.batches] == [(A, "a-1", 2), (B, "b-1", 1),
                                                                            (A, "a-2", 1)]
    assert [r.block.block_id for r in position.batches] == ids
    assert all(r.block.wal_handle is not None and r.block.metadata is None for r in position.batches)
    assert intent_of(tmp_path, run.ssc.clock.now_ms()) == position  # the intent holds exactly that


def test_a_re_run_after_a_restart_reads_exactly_the_planned_events_from_the_log(job, tmp_path: Path) -> None:
    first = job(fail=True)
    first.ssc.start()
    first.receiver.polled(A, "a-1", ["e0", "e1"])
    first.receiver.polled(B, "b-1", ["e2"])
    with pytest.raises(BatchFailedError, match="sink down"):
        first.ssc.step()
    with pytest.raises(BatchFailedError):  # the context stopped with the batch's error
        first.ssc.await_termination(10)
    planned = intent_of(tmp_path, first.ssc.clock.now_ms())

    second = job()
    second.ssc.start()
    second.receiver.polled(A, "a-2", ["e3"])  # after the restart: the next batch's, not the re-run's
    second.ssc.step()
    assert second.batches[0] == (planned, ["e0", "e1", "e2"])
    second.ssc.step()
    assert [(r.sequence, r.events) for r in second.batches[1][0].batches] == [("a-2", 1)]
    assert second.batches[1][1] == ["e3"]


def test_every_commit_stores_the_newest_batch_of_each_agent_as_the_resume_point(job, tmp_path: Path) -> None:
    first = job()
    first.ssc.start()
    first.receiver.polled(A, "a-1", ["e0"])
    first.receiver.polled(B, "b-1", ["e1"])
    first.ssc.step()
    first.receiver.polled(A, "a-2", ["e2", "e3"])
    first.ssc.step()
    first.ssc.step()  # reads nothing: the resume point carries over
    log = CheckpointLog(str(tmp_path))
    expected = SequenceNumbers((SequenceRef(A, "a-2", 2), SequenceRef(B, "b-1", 1)))
    for time_ms in (2000, 3000):
        assert log.read_commit(time_ms).next_positions[STREAM] == expected
    first.ssc.stop()

    second = job()  # a restart resumes from it
    second.ssc.start()
    assert second.stream.resume == expected


def test_the_resume_point_folds_the_batches_to_re_run_into_the_committed_one() -> None:
    committed = SequenceNumbers((SequenceRef(A, "a-1", 1), SequenceRef(B, "b-1", 1)))
    rerun = SequenceNumbers((SequenceRef(A, "a-2", 4, block("x", 4)),))
    assert newest_per_agent(committed, rerun) == SequenceNumbers((SequenceRef(A, "a-2", 4),
                                                                 SequenceRef(B, "b-1", 1)))
    assert newest_per_agent(None, ReceivedBlocks(())) is None


def test_an_intent_of_a_release_that_planned_blocks_is_still_re_run(job, tmp_path: Path) -> None:
    run = job()
    run.ssc.start()
    block_id = run.receiver.polled(A, "a-1", ["e0", "e1"])
    (ref,) = run.stream.tracker.reserve(1000)
    assert ref.block_id == block_id
    data = run.stream.materialize(1000, ReceivedBlocks((ref,)))
    assert data.collect() == ["e0", "e1"]


def test_checkpoint_show_names_each_batchs_sequence_numbers_and_the_resume_point(job, tmp_path: Path,
                                                                                 capsys: Any) -> None:
    from ingest.checkpoint_cli import run_checkpoint_command

    run = job()
    run.ssc.start()
    run.receiver.polled(A, "a-1", ["e0", "e1"])
    run.receiver.polled(B, "b-1", ["e2"])
    run.ssc.step()
    run.ssc.stop()
    assert run_checkpoint_command("show", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"      {STREAM}: 3 records, {A} #a-1; {B} #b-1\n" in out
    assert f"      {STREAM} resume point: {A} #a-1; {B} #b-1\n" in out
