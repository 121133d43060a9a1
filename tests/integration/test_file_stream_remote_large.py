"""File streams at scale on the real remote backends: 10,000 objects in one S3
prefix (moto's server; every listing takes ten pages) and a 200 MB text file
on HDFS (MiniDFSCluster over WebHDFS) cut into byte ranges read by separate
tasks. What is read is compared with what was written, or with a direct read
through the backend's own client.

Times on the 2-core development machine under load (4-10): S3 45-60 s to
write the 10,000 objects and 40-90 s to list and read them (each listing is
ten pages, 4-13 s; the reads are 10,000 GETs); HDFS ~20 s to start the
cluster (once a session), ~9 s to write the file, ~8 s to read it by ranges
checking every line, ~1 s to read it directly."""

from __future__ import annotations

import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import pytest

pytestmark = pytest.mark.slow

OBJECTS = 10_000


def s3_client(options: dict) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=options.get("endpoint_url"),
                        region_name=options.get("region", "us-east-1"),
                        aws_access_key_id=options.get("aws_access_key_id"),
                        aws_secret_access_key=options.get("aws_secret_access_key"),
                        config=Config(max_pool_connections=16))


@pytest.mark.s3
def test_ten_thousand_objects_in_one_prefix_are_listed_over_many_pages_and_each_read_once(
        make_context, s3_bucket: str, s3_storage_options: dict) -> None:
    client = s3_client(s3_storage_options)

    def body(name: str) -> bytes:
        return f"{name} first\n{name} second\n".encode()

    def put(name: str) -> None:
        client.put_object(Bucket=s3_bucket, Key=f"job/in/{name}", Body=body(name))

    names = [f"part-{i:05d}.txt" for i in range(OBJECTS)]
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:  # a PUT is one round trip: a few at a time keep both sides busy
        list(pool.map(put, names))
    written = time.monotonic() - started

    ssc = make_context(executor="threads", parallelism=4)
    stream = ssc.text_file_stream(f"s3://{s3_bucket}/job/in", storage_options=s3_storage_options,
                                  new_files_only=False, max_files_per_batch=5_000)
    batches: list[list[str]] = []
    per_batch: list[int] = []
    stream.foreach_batch(lambda b: (batches.append(b.collect()),
                                    per_batch.append(len({s.path for s in b.positions[stream.name].files}))))
    ssc.start()
    started = time.monotonic()
    ssc.step(timeout=120)
    late = [f"late-{i}.txt" for i in range(3)]  # written while the job runs, between two listings
    for name in late:
        put(name)
    ssc.step(2, timeout=120)
    read = time.monotonic() - started
    print(f"{OBJECTS:,} S3 objects: written in {written:.1f} s, 3 batches listed and read in {read:.1f} s "
          f"(last listing {stream.metrics()['listing_ms']} ms)")

    assert per_batch == [5_000, 5_000, 3], "oldest first (the late ones last), at most 5,000 a batch"
    assert stream.metrics()["listed"] == OBJECTS + len(late)
    got = [line for batch in batches for line in batch]
    want = [line for name in [*names, *late] for line in body(name).decode().splitlines()]
    assert len(got) == len(want) and sorted(got) == sorted(want), "every object's full contents, once"
    assert stream.metrics()["files_read"] == OBJECTS + len(late)


# -- a 200 MB file on HDFS ------------------------------------------------------------------------

HDFS_BYTES = 200_000_000
PAYLOAD = "abcdefghijklmnopqrstuvwxyz0123456789" * 4


def line(i: int) -> str:
    """Line i: its number and a payload of a length that varies with it, so
    range boundaries fall anywhere in a line and a cut line cannot pass
    `check_line`."""
    return f"{i:09d} {PAYLOAD[: i % 131]}"


def check_line(text: str) -> int:
    i = int(text[:9])
    assert text == line(i), f"line {i} is damaged (cut across tasks?): {text[:60]!r}"
    return i


def lines_of_the_file() -> Iterator[bytes]:
    """The file, in chunks of about 1 MB of whole lines, up to HDFS_BYTES."""
    i = size = 0
    while size < HDFS_BYTES:
        chunk = []
        while len(chunk) < 16_000:
            chunk.append(line(i))
            i += 1
        data = ("\n".join(chunk) + "\n").encode()
        size += len(data)
        yield data


def summary(lines: Iterable[str]) -> list[tuple[int, int, int, int]]:
    """One partition: (lines, sum of the lines' CRC-32s, first number, last
    number), after checking each line is whole and follows the one before."""
    count = crc = 0
    first = previous = -1
    for text in lines:
        i = check_line(text)
        if count == 0:
            first = i
        else:
            assert i == previous + 1, f"line {previous + 1} is missing or out of order in its task"
        previous = i
        count += 1
        crc += zlib.crc32(text.encode())
    return [(count, crc, first, previous)]


@pytest.mark.hdfs
def test_a_200_mb_file_on_hdfs_is_split_into_range_tasks_that_read_every_line_once(
        make_context, hdfs_url: str) -> None:
    from hdfs import InsecureClient

    directory = f"/tests/{uuid.uuid4().hex[:12]}/in"
    client = InsecureClient("http://" + hdfs_url.split("://", 1)[1], user="tester")
    started = time.monotonic()
    client.write(f"{directory}/.big.txt.writing", data=lines_of_the_file())  # written under a hidden name,
    client.rename(f"{directory}/.big.txt.writing", f"{directory}/big.txt")   # then moved in: atomic
    size = client.status(f"{directory}/big.txt")["length"]
    written = time.monotonic() - started

    ssc = make_context()
    stream = ssc.text_file_stream(f"{hdfs_url}{directory}", storage_options={"user": "tester"},
                                  new_files_only=False, min_partition_bytes=16 << 20)
    parts: list[list[tuple[int, int, int, int]]] = []
    stream.map_partitions(summary).foreach_batch(lambda b: parts.append(b.collect()))
    ssc.start()
    started = time.monotonic()
    ssc.step()
    read = time.monotonic() - started

    started = time.monotonic()  # the same file read directly, in one pass
    direct_count = direct_crc = 0
    rest = b""
    with client.read(f"{directory}/big.txt", chunk_size=1 << 20) as chunks:
        for chunk in chunks:
            pieces = (rest + chunk).split(b"\n")
            rest = pieces.pop()
            direct_count += len(pieces)
            direct_crc += sum(map(zlib.crc32, pieces))
    assert rest == b""
    direct = time.monotonic() - started
    client.delete(directory.rsplit("/", 1)[0], recursive=True)
    summaries = parts[0]
    print(f"{size / 1e6:.0f} MB on HDFS: written in {written:.1f} s, read by {len(summaries)} range tasks "
          f"checking each line in {read:.1f} s, directly in {direct:.1f} s")

    assert size >= HDFS_BYTES
    assert len(summaries) == size // (16 << 20), "one task per 16 MiB range"
    assert sum(s[0] for s in summaries) == direct_count, "as many lines as a direct read"
    assert sum(s[1] for s in summaries) == direct_crc, "the same lines as a direct read"
    assert summaries[0][2] == 0 and summaries[-1][3] == direct_count - 1
    for before, after in zip(summaries, summaries[1:]):
        assert after[2] == before[3] + 1, "ranges meet without a gap or an overlap"
    assert stream.metrics()["bytes_read"] == size, "each byte read once (the tail of a range's last line is its own)"
