"""The whole exporter against the simulator over real HTTP, time under freezegun: signed client,
exactly-once accounting through a scripted scenario, and what /metrics shows."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.accounting import StreamKey, listing_boundary
from exporter.api_stats import ApiStats
from exporter.ci.client import format_creation_time
from exporter.ci.models import Queue
from exporter.ci.services import SERVICES, Service
from exporter.collector import CICollector
from exporter.config import Config, RateLimitConfig, RetryConfig, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poll.schedule import IDLE_AFTER, idle_delay, idle_phase
from exporter.poll.streams import RETIRED_FOR
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator
from exporter.simulator.model import SimBucket
from exporter.simulator.records import Clock

SECRET_ID = "AKIDscenario000000000000000000000000"
SECRET_KEY = "scenario-secret-key-0000000000000000"
BUCKET = "scenario-1250000000"
REGION = "ap-chongqing"
INTERVAL = 60


@dataclass
class World:
    sim: Simulator
    ci: SimBucket
    poller: Poller
    frozen: Any
    registry: CollectorRegistry
    queue: str  # a media Transcoding queue
    ai_queue: str

    def poll(self, seconds: float = INTERVAL) -> None:
        self.frozen.tick(seconds)
        self.poller.poll_once()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = generate_latest(self.registry).decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        wanted = set(labels.items())
        found = [v for (n, ls), v in self.metrics().items() if n == name and wanted <= ls]
        assert len(found) <= 1, f"{name} {labels} matches {len(found)} series"
        return found[0] if found else None

    def finished(
        self, state: str, queue: str | None = None, tag: str = "Transcode"
    ) -> float | None:
        return self.value(
            "tencent_ci_jobs_finished_total", queue_id=queue or self.queue, tag=tag, state=state
        )

    def up(self) -> float | None:
        return self.value("tencent_ci_up", bucket=BUCKET)

    def hide_queue(self, queue_id: str | None) -> None:
        """Make CI's queue listings leave out a queue (a listing glitch); None ends it."""
        client = self.poller.targets[0].client
        client.__dict__.pop("list_queues", None)
        if queue_id is None:
            return
        real_listing = client.list_queues

        def glitch(service: Service) -> list[Queue]:
            return [q for q in real_listing(service) if q.queue_id != queue_id]

        client.list_queues = glitch  # type: ignore[method-assign]

    def finished_listing_starts(self, queue_id: str) -> list[str]:
        """The startCreationTime of every job listing of that queue since the last reset."""
        return [
            r.params["startCreationTime"]
            for r in self.sim.requests
            if r.params.get("queueId") == queue_id and "startCreationTime" in r.params
        ]


@contextmanager
def make_world(
    frozen: Any,
    *,
    bounds: str = "exclusive",
    code_limit: int = 50,
    timeout: float = 2.0,
    offset: float = 0.0,
    idle_tag_backoff: float = 600.0,
    concurrency: int = 4,
) -> Iterator[World]:
    sim = Simulator({SECRET_ID: SECRET_KEY}, creation_bounds=bounds, seed=7)
    sim.clock_offset = offset
    ci = sim.add_bucket(BUCKET, REGION)
    queue = ci.add_queue("media", name="transcode-main")
    ai_queue = ci.add_queue("ai", name="ai-main")
    sim.start()
    target = TargetConfig(
        bucket=BUCKET,
        region=REGION,
        endpoint=sim.endpoint(BUCKET),
        credentials=Credentials(SECRET_ID, SECRET_KEY),
        services=(
            ServiceConfig("media", ("Transcode", "VoiceSeparate")),
            ServiceConfig("ai", ("Translation",)),
        ),
    )
    config = Config(
        targets=(target,),
        poll_interval=INTERVAL,
        request_timeout=timeout,
        failure_code_limit=code_limit,
        # The accounting must hold with streams polled side by side and idle ones spaced out.
        idle_tag_backoff=idle_tag_backoff,
        rate_limit=RateLimitConfig(requests_per_second=1000, burst=1000, concurrency=concurrency),
        # A failed call fails the poll at once: retries are tests/test_faults.py's subject.
        retry=RetryConfig(attempts=1),
    )
    stats = ApiStats()

    # CI's own default page size, so that a dozen queues take two pages.
    poller = Poller(config, stats, queue_page_size=10)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(poller, stats, "test"))
    try:
        yield World(sim, ci, poller, frozen, registry, queue, ai_queue)
    finally:
        poller.stop()
        sim.stop()


