"""`ingest checkpoint ls|show|fsck DIR`, run as a user runs it (a separate
process) on a directory written by a short job: four committed batches and a
fifth whose output failed, so it has an intent and no commit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import crc32c
import pytest

from ingest import BatchFailedError, IngestError, ManualClock, StreamingContext
from ingest.checkpoint_cli import inspect, run_checkpoint_command
from ingest.fsck_checks import _checks as _fsck_checks, register_fsck_check
from offsets.records import RecordId, frame

BATCHES = [["a", "b"], ["a"], [], ["c", "b", "a"], ["d"], ["e"]]
STATE_IDS = ["map_with_state-0", "update_state_by_key-0"]


def count(values: list[int], old: int | None) -> int:
    return (old or 0) + len(values)


def remember(key: str, value: int, state: Any) -> None:
    state.update(state.get_option(0) + value)


def build_context(directory: Path, fail_at: int | None = None) -> StreamingContext:
    def sink(batch: Any) -> None:
        if batch.time == fail_at:
            raise RuntimeError("sink unavailable")

    ssc = StreamingContext(batch_interval=1.0, clock=ManualClock(), stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(directory), full_snapshot_every=3)
    pairs = ssc.queue_stream(BATCHES, name="words").map(lambda w: (w, 1))
    pairs.update_state_by_key(count).foreach_batch(lambda batch: None)
    pairs.map_with_state(remember).foreach_batch(sink)
    return ssc


def write_checkpoint(directory: Path) -> None:
    ssc = build_context(directory, fail_at=5000)
    ssc.start()
    try:
        with pytest.raises(BatchFailedError):
            ssc.step(6)
    finally:
        ssc.stop(graceful=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("checkpoint")
    write_checkpoint(directory)
    return directory


@pytest.fixture
def checkpoint_dir(written: Path, tmp_path: Path) -> Path:
    """A copy of the written directory that a test may damage."""
    copy = tmp_path / "ckpt"
    shutil.copytree(written, copy)
    return copy


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest.cli", "checkpoint", *args],
                          capture_output=True, text=True, timeout=60)


def name(time_ms: int) -> str:
    return f"{time_ms:020d}"


def test_ls_lists_every_batch_with_its_intent_and_commit(checkpoint_dir):
    result = cli("ls", str(checkpoint_dir))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    # date, time, time_ms, intent, commit[, records]
    assert [row[2:] for row in rows] == [
        ["1000", "ok", "ok", "2"], ["2000", "ok", "ok", "1"], ["3000", "ok", "ok", "0"],
        ["4000", "ok", "ok", "3"], ["5000", "ok", "-"]]
    assert "to re-run on restart: 1" in result.stdout
    assert "inputs ['words']" in result.stdout


def test_show_lists_plans_and_state_files(checkpoint_dir):
    result = cli("show", str(checkpoint_dir))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("words: ") == 5 and "words: 3 records" in out
    for sid in STATE_IDS:
        assert f"{sid}: 4 file(s)" in out
    for t in (1000, 2000, 3000, 4000):
        assert f"{name(t)}.full" in out  # update_state_by_key snapshots are always full
    assert f"{name(2000)}.delta" in out and f"{name(3000)}.delta" in out  # map_with_state between fulls
    assert "CORRUPT" not in out


def test_fsck_of_a_healthy_directory_exits_0_and_says_what_a_restart_would_do(checkpoint_dir):
    result = cli("fsck", str(checkpoint_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 batches, 8 state files, no problems" in result.stdout
    assert "a restart would resume after batch" in result.stdout and "re-run 1 batch(es)" in result.stdout


@pytest.mark.parametrize("victim, restart_fails", [
    (f"state/map_with_state-0/{name(3000)}.delta", False),  # an older state chain: not used
    (f"commits/{name(2000)}", False),  # an older commit: ignored
    (f"offsets/{name(5000)}", True),  # the intent of the batch to re-run
    ("metadata", True),
])
def test_fsck_of_a_damaged_file_exits_1_naming_it_and_says_whether_a_restart_would_fail(
        checkpoint_dir, victim, restart_fails):
    path = checkpoint_dir / victim
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))
    result = cli("fsck", str(checkpoint_dir))
    assert result.returncode == 1
    assert f"{1 + restart_fails} problem(s)" in result.stdout
    assert str(path) in result.stdout and "checksum mismatch" in result.stdout
    assert ("a restart would fail: " in result.stdout) is restart_fails
    assert ("a restart would resume after batch" in result.stdout) is not restart_fails


def test_fsck_reports_a_state_file_a_commit_lists_but_is_missing(checkpoint_dir):
    missing = checkpoint_dir / "state" / "update_state_by_key-0" / f"{name(4000)}.full"
    missing.unlink()
    result = cli("fsck", str(checkpoint_dir))
    assert result.returncode == 1
    assert f"commit of batch 4000 lists {missing}, which is missing" in result.stdout


def test_ls_and_show_still_exit_0_on_a_damaged_directory_and_mark_the_file(checkpoint_dir):
    commit = checkpoint_dir / "commits" / name(3000)
    commit.write_bytes(commit.read_bytes()[:-2])
    result = cli("ls", str(checkpoint_dir))
    assert result.returncode == 0
    row = next(line for line in result.stdout.splitlines() if " 3000 " in line)
    assert row.split()[2:5] == ["3000", "ok", "CORRUPT"]
    assert str(commit) in result.stdout


@pytest.mark.parametrize("action", ["ls", "show", "fsck"])
def test_json_output_parses_and_describes_the_batches(checkpoint_dir, action):
    result = cli(action, str(checkpoint_dir), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["directory"] == str(checkpoint_dir)
    assert info["last_committed_ms"] == 4000 and info["pending"] == [5000]
    assert [b["time_ms"] for b in info["batches"]] == [1000, 2000, 3000, 4000, 5000]
    assert info["problems"] == []
    if action != "ls":
        assert info["metadata"]["inputs"] == ["words"]
        assert info["batches"][0]["intent"]["plans"]["words"]["items"] == ["a", "b"]
        assert sorted(info["state"]) == STATE_IDS


def test_fsck_json_of_a_damaged_directory_lists_the_problem_and_exits_1(checkpoint_dir):
    state = checkpoint_dir / "state" / "update_state_by_key-0" / f"{name(1000)}.full"
    state.write_bytes(b"")
    result = cli("fsck", str(checkpoint_dir), "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert len(problems) == 1 and str(state) in problems[0]


def test_missing_directory_is_a_usage_error(tmp_path):
    result = cli("ls", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("action", ["ls", "show", "fsck"])
def test_a_file_instead_of_a_directory_is_a_usage_error_saying_so(tmp_path, action):
    path = tmp_path / "metadata"
    path.write_text("not a directory")
    result = cli(action, str(path))
    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr


@pytest.mark.parametrize("action", ["ls", "fsck"])
def test_a_directory_that_is_not_a_checkpoint_is_reported_and_exits_1(tmp_path, action):
    (tmp_path / "notes.txt").write_text("something else")
    result = cli(action, str(tmp_path))
    assert result.returncode == 1
    assert "is not a checkpoint directory" in result.stderr
    assert result.stdout == ""


def test_output_to_a_reader_that_went_away_ends_quietly(checkpoint_dir):
    # A pipe whose reader is closed before the command writes, as `| head` does once it
    # has its lines: no BrokenPipeError traceback, the shell's exit code for SIGPIPE.
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "checkpoint", "show", str(checkpoint_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert stderr == ""


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))


def crafted_commit(path: Path) -> None:
    """A commit with a valid checksum whose state list names another operator's file."""
    body = {"time_ms": 4000, "summary": {}, "state": {"map_with_state-0": [f"state/other/{name(4000)}.full"]}}
    path.write_bytes(frame(RecordId("commit", 4000), json.dumps(body).encode()))


