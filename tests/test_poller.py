"""The poller's own duties: health per target, logging once per change, readiness, the
background schedule and a clean stop."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from clients import bare_client

from exporter.api_stats import ApiStats
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poll.target import TargetPoller
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator

SECRET_ID, SECRET_KEY = "AKIDpoller00000000000000000000000000", "poller-key-000000000000000000000"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SECRET_ID: SECRET_KEY})
    for name in ("good-1250000000", "bad-1250000001"):
        bucket = simulator.add_bucket(name, "ap-beijing")
        bucket.add_queue("speech", name="asr")
    with simulator.start():
        yield simulator


def make_poller(sim: Simulator, interval: float = 60.0) -> Poller:
    targets = tuple(
        TargetConfig(
            name,
            "ap-beijing",
            sim.endpoint(name),
            Credentials(SECRET_ID, SECRET_KEY),
            (ServiceConfig("speech", ("SpeechRecognition",)),),
        )
        for name in sim.buckets
    )
    # Every stream at every poll: these tests are not about the idle back-off.
    config = Config(targets=targets, poll_interval=interval, request_timeout=2, idle_tag_backoff=0)
    return Poller(config, ApiStats(), client_factory=bare_client)


def test_a_failing_target_logs_once_per_change_of_state(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    poller = make_poller(sim)
    caplog.set_level(logging.INFO, logger="exporter.poll")
    poller.poll_once()
    assert [r.getMessage() for r in caplog.records].count("target polled successfully") == 2
    caplog.clear()
    sim.faults.add(Fault("http_503", bucket="bad-1250000001"))
    for _ in range(4):
        poller.poll_once()
    failures = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(failures) == 1
    assert failures[0].target == "bad-1250000001/ap-beijing"
    assert "SlowDown" in failures[0].error
    # Another kind of failure is news, and is logged once too.
    sim.faults.clear()
    sim.faults.add(Fault("http_500", bucket="bad-1250000001"))
    poller.poll_once()
    poller.poll_once()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    sim.faults.clear()
    caplog.clear()
    poller.poll_once()
    poller.poll_once()
    assert [r.getMessage() for r in caplog.records] == ["target polled successfully"]


def test_health_of_each_target_is_its_own(sim: Simulator) -> None:
    poller = make_poller(sim)
    assert not poller.ready()
    sim.faults.add(Fault("http_500", bucket="bad-1250000001"))
    poller.poll_once()
    assert poller.ready()  # polled, even if one failed
    good, bad = poller.snapshot().targets
    assert good.up and not bad.up
    assert good.last_success_time is not None and bad.last_success_time is None
    assert "InternalError" in bad.last_error
    assert bad.last_poll_duration is not None


def test_background_schedule_and_stop(sim: Simulator) -> None:
    poller = make_poller(sim, interval=0.05)
    polled = threading.Event()
    counts: list[str] = []
    first = poller.targets[0]

    original = poller._publish

    def publish(target: TargetPoller) -> None:
        original(target)
        counts.append(target.name)
        if counts.count(first.name) >= 3:
            polled.set()

    poller._publish = publish  # type: ignore[method-assign]
    poller.start()
    assert polled.wait(10), "three polls of the first target did not happen"
    began = time.monotonic()
    poller.stop(timeout=1.0)
    assert time.monotonic() - began < 1.5
    assert poller.ready() and all(t.up for t in poller.snapshot().targets)


def test_random_throttling_across_streams_logs_once(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A target throttled on a different stream each poll is the same failure: one line."""
    for bucket in sim.buckets.values():
        for n in range(4):
            bucket.add_queue("speech", name=f"more-{n}")
    poller = make_poller(sim)
    poller.poll_once()
    caplog.set_level(logging.INFO, logger="exporter.poll")
    sim.faults.add(Fault("http_503", path="/asr_jobs", bucket="bad-1250000001", probability=0.3))
    ups = [True]
    for _ in range(12):
        poller.poll_once()
        ups.append(poller.snapshot().targets[1].up)
    assert ups.count(False) >= 5
    went_down = sum(1 for before, now in itertools.pairwise(ups) if before and not now)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == went_down


def test_stop_during_a_poll_leaves_health_untouched(sim: Simulator) -> None:
    poller = make_poller(sim)
    poller.poll_once()
    for target in poller.targets:
        target.stopping.set()
    sim.faults.add(Fault("http_500"))
    poller.poll_once()
    assert all(t.up for t in poller.snapshot().targets)


def test_scrapes_during_background_polls_always_see_a_whole_snapshot(sim: Simulator) -> None:
    """/metrics renders while polls swap snapshots underneath: every scrape parses, and the
    counters it shows never go backwards."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from exporter.collector import CICollector
    from exporter.simulator.streams import Workload

    for bucket in sim.buckets.values():
        sim.add_workload(Workload(bucket, seed=5, default_rate=2.0))
    poller = make_poller(sim, interval=0.02)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(poller, poller.stats, "test"))
    errors: list[BaseException] = []
    totals: list[list[float]] = []

    def scrape(n: int) -> None:
        seen: list[float] = []
        try:
            for _ in range(n):
                text = generate_latest(registry).decode()
                total = sum(
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "tencent_ci_api_requests_total"
                )
                seen.append(total)
        except BaseException as error:  # any failure of a scrape fails the test
            errors.append(error)
        totals.append(seen)

    sim.start_workload(interval=0.01)
    poller.start()
    threads = [threading.Thread(target=scrape, args=(40,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    poller.stop()
    assert not errors
    assert all(seen == sorted(seen) for seen in totals)
    assert poller.stats.total_requests() > 0


def test_refused_credentials_end_the_targets_poll_at_once(sim: Simulator) -> None:
    """Every later call would be refused too: the rest of the poll is not attempted."""
    for bucket in sim.buckets.values():
        for n in range(4):
            bucket.add_queue("speech", name=f"more-{n}")
    poller = make_poller(sim)
    poller.poll_once()
    sim.reset_requests()
    sim.faults.add(Fault("auth", bucket="bad-1250000001", code="AccessDenied"))
    poller.poll_once()
    assert sim.request_count("bad-1250000001") == 1  # the queue listing, refused
    assert sim.request_count("good-1250000000") == 11  # its queues, 2 listings x 5 streams
    bad = poller.snapshot().targets[1]
    assert not bad.up and "AccessDenied" in bad.last_error
