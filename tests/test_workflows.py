"""Workflows and batch jobs wired through the exporter (issue 16): a target opts in with
`workflows: {}` and `batch_jobs: {}`, the Poller polls them as two more services over real
HTTP against the simulator, and /metrics shows them in the job families."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from exporter.api_stats import ApiStats
from exporter.ci.client import RUN_DETAILS_PER_LISTING
from exporter.ci.services import SERVICES
from exporter.collector import CICollector
from exporter.config import Config, DiscoveryConfig, ServiceConfig, TargetConfig, parse_config
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.simulator import Simulator
from exporter.simulator.model import SimBucket
from exporter.simulator.workflows import add_batch_job, add_workflow, start_run

SID, KEY = "AKIDworkflows000000000000000000000", "workflows-key-0000000000000000000"
BUCKET, REGION = "flows-1250000000", "ap-guangzhou"
WORKFLOW = ServiceConfig("workflow", ("Workflow",))
BATCH = ServiceConfig("batch", ("Workflow", "Job"))


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator({SID: KEY}, seed=7)
    simulator.add_bucket(BUCKET, REGION, services=[*SERVICES, "workflow", "batch"])
    with simulator:
        yield simulator


@pytest.fixture
def bucket(sim: Simulator) -> SimBucket:
    return sim.bucket(BUCKET)


def poller(sim: Simulator, *services: ServiceConfig) -> Poller:
    target = TargetConfig(
        BUCKET, REGION, sim.endpoint(BUCKET), Credentials(SID, KEY), services or (WORKFLOW, BATCH)
    )
    return Poller(Config(targets=(target,), idle_tag_backoff=0), ApiStats())


def value(p: Poller, metric: str, **labels: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(CICollector(p, p.stats, "test"))
    return registry.get_sample_value(metric, {"bucket": BUCKET, "region": REGION, **labels})


def test_the_opt_ins_are_two_more_services_after_the_others() -> None:
    environ = {"TENCENTCLOUD_SECRET_ID": "AKIDx", "TENCENTCLOUD_SECRET_KEY": "y"}
    config = parse_config(
        f"""
targets:
  - bucket: {BUCKET}
    region: {REGION}
    services: {{media: {{tags: [Transcode]}}}}
    workflows: {{}}
    batch_jobs: {{histograms: false}}
discovery:
  - regions: [{REGION}]
    services: {{pic: {{}}}}
    workflows: {{}}
""",
        "c.yml",
        environ,
    )
    assert [(s.name, s.tags, s.histograms) for s in config.targets[0].services] == [
        ("media", ("Transcode",), True),
        ("workflow", ("Workflow",), True),
        ("batch", ("Workflow", "Job"), False),
    ]
    assert [s.name for s in config.discovery[0].services] == ["pic", "workflow"]
    plain = parse_config(f"targets: [{{bucket: {BUCKET}, region: {REGION}}}]", "c.yml", environ)
    assert [s.name for s in plain.targets[0].services] == list(SERVICES)  # not by default


def test_runs_and_batch_jobs_are_counted_once_with_the_failed_step(
    sim: Simulator, bucket: SimBucket
) -> None:
    flow = add_workflow(bucket, "transcode-flow")
    paused = add_workflow(bucket, "archive-flow", paused=True)
    running = start_run(bucket, flow)
    batch = add_batch_job(bucket, "Job")
    p = poller(sim)
    p.poll_once()
    labels = {"service": "workflow", "queue_id": flow, "tag": "Workflow"}
    assert value(p, "tencent_ci_jobs", **labels, state="Running") == 1
    assert value(p, "tencent_ci_queue_paused", service="workflow", queue_id=paused) == 1
    info = {"service": "workflow", "queue_id": flow, "name": "transcode-flow"}
    assert value(p, "tencent_ci_queue_info", **info, category="Workflow") == 1
    # A workflow has no slots or size; batch jobs have no queue at all.
    assert value(p, "tencent_ci_queue_max_concurrent", service="workflow", queue_id=flow) is None
    assert value(p, "tencent_ci_queue_paused", service="batch", queue_id="") is None

    bucket.finish_job(running, "Failed")
    bucket.start_job(batch)
    bucket.finish_job(batch, "Success")
    for _ in range(3):
        p.poll_once()
    assert value(p, "tencent_ci_jobs_finished_total", **labels, state="Failed") == 1
    assert value(p, "tencent_ci_jobs", **labels, state="Running") == 0
    failed = [
        s
        for f in CICollector(p, p.stats, "t").collect()
        if f.name == "tencent_ci_job_failures"
        for s in f.samples
        if s.labels.get("service") == "workflow"
    ]
    # The failed step's type, from the one description of the run (not "unknown").
    assert [(s.labels["code"], s.value) for s in failed] == [(failed[0].labels["code"], 1.0)]
    assert failed[0].labels["code"] in (
        "Transcode",
        "Snapshot",
        "Animation",
        "SmartCover",
        "Concat",
    )
    described = [r for r in sim.requests if r.path == f"/workflowexecution/{running}"]
    assert len(described) == 1  # remembered: later listings of the same run cost nothing
    batch_labels = {"service": "batch", "queue_id": "", "tag": "Job"}
    assert value(p, "tencent_ci_jobs_finished_total", **batch_labels, state="Success") == 1


def test_failed_runs_are_described_within_a_bound_per_listing(
    sim: Simulator, bucket: SimBucket
) -> None:
    flow = add_workflow(bucket, "busy-flow")
    p = poller(sim, WORKFLOW)
    p.poll_once()
    runs = [start_run(bucket, flow) for _ in range(RUN_DETAILS_PER_LISTING + 5)]
    for run in runs:
        bucket.finish_job(run, "Failed")
    p.poll_once()
    labels = {"service": "workflow", "queue_id": flow, "tag": "Workflow"}
    assert value(p, "tencent_ci_jobs_finished_total", **labels, state="Failed") == len(runs)
    describes = [r for r in sim.requests if r.path.startswith("/workflowexecution/")]
    assert len(describes) == RUN_DETAILS_PER_LISTING
    assert value(p, "tencent_ci_job_failures_total", **labels, code="unknown") == 5


def test_discovery_lists_media_buckets_once_for_media_and_workflows(sim: Simulator) -> None:
    sim.add_region(REGION)
    entry = DiscoveryConfig(
        (REGION,), Credentials(SID, KEY), (ServiceConfig("media", ("Transcode",)), WORKFLOW)
    )
    p = Poller(
        Config(discovery=(entry,), idle_tag_backoff=0),
        ApiStats(),
        bucket_endpoint=lambda bucket, region: sim.endpoint(bucket),
        service_endpoint=sim.service_endpoint,
    )
    p.poll_once()
    assert [[s.name for s in t.target.services] for t in p.targets] == [["media", "workflow"]]
    listings = [r.path for r in sim.requests if r.bucket == f"ci.{REGION}"]
    assert listings == ["/mediabucket"]
