"""`ingest checkpoint fsck` of a checkpoint on S3 checks the receivers'
write-ahead log objects: a healthy log has no problem, a damaged object is
named."""

from __future__ import annotations

import pytest

from ingest.storage import storage_for
from receivers.block import Block
from receivers.block_log import BlockLog
from receivers.plugin import check_write_ahead_logs

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_storage_options: dict) -> None:
    """The S3 client's usual configuration (what the CLI uses) pointing at the test server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_storage_options["endpoint_url"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_storage_options.get("aws_access_key_id", "testing"))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_storage_options.get("aws_secret_access_key", "testing"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_fsck_reads_every_wal_object_of_an_s3_checkpoint_and_names_a_damaged_one(s3_env, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/ckpt"
    storage = storage_for(url)
    log = BlockLog(storage, "lines")
    try:
        for i in range(3):
            log.store_block("lines", Block(f"b{i}", [f"line {i}"]))
    finally:
        log.close()
    assert list(check_write_ahead_logs(url)) == []
    names = storage.list("receivers/lines")
    assert len(names) == 3
    damaged = f"receivers/lines/{names[1]}"
    storage.write_atomic(damaged, storage.read(damaged)[:-1] + b"?")
    problems = list(check_write_ahead_logs(url))
    assert len(problems) == 1 and storage.describe(damaged) in problems[0] and "CRC32C" in problems[0]
