"""Exactly-once under a live, flaky CI, with every pipeline setting at its default.

Over real HTTP against the simulator: the workload moves *during* polls (every request the
simulator answers moves CI's clock and plays the workload up to it), 30% of job listings fail
with a 5xx or SlowDown, the client retries with its default policy and back-off, streams are
listed `concurrency` (4) at a time through the default rate gate, and the poll interval (6 s)
is longer than the clock tolerance (1 s). Time is virtual: freezegun's clock, moved by the
simulator's answers, by the test between polls, and by every wait of the client and the rate
gate (they sleep by moving it), so retries take their real back-off in CI's time without
taking it in the test's.

At the end every job that finished after the first poll is counted exactly once, stream by
stream and state by state, and every failure under its code.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from counting import counters
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from prometheus_client import CollectorRegistry

from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poll.clients import SharedClients, build_client
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator
from exporter.simulator.streams import Stream, Workload

SECRET_ID, SECRET_KEY = "AKIDlive0000000000000000000000000000", "live-key-00000000000000000000000"
BUCKET, REGION = "live-1250000000", "ap-chengdu"
INTERVAL, TOLERANCE = 6.0, 1.0
TAGS = ("Transcode", "Snapshot")


class VirtualTime:
    """CI's clock and the exporter's, moved by whoever waits or answers. Thread-safe."""

    def __init__(self, frozen: FrozenDateTimeFactory, workload: Workload, seed: int) -> None:
        self.frozen = frozen
        self.workload = workload
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.moving = False  # whether answers move the clock (off for the baseline poll)

    def tick(self, seconds: float) -> None:
        with self.lock:
            self.frozen.tick(seconds)
            if self.moving:
                self.workload.advance(self.workload.bucket.now())

    def on_request(self) -> None:
        with self.lock:
            step = self.rng.uniform(0.0, 0.4) if self.moving else 0.0
        self.tick(step)

    def sleep(self, stopping: threading.Event, seconds: float) -> bool:
        """How the client and the rate gate wait: CI's time passes, the test's does not."""
        if seconds > 0:
            self.tick(seconds)
        return stopping.is_set()


def run_soak(seed: int, polls: int = 30) -> tuple[Counter[tuple[str, ...]], ...]:
    rng = random.Random(seed)
    with freeze_time("2026-12-01 08:00:00") as frozen:
        sim = Simulator(
            {SECRET_ID: SECRET_KEY},
            creation_bounds=rng.choice(["exclusive", "inclusive"]),
            seed=seed,
        )
        ci = sim.add_bucket(BUCKET, REGION)
        queues = [ci.add_queue("media", name=f"q{i}", max_concurrent=3) for i in range(3)]
        streams = [
            Stream(q, tag, rate=rng.uniform(0.08, 0.25), median_run=rng.choice([1.0, 2.0, 4.0]))
            for q in queues
            for tag in TAGS
        ]
        workload = Workload(
            ci, seed, streams, start=ci.now() - 600, failure_ratio=0.2, cancel_ratio=0.05
        )
        workload.advance(ci.now())  # ten minutes of history: the baseline
        time = VirtualTime(frozen, workload, seed)
        sim.on_request = time.on_request
        with sim.start():
            target = TargetConfig(
                BUCKET,
                REGION,
                sim.endpoint(BUCKET),
                Credentials(SECRET_ID, SECRET_KEY),
                (ServiceConfig("media", TAGS),),
            )
            # Every setting at its default but the interval and the tolerance.
            config = Config((target,), poll_interval=INTERVAL, clock_skew_tolerance=TOLERANCE)
            stats = ApiStats()
            shared = SharedClients(sleep=time.sleep)
            poller = Poller(
                config,
                stats,
                client_factory=lambda t, c, s: build_client(t, c, s, shared=shared),
            )
            registry = CollectorRegistry(auto_describe=False)
            registry.register(CICollector(poller, stats, "test"))
            poller.poll_once()  # the baseline: CI still, no fault
            assert poller.snapshot().targets[0].up
            baseline = {j.job_id for j in ci.jobs() if j.end_time is not None}
            time.moving = True
            sim.faults.add(Fault("http_500", path="/jobs", probability=0.15))
            sim.faults.add(Fault("http_503", path="/jobs", probability=0.18))
            downs = 0
            for _ in range(polls):
                time.tick(INTERVAL + rng.uniform(-0.5, 0.5))
                poller.poll_once()
                downs += not poller.snapshot().targets[0].up
            # Settle: CI still, no fault, the last jobs' ends seen.
            sim.faults.clear()
            time.moving = False
            # Every stream due again, those the idle back-off spaced out included.
            for wait in (INTERVAL, config.idle_tag_backoff, INTERVAL):
                frozen.tick(wait)
                poller.poll_once()
            assert poller.snapshot().targets[0].up
            poller.stop()
        faulted = sum(1 for r in sim.requests if r.fault)
        listings = sum(1 for r in sim.requests if r.path == "/jobs")
        finished, failures = counters(registry)

    done = [j for j in ci.jobs() if j.end_time is not None and j.job_id not in baseline]
    expected = Counter((j.queue_id, j.tag, j.state) for j in done)
    expected_failures = Counter(j.code for j in done if j.state == "Failed")
    # The run went through what it claims: a live workload, faults on ~30% of job listings,
    # retries, and some polls that still failed.
    assert sum(expected.values()) >= 200
    assert 0.2 < faulted / listings < 0.4
    assert sum(stats.snapshot().retries.values()) > 50
    return finished, expected, failures, expected_failures, Counter(downs=downs)


@pytest.mark.usefixtures("frozen_on_every_thread")
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_job_counted_once_under_a_live_flaky_ci(seed: int) -> None:
    finished, expected, failures, expected_failures, _ = run_soak(seed)
    assert finished == expected
    assert failures == expected_failures