@pytest.fixture
def frozen() -> Iterator[Any]:
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen_time:
        yield frozen_time


@pytest.fixture
def world(frozen: Any) -> Iterator[World]:
    with make_world(frozen) as w:
        yield w


def run_job(ci: SimBucket, queue: str, tag: str, state: str = "Success", code: str = "") -> str:
    """A job created, started and finished at once (between two polls)."""
    job = ci.create_job(queue, tag)
    ci.start_job(job)
    if state == "Failed":
        ci.finish_job(job, state, code=code or "InternalError", message="it broke")
    else:
        ci.finish_job(job, state)
    return job


@pytest.mark.parametrize("bounds", ["exclusive", "inclusive"])
def test_scripted_scenario_counts_every_job_exactly_once(frozen: Any, bounds: str) -> None:
    with make_world(frozen, bounds=bounds) as w:
        sim = w.sim
        ci, q = w.ci, w.queue
        # Baseline: finished before the exporter started, never counted.
        for _ in range(3):
            run_job(ci, q, "Transcode")
        run_job(ci, q, "Transcode", "Failed", "E_OLD")
        long_runner = ci.create_job(q, "Transcode")
        ci.start_job(long_runner)
        waiting = ci.create_job(q, "Transcode")
        frozen.tick(30)
        # Created in the very second the next window will start from (the baseline listing's
        # start less the margin): one finished before the exporter started, one still running.
        edge = listing_boundary(sim.now(), 0.0, 30.0)
        edge_done = ci.create_job(q, "Transcode", at=edge)
        ci.start_job(edge_done, at=edge)
        ci.finish_job(edge_done, "Success", at=edge + 1)
        edge_running = ci.create_job(q, "Transcode", at=edge)
        ci.start_job(edge_running, at=edge)
        # Finished just before the start, in the queue's second stream: baseline there too.
        late = ci.create_job(q, "VoiceSeparate", at=edge + 2)
        ci.finish_job(late, "Failed", code="E_BASELINE", at=edge + 3)
        w.poller.poll_once()
        stream = w.poller.targets[0].streams.trackers[StreamKey("media", q, "Transcode")]
        assert stream.window_start == edge
        assert w.up() == 1
        for state in ("Success", "Failed", "Cancel"):
            assert w.finished(state) == 0
        assert w.value("tencent_ci_jobs", queue_id=q, tag="Transcode", state="Running") == 2
        assert w.value("tencent_ci_jobs", queue_id=q, tag="Transcode", state="Submitted") == 1
        assert w.value("tencent_ci_jobs", queue_id=q, tag="Transcode", state="Pause") == 0

        # Between polls: the seen jobs finish, new ones come and go, one in the first second.
        frozen.tick(1)
        edge_job = run_job(ci, q, "Transcode", "Failed", "E_EDGE")
        frozen.tick(20)
        ci.finish_job(long_runner, "Success")
        ci.finish_job(edge_running, "Success")
        ci.start_job(waiting)
        ci.finish_job(waiting, "Cancel")
        run_job(ci, q, "Transcode")
        run_job(ci, w.ai_queue, "Translation", "Failed", "TranslateError")
        w.poll(39)
        assert (w.finished("Success"), w.finished("Failed"), w.finished("Cancel")) == (3, 1, 1)
        assert w.finished("Failed", w.ai_queue, "Translation") == 1
        assert w.finished("Failed", q, "VoiceSeparate") == 0
        assert w.value("tencent_ci_job_failures_total", queue_id=q, code="E_EDGE") == 1
        assert w.value("tencent_ci_job_failures_total", code="E_OLD") is None
        assert w.value("tencent_ci_jobs", queue_id=q, tag="Transcode", state="Running") == 0

        # Nothing new: counters hold still, however often we poll.
        for _ in range(3):
            w.poll()
        assert (w.finished("Success"), w.finished("Failed"), w.finished("Cancel")) == (3, 1, 1)
        assert ci.job(edge_job).state == "Failed"