def into_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def swap_with_older(path: Path) -> None:
    older = path.with_name(name(int(path.name[:20]) - 1000) + path.name[20:])
    data = path.read_bytes()
    path.write_bytes(older.read_bytes())
    older.write_bytes(data)


DAMAGES = [
    (f"commits/{name(4000)}", flip), (f"commits/{name(4000)}", crafted_commit),
    (f"commits/{name(4000)}", into_directory), (f"commits/{name(4000)}", Path.unlink),
    (f"offsets/{name(4000)}", flip), (f"offsets/{name(4000)}", Path.unlink),
    (f"offsets/{name(5000)}", flip), (f"offsets/{name(5000)}", into_directory),
    (f"offsets/{name(3000)}", swap_with_older), (f"offsets/{name(5000)}", Path.unlink),
    (f"state/update_state_by_key-0/{name(4000)}.full", flip),
    (f"state/update_state_by_key-0/{name(4000)}.full", swap_with_older),
    (f"state/map_with_state-0/{name(4000)}.full", into_directory),
    ("metadata", flip), ("metadata", into_directory),
]


@pytest.mark.parametrize("victim, damage", DAMAGES, ids=[f"{v}-{d.__name__}" for v, d in DAMAGES])
def test_fsck_says_a_restart_fails_exactly_when_a_restart_fails(checkpoint_dir, victim, damage):
    damage(checkpoint_dir / victim)
    info = inspect(str(checkpoint_dir))
    ssc = build_context(checkpoint_dir)
    try:
        ssc.start()
        error = None
    except IngestError as exc:  # a project error, never a foreign one
        error = exc
    finally:
        ssc.stop(graceful=False)
    assert info["restart"]["ok"] is (error is None), (info["restart"], error)
    if error is not None:
        assert info["restart"]["error"] == str(error)
        assert str(checkpoint_dir) in str(error)
    if damage is not Path.unlink:  # a deleted file can be what a crash leaves: not always a finding
        assert any(str(checkpoint_dir / victim) in p for p in info["problems"]), info["problems"]


def test_fsck_runs_the_registered_checks_and_reports_their_findings(checkpoint_dir, capsys, monkeypatch):
    monkeypatch.setattr("ingest.fsck_checks._checks", list(_fsck_checks))

    @register_fsck_check
    def wal_check(directory: str) -> list[str]:
        assert directory == str(checkpoint_dir)
        return [f"{directory}/receivers/x/blocks-1.wal: record 3 fails its checksum"]

    assert run_checkpoint_command("fsck", str(checkpoint_dir)) == 1
    out = capsys.readouterr().out
    assert f"{checkpoint_dir}/receivers/x/blocks-1.wal: record 3 fails its checksum" in out


def test_fsck_of_a_checkpoint_of_an_older_format_names_the_version(tmp_path):
    prefix = b"INGEST-CKPT 1 meta 2 "
    (tmp_path / "metadata").write_bytes(prefix + b"%08x\n" % crc32c.crc32c(b"{}", crc32c.crc32c(prefix)) + b"{}")
    result = cli("fsck", str(tmp_path))
    assert result.returncode == 1
    assert "checkpoint format 1, written by an older release" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
