"""`ingest services s3` and `ingest services hdfs`: a real server in the
foreground that says where it listens, answers there, and stops (and deletes
its work directory) on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from ingest.testing.plugin import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


def run_service(name: str, ready_pattern: str, answers: str) -> tuple[re.Match[str], str]:
    """Start the service, wait for its ready banner, check that `answers` (a URL
    template over the pattern's group 1) answers 200, then interrupt it."""
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "services", name], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        text = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            text += line
            if "Ctrl-C" in line:
                break
        match = re.search(ready_pattern, text)
        assert match, text + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        with urllib.request.urlopen(answers.format(match.group(1)), timeout=10) as response:
            assert response.status == 200
        return match, text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]


@pytest.mark.s3
def test_ingest_services_s3_serves_a_bucket_until_interrupted() -> None:
    from ingest.testing import s3

    if s3.missing_requirements():
        skip_or_fail("`ingest services s3` needs " + " and ".join(s3.missing_requirements()))
    match, _ = run_service("s3", r"endpoint: (http://127\.0\.0\.1:\d+)", "{}/moto-api/")
    with pytest.raises(OSError):  # stopped with Ctrl-C: nothing answers any more
        urllib.request.urlopen(f"{match.group(1)}/moto-api/", timeout=2)


@pytest.mark.hdfs
@pytest.mark.slow
def test_ingest_services_hdfs_serves_webhdfs_until_interrupted() -> None:
    from ingest.testing import hdfs

    if hdfs.missing_requirements():
        skip_or_fail("`ingest services hdfs` needs " + " and ".join(hdfs.missing_requirements()))
    match, text = run_service("hdfs", r"url: +hdfs://(127\.0\.0\.1:\d+)",
                                "http://{}/webhdfs/v1/?op=LISTSTATUS&user.name=t")
    workdir = re.search(r"workdir: +(\S+)", text)
    assert workdir
    assert not Path(workdir.group(1)).exists()  # deleted on exit