@pytest.mark.parametrize("offset", [20.0, -20.0])
def test_ci_clock_ahead_or_behind(frozen: Any, offset: float) -> None:
    with make_world(frozen, offset=offset) as w:
        w.poller.poll_once()
        for i in range(5):
            frozen.tick(7)
            run_job(w.ci, w.queue, "Transcode", "Failed" if i % 2 else "Success", "E1")
        w.poll(25)
        w.poll()
        assert (w.finished("Success"), w.finished("Failed")) == (3, 2)
        assert w.poller.targets[0].client.clock_offset == pytest.approx(offset, abs=1.5)


def test_outage_of_several_polls_loses_nothing_and_counts_nothing_twice(frozen: Any) -> None:
    with make_world(frozen, timeout=0.3) as w:
        sim = w.sim
        ci, q = w.ci, w.queue
        runner = ci.create_job(q, "Transcode")
        ci.start_job(runner)
        w.poller.poll_once()
        run_job(ci, q, "Transcode")
        w.poll()
        assert w.finished("Success") == 1
        expected = {"Success": 1, "Failed": 0, "Cancel": 0}
        outages = [
            Fault("http_500"),
            Fault("http_503"),
            Fault("slow", delay=1.0, path="/jobs"),
            Fault("malformed", path="/jobs"),
            Fault("reset", path="/jobs"),
        ]
        for fault in outages:
            sim.faults.add(fault)
            for i in range(3):
                run_job(ci, q, "Transcode", "Failed" if i == 0 else "Success", f"E_{fault.kind}")
                expected["Failed" if i == 0 else "Success"] += 1
            w.poll()
            assert w.up() == 0, fault.kind
            sim.faults.clear()
        ci.finish_job(runner, "Success")
        expected["Success"] += 1
        errors = {
            labels: v
            for (name, labels), v in w.metrics().items()
            if name == "tencent_ci_api_errors_total"
        }
        kinds = {dict(labels)["error"] for labels in errors}
        assert {"InternalError", "SlowDown", "timeout", "invalid_response", "connection"} <= kinds
        w.poll()
        assert w.up() == 1
        w.poll()
        got = {s: w.finished(s) for s in expected}
        assert got == expected
        assert w.value("tencent_ci_last_successful_poll_timestamp_seconds") == pytest.approx(
            sim.now() - sim.clock_offset, abs=2
        )


def test_failure_code_cap(frozen: Any) -> None:
    with make_world(frozen, code_limit=2) as w:
        w.poller.poll_once()
        for code in ("A1", "A2", "A3", "A4", "A1"):
            frozen.tick(1)  # listed oldest first: the first two codes keep their labels
            run_job(w.ci, w.queue, "Transcode", "Failed", code)
        w.poll()
        failures = {
            dict(labels)["code"]: v
            for (name, labels), v in w.metrics().items()
            if name == "tencent_ci_job_failures_total"
        }
        assert failures == {"A1": 2, "A2": 1, "other": 2}


def test_queue_that_disappears_leaves_metrics(world: World) -> None:
    doomed = world.ci.add_queue("media", name="doomed")
    world.poller.poll_once()
    assert world.value("tencent_ci_queue_info", queue_id=doomed) == 1
    assert world.value("tencent_ci_jobs", queue_id=doomed, tag="Transcode", state="Running") == 0
    world.ci.remove_queue(doomed)
    world.poll()
    assert world.value("tencent_ci_queue_info", queue_id=doomed) is None
    assert not [k for k in world.metrics() if ("queue_id", doomed) in k[1]]
    assert world.up() == 1


def test_queue_created_after_start_counts_its_first_jobs(world: World) -> None:
    world.poller.poll_once()
    frozen_later = world.ci.add_queue("media", name="new-queue")
    run_job(world.ci, frozen_later, "Transcode")
    world.poll()
    assert world.finished("Success", frozen_later) == 1


