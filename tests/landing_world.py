"""A small CI estate for the landing page, served by the real poller and HTTP server over the
simulator: a healthy target, a failing one (a noisy queue failing with three codes, a quiet
queue with a hostile message, a paused queue), a throttled one and one whose keys CI refuses.

Time runs (freezegun with tick=True), from a fixed date, so the page's dates are the same on
every run; `tick` jumps ahead between polls as the exporter's schedule would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from freezegun import freeze_time

from exporter import __version__
from exporter.api_stats import ApiStats
from exporter.config import Config, RetryConfig, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.exposition import exporter_expositions
from exporter.poller import Poller
from exporter.server import ExporterServer
from exporter.simulator import Fault, SimBucket, Simulator

SECRET_ID = "AKIDconsole00000000000000000000000000"
SECRET_KEY = "console-secret-key-0000000000000000"
START = "2026-11-21 04:00:00"

HEALTHY = "media-prod-1250000000"
FAILING = "ugc-upload-1250000001"
THROTTLED = "ai-batch-1250000002"
DOWN = "legacy-archive-1250000003"
REGIONS = {  # in the page's order
    FAILING: "ap-shanghai",
    HEALTHY: "ap-guangzhou",
    THROTTLED: "ap-beijing",
    DOWN: "ap-chengdu",
}
SERVICES = {
    HEALTHY: ServiceConfig("media", ("Transcode", "Snapshot")),
    FAILING: ServiceConfig("media", ("Transcode", "Snapshot")),
    THROTTLED: ServiceConfig("ai", ("Translation",)),
    DOWN: ServiceConfig("media", ("Transcode",)),
}
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"> template gone & <b>lost</b>"
# The failing target's noisy queue: code -> failures (newest code last).
NOISY_CODES = {"InputFileNotExist": 24, "InvalidInputFile": 12, "InternalError": 4}


@dataclass
class Console:
    """What the tests look at: the simulator's record of each interesting job, and the URL."""

    sim: Simulator
    poller: Poller
    url: str
    frozen: Any
    noisy_latest: dict[str, str] = field(default_factory=dict)  # code -> latest JobId
    quiet_jobs: list[str] = field(default_factory=list)

    def bucket(self, name: str) -> SimBucket:
        return self.sim.bucket(name)

    def poll(self) -> None:
        self.frozen.tick(60)
        self.poller.poll_once()


def _config(sim: Simulator) -> Config:
    credentials = Credentials(SECRET_ID, SECRET_KEY)
    targets = tuple(
        TargetConfig(name, REGIONS[name], sim.endpoint(name), credentials, (SERVICES[name],))
        for name in REGIONS
    )
    return Config(
        targets=targets,
        poll_interval=60,
        request_timeout=2.0,
        idle_tag_backoff=0.0,
        retry=RetryConfig(attempts=3, initial_backoff=0.05, max_backoff=0.1),
    )


def _jobs(ci: SimBucket, queue: str, tag: str, *, running: int, waiting: int, done: int) -> None:
    for _ in range(done):
        ci.finish_job(ci.create_job(queue, tag), "Success")
    for _ in range(running):
        ci.start_job(ci.create_job(queue, tag))
    for _ in range(waiting):
        ci.create_job(queue, tag)


def _fail(ci: SimBucket, queue: str, tag: str, code: str, message: str) -> str:
    job = ci.create_job(queue, tag)
    ci.start_job(job)
    ci.finish_job(job, "Failed", code=code, message=message)
    return job


def _healthy(ci: SimBucket, frozen: Any) -> None:
    main = ci.add_queue("media", name="transcode-main", max_concurrent=10)
    fast = ci.add_queue("media", name="snapshot-fast", max_concurrent=5)
    _jobs(ci, main, "Transcode", running=0, waiting=3, done=0)
    frozen.tick(30)
    _jobs(ci, main, "Transcode", running=4, waiting=0, done=20)
    _jobs(ci, fast, "Snapshot", running=1, waiting=0, done=8)


def _failing(ci: SimBucket, console: Console) -> None:
    noisy = ci.add_queue("media", name="ugc-transcode", max_concurrent=8)
    quiet = ci.add_queue("media", name="ugc-snapshot", max_concurrent=4)
    archive = ci.add_queue("media", name="ugc-archive", max_concurrent=2)
    _jobs(ci, archive, "Transcode", running=0, waiting=4, done=0)
    ci.set_queue_paused(archive, True)
    for code, count in NOISY_CODES.items():
        for index in range(count):
            message = f"{code}: input {index} of the upload batch"
            console.noisy_latest[code] = _fail(ci, noisy, "Transcode", code, message)
            console.frozen.tick(1)
    for _ in range(2):
        console.quiet_jobs.append(_fail(ci, quiet, "Snapshot", "TemplateNotExist", HOSTILE))
        console.frozen.tick(1)


def _throttled(ci: SimBucket, sim: Simulator) -> None:
    queue = ci.add_queue("ai", name="translate-batch", max_concurrent=4)
    _jobs(ci, queue, "Translation", running=4, waiting=6, done=5)
    # Two answers that say slow down: retried, the poll succeeds, the target paces itself.
    sim.faults.add(Fault("http_503", bucket=THROTTLED, times=2))


@contextmanager
def console_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    with freeze_time(START, tick=True) as frozen:
        sim = Simulator({SECRET_ID: SECRET_KEY}, seed=7)
        buckets = {name: sim.add_bucket(name, region) for name, region in REGIONS.items()}
        buckets[DOWN].add_queue("media", name="legacy-transcode")
        sim.faults.add(Fault("auth", bucket=DOWN))
        sim.start()
        stats = ApiStats()
        poller = Poller(_config(sim), stats)
        server = ExporterServer(
            ("127.0.0.1", 0),
            poller,
            exporter_expositions(poller, stats, __version__),
            version=__version__,
        )
        server.start()
        console = Console(sim, poller, f"http://127.0.0.1:{server.port}", frozen)
        try:
            poller.poll_once()  # the baseline: counting starts here
            _healthy(buckets[HEALTHY], frozen)
            _failing(buckets[FAILING], console)
            _throttled(buckets[THROTTLED], sim)
            console.poll()
            yield console
        finally:
            server.stop()
            poller.stop()
            sim.stop()
