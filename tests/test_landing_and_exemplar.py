"""The operators' view end to end: jobs that fail in the simulator show up on the exporter's
`/` page (per target: failures by code, then the newest 50 with every column) and as the failure
counter's exemplar in the OpenMetrics output, through the real poller and HTTP server. Time runs
under freezegun. (tests/test_landing_browser.py reads the page in a real browser.)"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from freezegun import freeze_time
from lxml import html as lxml_html
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser

from exporter.api_stats import ApiStats
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.exposition import exporter_expositions
from exporter.poller import Poller
from exporter.server import ExporterServer
from exporter.simulator import Simulator
from exporter.simulator.model import SimBucket

SECRET_ID = "AKIDlanding00000000000000000000000000"
SECRET_KEY = "landing-secret-key-00000000000000000"
ALPHA = "alpha-1250000000"
BETA = "beta-1250000001"
TIMEOUT = 5.0
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
parse_openmetrics: Callable[[str], Iterator[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)
RECENT_HEADER = ["Time (UTC)", "Queue", "Tag", "JobId", "Code", "Message"]
Rows = list[list[str]]


@dataclass
class Site:
    sim: Simulator
    alpha: SimBucket
    beta: SimBucket
    alpha_queue: str
    beta_queue: str
    poller: Poller
    url: str
    frozen: Any

    def poll(self) -> None:
        self.frozen.tick(60)
        self.poller.poll_once()

    def page(self) -> str:
        response = requests.get(f"{self.url}/", timeout=TIMEOUT)
        assert response.status_code == 200
        return response.text

    def section(self, bucket: str) -> str:
        """The part of the page about one target."""
        page = self.page()
        start = page.index(f"<h2>{bucket} (")
        end = page.find("<h2>", start + 1)
        return page[start : end if end != -1 else len(page)]

    def table(self, bucket: str, css: str) -> Rows:
        """One table of a target's section ("codes", "recent", ...), as the text of its cells;
        its header row first."""
        section = lxml_html.fromstring(self.section(bucket))
        (table,) = section.find_class(css)
        return [
            [cell.text_content() for cell in row.xpath("./th|./td")] for row in table.iter("tr")
        ]

    def exemplars(self) -> dict[tuple[str, str, str], str | None]:
        """(bucket, tag, code) -> the job_id of the failure counter's exemplar, or None."""
        response = requests.get(
            f"{self.url}/metrics", headers={"Accept": OPENMETRICS}, timeout=TIMEOUT
        )
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        found: dict[tuple[str, str, str], str | None] = {}
        for family in parse_openmetrics(response.text):
            if family.name != "tencent_ci_job_failures":
                continue
            for sample in family.samples:
                key = (sample.labels["bucket"], sample.labels["tag"], sample.labels["code"])
                found[key] = sample.exemplar.labels["job_id"] if sample.exemplar else None
        return found


def fail(ci: SimBucket, queue: str, tag: str, code: str, message: str) -> str:
    job = ci.create_job(queue, tag)
    ci.start_job(job)
    ci.finish_job(job, "Failed", code=code, message=message)
    return job


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds")


@pytest.fixture
def site() -> Iterator[Site]:
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen:
        sim = Simulator({SECRET_ID: SECRET_KEY}, seed=3)
        alpha = sim.add_bucket(ALPHA, "ap-guangzhou")
        beta = sim.add_bucket(BETA, "ap-shanghai")
        alpha_queue = alpha.add_queue("media", name="transcode-main")
        beta_queue = beta.add_queue("ai", name="ai-main")
        sim.start()
        credentials = Credentials(SECRET_ID, SECRET_KEY)
        config = Config(
            targets=(
                TargetConfig(
                    ALPHA,
                    "ap-guangzhou",
                    sim.endpoint(ALPHA),
                    credentials,
                    (ServiceConfig("media", ("Transcode", "Snapshot")),),
                ),
                TargetConfig(
                    BETA,
                    "ap-shanghai",
                    sim.endpoint(BETA),
                    credentials,
                    (ServiceConfig("ai", ("Translation",)),),
                ),
            ),
            poll_interval=60,
            request_timeout=2.0,
            idle_tag_backoff=0.0,  # every stream every poll: the tests poll few times
        )
        stats = ApiStats()
        poller = Poller(config, stats)
        metrics = exporter_expositions(poller, stats, "test")
        server = ExporterServer(("127.0.0.1", 0), poller, metrics, version="test")
        server.start()
        try:
            poller.poll_once()  # the baseline: counting starts here
            yield Site(
                sim,
                alpha,
                beta,
                alpha_queue,
                beta_queue,
                poller,
                f"http://127.0.0.1:{server.port}",
                frozen,
            )
        finally:
            server.stop()
            poller.stop()
            sim.stop()