def test_pagination_of_many_jobs_and_queues(world: World) -> None:
    for i in range(11):
        world.ci.add_queue(
            "media", name=f"extra-{i}", category="SpeedTranscoding" if i % 2 else None
        )
    running = [world.ci.create_job(world.queue, "Transcode") for _ in range(130)]
    for job in running[:110]:
        world.ci.start_job(job)
    world.poller.poll_once()
    assert (
        world.value("tencent_ci_jobs", queue_id=world.queue, tag="Transcode", state="Running")
        == 110
    )
    assert (
        world.value("tencent_ci_jobs", queue_id=world.queue, tag="Transcode", state="Submitted")
        == 20
    )
    infos = [dict(ls) for (n, ls), _ in world.metrics().items() if n == "tencent_ci_queue_info"]
    assert len([i for i in infos if i["service"] == "media"]) == 12
    assert {"Transcoding", "SpeedTranscoding"} <= {i["category"] for i in infos}
    queue_pages = [r for r in world.sim.requests if r.path == "/queue"]
    assert [r.params.get("pageNumber") for r in queue_pages] == ["1", "2"]
    # 130 active jobs take two pages; then 150 jobs finish between polls: two pages more.
    for job in running:
        world.ci.finish_job(job, "Success")
    for _ in range(20):
        run_job(world.ci, world.queue, "Transcode")
    world.sim.reset_requests()
    world.poll()
    assert world.finished("Success") == 150
    jobs_calls = world.sim.request_count(BUCKET, "/jobs")
    # Per poll: Transcode (1 active page + 2 finished pages) + VoiceSeparate and the 11 extra
    # queues' two streams each, 1 + 1, + the ai stream 1 + 1; no describe-by-id was needed.
    assert jobs_calls == 3 + 2 * (1 + 11 * 2) + 2


def test_every_metric_family_is_served(world: World) -> None:
    world.ci.add_queue("media", name="paused", paused=True)
    world.poller.poll_once()
    run_job(world.ci, world.queue, "Transcode", "Failed", "E1")
    world.frozen.tick(1)
    newest = run_job(world.ci, world.ai_queue, "Translation", "Failed", "E2")
    waiting = world.ci.create_job(world.queue, "Transcode")
    started = world.ci.create_job(world.queue, "Transcode")
    world.ci.start_job(started)
    world.poll()
    names = {name for name, _ in world.metrics()}
    for family in (
        "tencent_ci_queue_info",
        "tencent_ci_queue_paused",
        "tencent_ci_queue_max_concurrent",
        "tencent_ci_queue_max_size",
        "tencent_ci_queue_notify_enabled",
        "tencent_ci_jobs",
        "tencent_ci_jobs_finished_total",
        "tencent_ci_job_failures_total",
        "tencent_ci_job_run_duration_seconds_bucket",
        "tencent_ci_job_queue_wait_seconds_bucket",
        "tencent_ci_oldest_job_timestamp_seconds",
        "tencent_ci_up",
        "tencent_ci_last_successful_poll_timestamp_seconds",
        "tencent_ci_poll_duration_seconds",
        "tencent_ci_api_requests_total",
        "tencent_ci_api_request_duration_seconds_bucket",
        "tencent_ci_tracked_jobs",
        "tencent_ci_exporter_build_info",
    ):
        assert family in names, family
    assert world.value("tencent_ci_queue_paused", queue_id=world.queue) == 0
    recent = world.poller.snapshot().targets[0].recent_failures
    assert [(f.job_id, f.code, f.tag) for f in recent][:1] == [(newest, "E2", "Translation")]
    assert [f.code for f in recent] == ["E2", "E1"]
    assert (
        world.value(
            "tencent_ci_oldest_job_timestamp_seconds",
            queue_id=world.queue,
            tag="Transcode",
            state="Submitted",
        )
        == world.ci.job(waiting).creation_time
    )
    # The two active jobs; the failed one was created before the next window's edge, so no
    # later listing can return it and it is already forgotten.
    assert world.value("tencent_ci_tracked_jobs") == 2
    services = {
        dict(ls)["service"]
        for (n, ls), _ in world.metrics().items()
        if n == "tencent_ci_queue_info"
    }
    assert services == {"media", "ai"}
    assert set(SERVICES) >= services


def test_queue_missing_from_one_listing_is_neither_recounted_nor_lost(world: World) -> None:
    flaky = world.ci.add_queue("media", name="flaky")
    world.poller.poll_once()
    first_job_created = world.ci.job(run_job(world.ci, flaky, "Transcode")).creation_time
    world.poll()
    assert world.finished("Success", flaky) == 1
    world.hide_queue(flaky)
    run_job(world.ci, flaky, "Transcode")  # finishes while the queue is out of sight
    world.poll()
    assert world.value("tencent_ci_queue_info", queue_id=flaky) is None
    world.hide_queue(None)
    world.sim.reset_requests()
    world.poll()
    world.poll()
    assert world.finished("Success", flaky) == 2
    # It went on from its own window: the history since the start was not listed again.
    starts = world.finished_listing_starts(flaky)
    assert starts and min(starts) > format_creation_time(first_job_created)


