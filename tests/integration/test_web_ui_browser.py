"""The web UI in a real headless Chromium (Debian's package, /usr/bin/chromium)
driven by Playwright, over a running job with a direct Kafka stream on a real
broker. Each page's screenshot is written to docs/screenshots/.

Without the browser or Playwright the tests are skipped saying what to install
(`make services-deps` installs Chromium), except with CI=true, where they fail.
Playwright never downloads a browser here: it is given Debian's executable.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from ingest import StreamingContext
from ingest.testing.kafka import create_topic, produce, read_to_end
from ingest.testing.plugin import skip_or_fail

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SECRET = "hunter2-never-shown"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium, "
                     "or `make services-deps`)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright is not installed: pip install 'ingest[test]' (or pip install playwright); "
                     "no browser download is needed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    offsite: list[str] = []
    page.on("request", lambda req: None if req.url.startswith("http://127.0.0.1:") else offsite.append(req.url))
    yield page
    context.close()
    assert offsite == [], "the UI must fetch nothing from elsewhere"


def shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class Producer:
    """Produces keyed records to the topic until stopped, a few per 100 ms."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-producer")
        self.sent = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            n = 7 + self.sent % 5
            produce(self.bootstrap, self.topic, [(f"k{(self.sent + i) % 13}".encode(), f"v{self.sent + i}".encode())
                                                 for i in range(n)])
            self.sent += n
            self._stop.wait(0.1)

    def __enter__(self) -> "Producer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def kafka_job(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[StreamingContext, str, dict[int, list[Any]]]]:
    topic = f"ui-{uuid.uuid4().hex[:10]}"
    create_topic(kafka_bootstrap, topic, 2)
    seen: dict[int, list[Any]] = {}
    ssc = StreamingContext(0.5, ui_port=0, stop_on_signal=False, log_batches=False)
    ssc.checkpoint(str(tmp_path / "ckpt"))
    # At most 20 records a batch, fewer than are produced: the stream falls behind and shows a lag.
    stream = ssc.stream("kafka_direct_stream", topics=[topic], name="events", max_records_per_batch=20, kafka_params={
        "bootstrap.servers": kafka_bootstrap, "group.id": f"ui-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest", "sasl.username": "ui-user", "sasl.password": SECRET})
    stream.foreach_batch(lambda b: seen.__setitem__(b.time, [(r.partition, r.offset, r.key, r.value)
                                                                for r in b.collect()]), name="keep")
    per_key = stream.map(lambda r: (r.key.decode(), 1))
    per_key.update_state_by_key(lambda new, old: (old or 0) + sum(new), name="per-key") \
        .foreach_batch(lambda b: None, name="counts")
    with Producer(kafka_bootstrap, topic):
        ssc.start()
        try:
            yield ssc, topic, seen
        finally:
            ssc.stop(graceful=False, timeout=10)