def test_landing_page_lists_each_targets_failed_jobs_with_every_column(site: Site) -> None:
    transcode = fail(site.alpha, site.alpha_queue, "Transcode", "InputFileNotExist", "no <input>")
    site.frozen.tick(5)
    snapshot = fail(site.alpha, site.alpha_queue, "Snapshot", "TemplateNotExist", "no template")
    translation = fail(site.beta, site.beta_queue, "Translation", "InternalError", "retry later")
    site.poll()

    rows = {
        transcode: (ALPHA, site.alpha, site.alpha_queue, "transcode-main", "media"),
        snapshot: (ALPHA, site.alpha, site.alpha_queue, "transcode-main", "media"),
        translation: (BETA, site.beta, site.beta_queue, "ai-main", "ai"),
    }
    for job_id, (bucket, ci, queue, name, service) in rows.items():
        job = ci.job(job_id)
        assert job.end_time is not None
        row = [iso(job.end_time), f"{name} ({service}/{queue})", job.tag, job_id, job.code]
        assert [*row, job.message] in site.table(bucket, "recent"), row
    # The raw page has CI's message escaped, and the time may wrap after the date.
    assert "<td>no &lt;input&gt;</td>" in site.section(ALPHA)
    assert re.search(r"<td>\d{4}-\d\d-\d\dT<wbr>\d\d:\d\d:\d\d\+00:00</td>", site.page())
    # Each target lists only its own failures, newest first.
    alpha, beta = site.table(ALPHA, "recent"), site.table(BETA, "recent")
    assert alpha[0] == beta[0] == RECENT_HEADER
    assert [row[3] for row in alpha[1:]] == [snapshot, transcode]
    assert [row[3] for row in beta[1:]] == [translation]


def test_landing_page_groups_each_queues_failures_by_code(site: Site) -> None:
    first = fail(site.alpha, site.alpha_queue, "Transcode", "InputFileNotExist", "gone <1>")
    site.frozen.tick(5)
    latest = fail(site.alpha, site.alpha_queue, "Snapshot", "InputFileNotExist", "gone <2>")
    other = fail(site.alpha, site.alpha_queue, "Transcode", "InternalError", "retry later")
    site.poll()

    codes = site.table(ALPHA, "codes")
    queue = f"transcode-main (media/{site.alpha_queue})"
    assert codes[0][:4] == ["Queue", "Code", "Failures since start", "Latest JobId"]
    assert [row[:4] for row in codes[1:]] == [
        [queue, "InputFileNotExist", "2", latest],  # both tags of the queue, the newest
        [queue, "InternalError", "1", other],
    ]
    assert codes[1][5] == "gone <2>"
    assert all(first not in row for row in codes)  # an older one of its code
    assert first in [row[3] for row in site.table(ALPHA, "recent")]
    assert "No failed jobs counted since start." in site.section(BETA)


def test_landing_page_keeps_the_latest_50_failed_jobs_of_a_target(site: Site) -> None:
    jobs = []
    for index in range(60):
        jobs.append(fail(site.alpha, site.alpha_queue, "Transcode", f"E{index % 3}", "broken"))
        site.frozen.tick(1)
    other = fail(site.beta, site.beta_queue, "Translation", "InternalError", "retry later")
    site.poll()

    listed = [row[3] for row in site.table(ALPHA, "recent")[1:]]
    assert listed == list(reversed(jobs[10:]))
    # Every failure is counted by code, those the list no longer holds too.
    codes = site.table(ALPHA, "codes")[1:]
    assert sorted((row[1], row[2], row[3]) for row in codes) == [
        ("E0", "20", jobs[57]),
        ("E1", "20", jobs[58]),
        ("E2", "20", jobs[59]),
    ]
    # Another target's failures neither count towards nor push out this one's 50.
    assert [row[3] for row in site.table(BETA, "recent")[1:]] == [other]


def test_failure_counter_exemplar_is_the_latest_failed_job(site: Site) -> None:
    first = fail(site.alpha, site.alpha_queue, "Transcode", "InputFileNotExist", "missing")
    site.poll()
    assert site.exemplars()[(ALPHA, "Transcode", "InputFileNotExist")] == first

    site.frozen.tick(5)
    fail(site.alpha, site.alpha_queue, "Transcode", "InvalidInputFile", "bad format")
    site.frozen.tick(5)
    latest = fail(site.alpha, site.alpha_queue, "Transcode", "InternalError", "retry")
    other_stream = fail(site.alpha, site.alpha_queue, "Snapshot", "InputFileNotExist", "gone")
    site.poll()

    exemplars = site.exemplars()
    # One exemplar per stream, on the code of its latest failure; older codes lose theirs.
    assert exemplars[(ALPHA, "Transcode", "InternalError")] == latest
    assert exemplars[(ALPHA, "Transcode", "InputFileNotExist")] is None
    assert exemplars[(ALPHA, "Transcode", "InvalidInputFile")] is None
    assert exemplars[(ALPHA, "Snapshot", "InputFileNotExist")] == other_stream
    assert (BETA, "Translation", "InternalError") not in exemplars


def test_exemplar_is_the_job_that_failed_last_within_one_poll(site: Site) -> None:
    start = site.sim.now()
    long_runner = site.alpha.create_job(site.alpha_queue, "Transcode", at=start)
    site.alpha.start_job(long_runner, at=start)
    quick = site.alpha.create_job(site.alpha_queue, "Transcode", at=start + 10)
    site.alpha.finish_job(quick, "Failed", code="InvalidInputFile", message="bad", at=start + 20)
    site.alpha.finish_job(long_runner, "Failed", code="InternalError", message="x", at=start + 50)
    site.poll()

    exemplars = site.exemplars()
    assert exemplars[(ALPHA, "Transcode", "InternalError")] == long_runner
    assert exemplars[(ALPHA, "Transcode", "InvalidInputFile")] is None