def test_a_drained_backlog_costs_pages_not_describes(world: World) -> None:
    """1000 queued jobs, the oldest 300 finish between polls: all created long before the
    window, so none is in the finished listing. Describing them would take 30 calls; a
    listing of finished jobs from the oldest of them takes 3 pages."""
    backlog = [world.ci.create_job(world.queue, "Transcode") for _ in range(1000)]
    world.frozen.tick(600)
    world.poller.poll_once()
    for job in backlog[:300]:
        world.ci.start_job(job)
        world.ci.finish_job(job, "Success")
    world.sim.reset_requests()
    world.poll()
    assert world.finished("Success") == 300
    transcode = [
        r
        for r in world.sim.requests
        if r.params.get("queueId") == world.queue and r.params.get("tag") == "Transcode"
    ]
    describes = [r for r in world.sim.requests if r.path.startswith("/jobs/")]
    # 7 pages of the 700 still active, 1 of newly created finished jobs, 3 (+1) catching up.
    assert len(transcode) <= 12 and not describes
    world.poll()
    assert world.finished("Success") == 300


def test_first_queue_listing_failing_loses_nothing_that_finishes_after_the_start(
    world: World,
) -> None:
    world.sim.faults.add(Fault("http_503", path="/queue", times=1))
    world.poller.poll_once()
    assert world.up() == 0
    world.frozen.tick(45)  # beyond the clock tolerance: these surely finished after the start
    for _ in range(4):
        run_job(world.ci, world.queue, "Transcode")
    world.poll()
    world.poll()
    assert world.up() == 1
    assert world.finished("Success") == 4


def test_job_clock_behind_the_date_header_within_tolerance(world: World) -> None:
    """The Date header comes from CI's front end; the clock stamping jobs may differ."""
    world.ci.clock = Clock(offset=-20)
    world.poller.poll_once()
    world.poll()
    # Created right after that poll began: stamped 20 s before it by the job clock.
    run_job(world.ci, world.queue, "Transcode")
    world.poll()
    world.poll()
    assert world.finished("Success") == 1


def test_queue_back_after_a_long_absence_counts_what_finished_meanwhile(world: World) -> None:
    flaky = world.ci.add_queue("media", name="flaky")
    world.poller.poll_once()
    run_job(world.ci, flaky, "Transcode")
    world.poll()
    target = world.poller.targets[0]
    window = target.streams.trackers[StreamKey("media", flaky, "Transcode")].window_start
    world.hide_queue(flaky)
    world.poll()
    world.poll(RETIRED_FOR + 60)  # retired long enough to be let go
    world.poll(60)
    run_job(world.ci, flaky, "Transcode")  # while it was away
    world.hide_queue(None)
    world.sim.reset_requests()
    world.poll()
    world.poll()
    # A new series: only what finished while it was away, and no listing of its history.
    assert world.finished("Success", flaky) == 1
    starts = world.finished_listing_starts(flaky)
    assert window is not None and min(starts) >= format_creation_time(window - 1)


def test_offset_paging_that_skips_an_active_job_loses_nothing(world: World) -> None:
    """If CI's nextToken counts jobs (an offset), a job that finishes while the active listing
    is paged shifts the pages and one active job is never listed. It must still be counted."""
    world.sim.api.token_mode = "offset"
    world.poller.poll_once()
    world.frozen.tick(300)
    base = int(world.sim.now()) - 250
    jobs = [world.ci.create_job(world.queue, "Transcode", at=base + i) for i in range(150)]
    client = world.poller.targets[0].client
    real_pages = client.iter_job_pages
    race = {"armed": True}

    def racing(service: Service, queue_id: str, tag: str, states: Any, **kw: Any) -> Any:
        for number, page in enumerate(real_pages(service, queue_id, tag, states, **kw)):
            yield page
            if number == 0 and race["armed"] and "Running" in states and tag == "Transcode":
                race["armed"] = False
                world.ci.finish_job(page[0].job_id, "Success")  # the newest job leaves

    client.iter_job_pages = racing  # type: ignore[method-assign]
    world.poller.poll_once()
    skipped = jobs[149 - 100]  # newest first: the 101st, pulled onto page 1 by the shift
    tracker = world.poller.targets[0].streams.trackers[StreamKey("media", world.queue, "Transcode")]
    assert skipped not in tracker.active
    world.ci.finish_job(skipped, "Success")
    world.poll()
    world.poll()
    assert world.finished("Success") == 2


