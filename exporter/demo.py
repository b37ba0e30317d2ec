"""--demo: the simulator with a lively seeded workload, and a config pointing the exporter at it."""

from __future__ import annotations

from exporter.ci.services import SERVICES
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.simulator import DEMO_SECRET_ID, DEMO_SECRET_KEY, Fault, Simulator, build_demo

DEMO_POLL_INTERVAL = 5.0
# A bucket that is throttled now and then, so the error counters and `up` have something to say.
FLAKY_BUCKET_PROBABILITY = 0.002


def demo_config(sim: Simulator, poll_interval: float = DEMO_POLL_INTERVAL) -> Config:
    """One target per simulated bucket, polling the tags its workload uses."""
    credentials = Credentials(DEMO_SECRET_ID, DEMO_SECRET_KEY)
    targets = []
    for workload in sim.workloads:
        bucket, name = workload.bucket, workload.bucket.name
        tags: dict[str, list[str]] = {}
        for stream in workload.streams:
            service = bucket.queue(stream.queue_id).service
            if stream.tag not in tags.setdefault(service, []):
                tags[service].append(stream.tag)
        services = tuple(
            ServiceConfig(service, tuple(tags[service])) for service in SERVICES if service in tags
        )
        targets.append(TargetConfig(name, bucket.region, sim.endpoint(name), credentials, services))
    return Config(targets=tuple(targets), poll_interval=poll_interval, request_timeout=5.0)


def start_demo(seed: int = 1) -> tuple[Simulator, Config]:
    sim = build_demo(seed)
    sim.start()
    sim.start_workload()
    flaky = sorted(sim.buckets)[-1]
    # The first job listing of the flaky bucket is throttled for sure, later ones by chance.
    sim.faults.add(Fault("http_503", bucket=flaky, path="/jobs", times=1))
    sim.faults.add(Fault("http_503", bucket=flaky, probability=FLAKY_BUCKET_PROBABILITY))
    return sim, demo_config(sim)
