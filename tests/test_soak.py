"""A seeded workload against the simulator over real HTTP, polls failing at random through
every kind of fault, CI's clock off: at the end the counters equal the simulator's own record
of which jobs finished after the exporter started, state by state and code by code."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from clients import bare_client
from counting import counters
from freezegun import freeze_time
from prometheus_client import CollectorRegistry

from exporter.api_stats import ApiStats
from exporter.collector import CICollector
from exporter.config import Config, RetryConfig, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator
from exporter.simulator.streams import Stream, Workload

SECRET_ID, SECRET_KEY = "AKIDsoak000000000000000000000000000", "soak-key-00000000000000000000000"
BUCKET, REGION = "soak-1250000000", "ap-shanghai"
FAULTS = ("http_500", "http_503", "http_429", "malformed", "truncated", "reset", "html")
INTERVAL = 60


@pytest.mark.parametrize(
    ("seed", "bounds", "offset"),
    [(1, "exclusive", 17), (2, "inclusive", -23), (3, "exclusive", -8), (4, "inclusive", 29)],
)
def test_counts_match_the_simulators_record(seed: int, bounds: str, offset: int) -> None:
    rng = random.Random(seed)
    with freeze_time("2026-11-21 06:00:00") as frozen:
        sim = Simulator({SECRET_ID: SECRET_KEY}, creation_bounds=bounds, seed=seed)
        sim.clock_offset = offset
        ci = sim.add_bucket(BUCKET, REGION)
        queues = [ci.add_queue("media", name=f"q{i}", max_concurrent=4) for i in range(3)]
        streams = [
            Stream(q, tag, rate=rng.uniform(0.01, 0.05), median_run=rng.choice([5, 60, 400]))
            for q in queues
            for tag in ("Transcode", "Snapshot")
        ]
        start = ci.now() - 3600
        workload = Workload(ci, seed, streams, start=start, failure_ratio=0.2, cancel_ratio=0.1)
        workload.advance(ci.now())  # an hour of history: the baseline
        with sim.start():
            target = TargetConfig(
                BUCKET,
                REGION,
                sim.endpoint(BUCKET),
                Credentials(SECRET_ID, SECRET_KEY),
                (ServiceConfig("media", ("Transcode", "Snapshot")),),
            )
            # Faults must reach the accounting (no retry hides them), with streams polled side
            # by side and idle ones spaced out (the defaults).
            config = Config(
                (target,), poll_interval=INTERVAL, request_timeout=2, retry=RetryConfig(attempts=1)
            )
            stats = ApiStats()
            poller = Poller(config, stats, client_factory=bare_client)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(CICollector(poller, stats, "test"))
            # The baseline: what had finished when the first poll ran. (Not "EndTime before
            # the start": CI's times are whole seconds, so a job can end in that very second
            # after the exporter saw it running.)
            baseline = {j.job_id for j in ci.jobs() if j.end_time is not None}
            poller.poll_once()
            failed_polls = 0
            for _ in range(40):
                frozen.tick(rng.choice([15, 60, 60, 90, 300]))
                workload.advance(ci.now())
                sim.faults.clear()
                if rng.random() < 0.35:
                    kind = rng.choice(FAULTS)
                    sim.faults.add(Fault(kind, probability=rng.choice([0.2, 1.0])))
                poller.poll_once()
                failed_polls += not poller.snapshot().targets[0].up
            sim.faults.clear()
            poller.poll_once()
            poller.poll_once()
            assert poller.snapshot().targets[0].up
            poller.stop()
        finished, failures = counters(registry)

    done_after_start = [j for j in ci.jobs() if j.end_time is not None and j.job_id not in baseline]
    expected = Counter((j.queue_id, j.tag, j.state) for j in done_after_start)
    expected_failures = Counter(j.code for j in done_after_start if j.state == "Failed")
    assert failed_polls >= 5  # the run went through real outages
    assert sum(expected.values()) > 100
    assert finished == expected
    assert failures == expected_failures