# -- idle tags --------------------------------------------------------------------------------


def stream_requests(w: World, queue_id: str, tag: str) -> int:
    return sum(
        1
        for r in w.sim.requests
        if r.params.get("queueId") == queue_id and r.params.get("tag") == tag
    )


def test_idle_streams_come_due_spread_over_polls() -> None:
    keys = [StreamKey("media", f"q{q}", f"tag{t}") for q in range(10) for t in range(20)]
    phases = Counter(idle_phase(key, 600, 60) for key in keys)
    assert set(phases) == {0, 60, 120}  # a quarter of 10 minutes, in whole intervals
    assert max(phases.values()) < 0.5 * len(keys)
    assert all(idle_phase(key, 120, 60) == 0 for key in keys)  # short delays stay exact


def test_idle_delay_doubles_up_to_the_maximum() -> None:
    delays = [idle_delay(streak, 60, 600) for streak in range(IDLE_AFTER + 6)]
    assert delays[:IDLE_AFTER] == [60] * IDLE_AFTER
    assert delays[IDLE_AFTER:] == [120, 240, 480, 600, 600, 600]
    assert idle_delay(50, 60, 0) == 60  # off
    assert idle_delay(50, 60, 30) == 60  # a maximum under the interval is no back-off


def test_an_idle_tag_is_polled_less_often_and_loses_no_job(frozen: Any) -> None:
    with make_world(frozen) as w:
        q = w.queue
        w.poller.poll_once()
        w.sim.reset_requests()
        polls_of_idle = []
        for _ in range(30):  # 30 minutes; VoiceSeparate stays idle, Transcode is busy
            run_job(w.ci, q, "Transcode")
            before = stream_requests(w, q, "VoiceSeparate")
            w.poll()
            polls_of_idle.append(stream_requests(w, q, "VoiceSeparate") > before)
        # The busy tag: both listings at every poll.
        assert stream_requests(w, q, "Transcode") == 60
        assert w.finished("Success") == 30
        # Idle since the start: polled a minute apart twice, then about 2, 4, 8 and 10 minutes
        # apart (each stream a little earlier than that, by a phase of its own).
        polled_at = [i for i, polled in enumerate(polls_of_idle) if polled]
        gaps = [b - a for a, b in itertools.pairwise(polled_at)]
        assert gaps[0] == 2 and max(gaps) <= 10 and gaps == sorted(gaps)
        assert 4 <= sum(polls_of_idle) <= 7
        assert w.value("tencent_ci_idle_streams", bucket=BUCKET) == 2  # VoiceSeparate, ai

        # Jobs come to the idle tag while it is not polled: counted once, at its next poll.
        skipped = [i for i, polled in enumerate(polls_of_idle) if not polled]
        assert skipped
        for state in ("Success", "Failed", "Success"):
            run_job(w.ci, q, "VoiceSeparate", state, "E_IDLE")
        still_running = w.ci.create_job(q, "VoiceSeparate")
        w.ci.start_job(still_running)
        for _ in range(10):
            w.poll()
        assert w.finished("Success", tag="VoiceSeparate") == 2
        assert w.finished("Failed", tag="VoiceSeparate") == 1
        # Seen a job: back to every poll.
        before = stream_requests(w, q, "VoiceSeparate")
        w.poll()
        assert stream_requests(w, q, "VoiceSeparate") > before
        w.ci.finish_job(still_running, "Success")
        w.poll()
        assert w.finished("Success", tag="VoiceSeparate") == 3


def test_back_off_off_polls_every_stream_every_time(frozen: Any) -> None:
    with make_world(frozen, idle_tag_backoff=0) as w:
        w.poller.poll_once()
        w.sim.reset_requests()
        for _ in range(6):
            w.poll()
        assert stream_requests(w, w.queue, "VoiceSeparate") == 12


# -- reload ------------------------------------------------------------------------------------


