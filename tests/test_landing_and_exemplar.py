"""The operators' view end to end: jobs that fail in the simulator show up on the exporter's
`/` page (per target, newest 50, every column) and as the failure counter's exemplar in the
OpenMetrics output, through the real poller and HTTP server. Time runs under freezegun."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pytest
import requests
from freezegun import freeze_time
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
HEADER = (
    "<tr><th>Time (UTC)</th><th>Queue</th><th>Tag</th><th>JobId</th><th>Code</th>"
    "<th>Message</th></tr>"
)


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

    alpha, beta = site.section(ALPHA), site.section(BETA)

    for section in (alpha, beta):
        assert HEADER in section
    rows = {
        transcode: (alpha, site.alpha, site.alpha_queue, "transcode-main", "media"),
        snapshot: (alpha, site.alpha, site.alpha_queue, "transcode-main", "media"),
        translation: (beta, site.beta, site.beta_queue, "ai-main", "ai"),
    }
    for job_id, (section, ci, queue, name, service) in rows.items():
        job = ci.job(job_id)
        assert job.end_time is not None
        row = (
            f"<tr><td>{iso(job.end_time)}</td><td>{name} ({service}/{queue})</td>"
            f"<td>{job.tag}</td><td>{job_id}</td><td>{job.code}</td>"
            f"<td>{html.escape(job.message)}</td></tr>"
        )
        assert row in section, row
    # Each target lists only its own failures, newest first.
    assert translation not in alpha
    assert transcode not in beta and snapshot not in beta
    assert alpha.index(snapshot) < alpha.index(transcode)


def test_landing_page_keeps_the_latest_50_failed_jobs_of_a_target(site: Site) -> None:
    jobs = []
    for index in range(60):
        jobs.append(fail(site.alpha, site.alpha_queue, "Transcode", f"E{index % 3}", "broken"))
        site.frozen.tick(1)
    other = fail(site.beta, site.beta_queue, "Translation", "InternalError", "retry later")
    site.poll()

    alpha = site.section(ALPHA)

    shown = [job for job in jobs if f"<td>{job}</td>" in alpha]
    assert shown == jobs[10:]
    listed = re.findall(r"<td>(j[0-9a-f]{32})</td>", alpha)
    assert listed == list(reversed(jobs[10:]))
    # Another target's failures neither count towards nor push out this one's 50.
    assert f"<td>{other}</td>" in site.section(BETA)


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