def test_a_running_kafka_job_in_the_browser(page, kafka_job, kafka_bootstrap):
    ssc, topic, seen = kafka_job
    url = ssc.ui_url
    page.goto(url)
    page.evaluate("window.__notReloaded = true")
    counter = page.locator("#batches-completed")
    first = int(counter.inner_text().replace(",", ""))
    # The count grows while the page stays loaded: live updates through the JSON API.
    # (Polled from here: the page's Content-Security-Policy forbids the evaluated scripts of wait_for_function.)
    deadline = time.monotonic() + 20
    while int(counter.inner_text().replace(",", "")) < first + 4:
        assert time.monotonic() < deadline, "the batch count did not grow on the page"
        page.wait_for_timeout(200)
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#job-state").inner_text() == "running"
    page.wait_for_timeout(1500)
    shoot(page, "overview")

    page.click("header nav >> text=Batches")
    page.wait_for_selector("#completed-batches")
    shoot(page, "batches")
    # The newest batch that read records from both partitions.
    batch = next(t for t in sorted(seen, reverse=True) if len({p for p, *_ in seen[t]}) == 2)
    page.goto(f"{url}batches/{batch}")
    rows = page.locator("table.position-kafka tbody tr")
    ranges = [[c.strip().replace(",", "") for c in rows.nth(i).locator("td").all_inner_texts()]
              for i in range(rows.count())]
    assert [r[0] for r in ranges] == [topic, topic] and sorted(int(r[1]) for r in ranges) == [0, 1]
    assert page.locator("table.ops").inner_text().count("succeeded") == 2
    shoot(page, "batch")
    # The ranges shown are the records the batch read, checked against the topic itself.
    in_topic = read_to_end(kafka_bootstrap, topic)
    for _topic, partition, start, until, count in ranges:
        partition, start, until = int(partition), int(start), int(until)
        expected = [(r.partition, r.offset, r.key, r.value) for r in in_topic
                    if r.partition == partition and start <= r.offset < until]
        assert len(expected) == until - start == int(count) > 0
        assert [s for s in seen[batch] if s[0] == partition] == expected

    page.click("header nav >> text=Inputs")
    page.wait_for_selector("table.partitions")
    lag = page.locator("table.partitions tbody tr")
    assert lag.count() == 2
    for i in range(2):
        _t, _p, _range, next_offset, latest, behind, _age = [
            c.replace(",", "") for c in lag.nth(i).locator("td").all_inner_texts()]
        assert int(behind) == int(latest) - int(next_offset) >= 0
    shoot(page, "inputs")
    page.click("header nav >> text=Checkpoint")
    page.wait_for_selector("table.state-sizes")
    assert "per-key" in page.locator("table.state-sizes").inner_text()
    shoot(page, "checkpoint")

    # No page and no API answer shows the stream's secrets.
    for path in ("", "batches", f"batches/{batch}", "inputs", "checkpoint", "api/v1/status", "api/v1/batches",
                 f"api/v1/batches/{batch}", "api/v1/inputs", "api/v1/receivers", "api/v1/checkpoint"):
        body = page.request.get(url + path).text()
        assert SECRET not in body and "sasl" not in body, path


def test_a_failed_job_in_the_browser_shows_its_error_and_traceback(page):
    ssc = StreamingContext(0.2, ui_port=0, stop_on_signal=False, log_batches=False)

    def write(batch):
        if batch.count() > 2:
            raise ConnectionError("the warehouse closed the connection")

    ssc.queue_stream([[1], [1, 2], [1, 2, 3]]).foreach_batch(write, name="warehouse")
    ssc.start()
    try:
        with pytest.raises(Exception, match="warehouse closed"):
            ssc.await_termination(20)
        page.goto(ssc.ui_url)
        assert page.locator("#job-state").inner_text() == "failed"
        assert "the warehouse closed the connection" in page.locator("#job-error").inner_text()
        shoot(page, "failed-overview")
        page.goto(ssc.ui_url + "batches")
        page.locator("#failed-batches a").first.click()
        page.locator("details summary").first.click()
        assert "in write" in page.locator("details pre").first.inner_text()
        shoot(page, "failed-batch")
    finally:
        ssc.close_ui()


def test_every_page_works_with_javascript_off(browser):
    ssc = StreamingContext(0.1, ui_port=0, stop_on_signal=False, log_batches=False)
    sizes: dict[int, int] = {}
    ssc.queue_stream([[i] * (i + 1) for i in range(20)], name="numbers") \
        .foreach_batch(lambda b: sizes.__setitem__(b.time, b.count()), name="sizes")
    ssc.start()
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        deadline = time.monotonic() + 20
        while 20 not in sizes.values():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        page.goto(ssc.ui_url)
        shown = int(page.locator("#batches-completed").inner_text())
        assert shown >= 20
        points = page.locator("#timeline-input_rate polyline").get_attribute("points")
        assert len(points.split()) == shown
        page.click("header nav >> text=Batches")
        biggest = next(t for t, n in sizes.items() if n == 20)
        page.click(f'#completed-batches a[href="/batches/{biggest}"]')
        assert "Input numbers: 20 records" in page.locator("main").inner_text()
        for link in ("Inputs", "Checkpoint", "Overview"):
            page.click(f"header nav >> text={link}")
            assert page.locator("h1").inner_text()
    finally:
        context.close()
        ssc.stop(graceful=False)