def test_reload_keeps_unchanged_streams_counting(frozen: Any) -> None:
    with make_world(frozen) as w:
        q = w.queue
        w.poller.poll_once()
        run_job(w.ci, q, "Transcode", "Failed", "E1")
        running = w.ci.create_job(q, "Transcode")
        w.ci.start_job(running)
        w.poll()
        assert w.finished("Failed") == 1
        config = w.poller.config
        target = config.targets[0]
        # Drop the ai service, add a tag: Transcode's stream is untouched.
        changed = replace(
            target,
            services=(ServiceConfig("media", ("Transcode", "VoiceSeparate", "Animation")),),
        )
        w.poller.reload(replace(config, targets=(changed,), poll_interval=30))
        # Finished while the reload was pending, and a job of the new tag that is history.
        run_job(w.ci, q, "Animation")
        w.ci.finish_job(running, "Success")
        w.poll(30)
        assert w.finished("Failed") == 1
        assert w.finished("Success") == 1
        assert w.finished("Success", tag="Animation") == 0  # baseline of the new tag
        assert (
            w.value("tencent_ci_jobs", queue_id=w.ai_queue, tag="Translation", state="Running")
            is None
        )
        run_job(w.ci, q, "Animation")
        w.poll(30)
        assert w.finished("Success", tag="Animation") == 1
        assert w.poller.snapshot().reload.successful


def test_reload_removes_and_adds_targets(frozen: Any) -> None:
    with make_world(frozen) as w:
        w.poller.poll_once()
        run_job(w.ci, w.queue, "Transcode")
        w.poll()
        assert w.finished("Success") == 1
        config = w.poller.config
        first = config.targets[0]
        w.poller.reload(replace(config, targets=()))
        assert w.poller.targets == []
        w.poll()
        assert w.value("tencent_ci_up", bucket=BUCKET) is None
        w.poller.reload(replace(config, targets=(first,)))
        w.poll()
        assert w.up() == 1
        # Back as a new target: a new baseline, its counters from 0.
        assert w.finished("Success") == 0


# -- restarts ----------------------------------------------------------------------------------


def restart(w: World, config: Config) -> None:
    """A new exporter process with the same configuration (and state file, if any)."""
    w.poller.stop()
    w.poller = Poller(config, w.poller.stats, queue_page_size=10)
    w.registry = CollectorRegistry(auto_describe=False)
    w.registry.register(CICollector(w.poller, w.poller.stats, "test"))


@pytest.mark.parametrize("with_state", [True, False])
def test_a_restart_with_the_state_file_counts_what_finished_while_down(
    frozen: Any, tmp_path: Path, with_state: bool
) -> None:
    with make_world(frozen) as w:
        state_file = str(tmp_path / "state.json") if with_state else None
        config = replace(w.poller.config, state_file=state_file)
        restart(w, config)
        ci, q = w.ci, w.queue
        run_job(ci, q, "Transcode")  # baseline
        long_runner = ci.create_job(q, "Transcode")
        ci.start_job(long_runner)
        waiting = ci.create_job(q, "Transcode")
        w.poller.poll_once()
        run_job(ci, q, "Transcode")
        w.poll()
        assert w.finished("Success") == 1
        # Down for ten minutes: the long runner finishes, the waiting job fails, and a job
        # comes and goes.
        frozen.tick(600)
        ci.finish_job(long_runner, "Success")
        ci.start_job(waiting)
        ci.finish_job(waiting, "Failed", code="E_DOWN")
        run_job(ci, q, "Transcode", "Cancel")
        restart(w, config)
        w.poll()
        w.poll()
        # Counters restart at 0; what finished while down is counted once, nothing twice.
        if with_state:
            assert w.finished("Success") == 1  # the long runner
            assert w.finished("Failed") == 1
            assert w.finished("Cancel") == 1
        else:  # without one, the downtime is a new baseline: nothing of it is counted
            assert (w.finished("Success"), w.finished("Failed"), w.finished("Cancel")) == (0, 0, 0)
        run_job(ci, q, "Transcode")
        for _ in range(3):  # the stream may be idle-backed-off for two minutes
            w.poll()
        assert w.finished("Success") == (2 if with_state else 1)


def test_a_corrupt_state_file_is_a_fresh_baseline(
    frozen: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"format": "tencent-ci-exporter-state", "version": 1, "targets": [')
    with make_world(frozen) as w:
        restart(w, replace(w.poller.config, state_file=str(state)))
        run_job(w.ci, w.queue, "Transcode")
        w.poller.poll_once()
        run_job(w.ci, w.queue, "Transcode")
        w.poll()
        assert w.finished("Success") == 1
        warnings = [r for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "state" in warnings[0].getMessage()
        # and it was replaced by a good one
        assert state.read_text().startswith('{"format":"tencent-ci-exporter-state"')
