"""Callbacks as a push path, reconciled with polling (issue 17), over real HTTP: the simulator
sends TaskFinish and WorkflowFinish as CI would (with its retries, and faults: dropped,
duplicated, reordered, delayed past the next poll), the exporter's receiver takes them, the
targets' threads count them between polls, and polls reconcile. Every job and run is counted
exactly once; a job type with no listing is counted from callbacks alone."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry

from exporter.api_stats import ApiStats
from exporter.ci.services import SERVICES
from exporter.collector import CICollector
from exporter.config import CallbacksConfig, Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.receiver import Callbacks
from exporter.simulator import Fault, SimBucket, Simulator, Stream, Workload
from exporter.simulator.callback_queue import CallbackFault
from exporter.simulator.callbacks import CallbackSender

SID, KEY = "AKIDcallbacks00000000000000000000000", "callbacks-key-000000000000000000000"
SECRET = "callback-secret-0123456789abcdef"
BUCKET, REGION = "push-1250000000", "ap-guangzhou"
WAIT = 20.0  # the longest any condition below is waited for (bounded, not a guess)
FINISHED = ("Success", "Failed", "Cancel")


@dataclass
class World:
    sim: Simulator
    bucket: SimBucket
    queue: str
    flow: str
    poller: Poller
    callbacks: Callbacks
    sender: CallbackSender

    def value(self, name: str, **labels: str) -> float:
        registry = CollectorRegistry()
        registry.register(CICollector(self.poller, self.poller.stats, "test"))
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def finished(self, service: str, queue: str, tag: str, state: str) -> float:
        labels = {"bucket": BUCKET, "region": REGION, "service": service}
        labels.update(queue_id=queue, tag=tag, state=state)
        return self.value("tencent_ci_jobs_finished_total", **labels)

    def outcome(self, event: str, outcome: str) -> float:
        return self.value("tencent_ci_callbacks_received_total", event=event, outcome=outcome)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT}s: {what}"
        time.sleep(0.05)


def make_world(poll_interval: float) -> Iterator[World]:
    sim = Simulator({SID: KEY}, seed=17)
    bucket = sim.add_bucket(BUCKET, REGION, services=[*SERVICES, "workflow", "batch"])
    queue = bucket.add_queue("media", name="push-media", max_concurrent=50)
    flow = bucket.add_queue("workflow", name="push-flow", max_concurrent=1000)
    sim.start()
    target = TargetConfig(
        BUCKET,
        REGION,
        sim.endpoint(BUCKET),
        Credentials(SID, KEY),
        (ServiceConfig("media", ("Transcode",)), ServiceConfig("workflow", ("Workflow",))),
    )
    config = Config(
        targets=(target,),
        poll_interval=poll_interval,
        clock_skew_tolerance=1.0,
        idle_tag_backoff=0,
        callbacks=CallbacksConfig("127.0.0.1:0", SECRET),
    )
    stats = ApiStats()
    poller = Poller(config, stats)
    callbacks = Callbacks(poller.deliver, stats.callbacks)
    callbacks.configure(config.callbacks)
    assert callbacks.receiver is not None
    url = f"http://127.0.0.1:{callbacks.receiver.port}/callback/{SECRET}/{{bucket}}"
    sender = sim.send_callbacks(CallbackSender(url, backoff=(0.2,), seed=17))
    world = World(sim, bucket, queue, flow, poller, callbacks, sender)
    try:
        poller.start()
        wait_until(lambda: all(t.polled for t in poller.snapshot().targets), "the first poll")
        yield world
    finally:
        poller.stop()
        callbacks.stop()
        sim.stop()


@pytest.fixture
def slow_polls() -> Iterator[World]:
    yield from make_world(poll_interval=3600.0)  # one poll, at the start: callbacks only


@pytest.fixture
def live() -> Iterator[World]:
    yield from make_world(poll_interval=2.0)  # longer than the 1 s clock tolerance


def test_a_failure_is_counted_from_its_callback_before_any_poll(slow_polls: World) -> None:
    w = slow_polls
    calls = w.sim.request_count(BUCKET)
    job = w.bucket.create_job(w.queue, "Transcode")
    w.bucket.start_job(job)
    w.bucket.finish_job(job, "Failed", "InternalError", "boom")
    run = w.bucket.create_job(w.flow, "Workflow")
    w.bucket.start_job(run)
    w.bucket.finish_job(run, "Failed")
    wait_until(lambda: w.finished("media", w.queue, "Transcode", "Failed") == 1, "the job")
    wait_until(lambda: w.finished("workflow", w.flow, "Workflow", "Failed") == 1, "the run")
    failures = {"bucket": BUCKET, "region": REGION, "service": "media", "queue_id": w.queue}
    code = w.value(
        "tencent_ci_job_failures_total", **failures, tag="Transcode", code="InternalError"
    )
    assert code == 1
    assert w.sim.request_count(BUCKET) == calls  # no poll, no call: the push path alone
    assert w.outcome("TaskFinish", "counted") == w.outcome("WorkflowFinish", "counted") == 1
    last = w.value("tencent_ci_last_callback_timestamp_seconds", bucket=BUCKET, region=REGION)
    assert last > 0


def test_a_job_type_no_listing_shows_is_counted_from_callbacks_alone(slow_polls: World) -> None:
    w = slow_polls
    w.sender.add_fault(CallbackFault("duplicate"))
    for state in ("Success", "Failed", "Success"):
        job = w.bucket.create_unlisted_job("file-queue", "FileCompress")
        w.bucket.start_job(job)
        w.bucket.finish_job(job, state, "Err" if state == "Failed" else "", "")
    assert w.sender.drain(WAIT)

    def counted(state: str) -> float:
        return w.finished("unlisted", "file-queue", "FileCompress", state)

    wait_until(lambda: counted("Success") == 2 and counted("Failed") == 1, "unlisted jobs")
    wait_until(lambda: w.outcome("TaskFinish", "duplicate") == 3, "the duplicates")
    assert counted("Success") == 2 and counted("Failed") == 1


def test_a_callback_for_a_bucket_not_polled_is_acknowledged_and_counted(
    slow_polls: World,
) -> None:
    w = slow_polls
    other = w.sim.add_bucket("elsewhere-1250000000", REGION)
    queue = other.add_queue("media")
    job = other.create_job(queue, "Transcode")
    other.finish_job(job, "Success")
    assert w.sender.drain(WAIT)
    wait_until(lambda: w.outcome("TaskFinish", "unknown_target") == 1, "unknown target")
    assert w.sender.counts().failed == 0  # acknowledged: CI does not retry it for ever


def test_every_job_and_run_counted_once_with_faults_on_both_paths(live: World) -> None:
    w = live
    # The push path: dropped, duplicated, reordered and delayed past the next poll.
    for fault in (
        CallbackFault("drop", probability=0.15),
        CallbackFault("duplicate", probability=0.15),
        CallbackFault("reorder", probability=0.15, after=3),
        CallbackFault("delay", probability=0.15, seconds=3.0),
    ):
        w.sender.add_fault(fault)
    # The polling path: transient faults on the listings, retried at the defaults.
    for path in ("/jobs", "/workflowexecution"):
        w.sim.faults.add(Fault("http_503", path=path, probability=0.1))
    streams = [
        Stream(w.queue, "Transcode", rate=4.0, median_run=0.6, sigma=0.4, failure_ratio=0.3),
        Stream(w.flow, "Workflow", rate=1.5, median_run=1.0, sigma=0.3, failure_ratio=0.3),
    ]
    workload = Workload(w.bucket, 17, streams, start=w.bucket.now(), failure_ratio=0.3)
    w.sim.add_workload(workload)
    w.sim.start_workload(interval=0.1)
    polls = w.sim.request_count(BUCKET, "/queue")
    wait_until(lambda: w.sim.request_count(BUCKET, "/queue") >= polls + 5, "five polls")
    w.sim.workloads.clear()  # no more arrivals; what runs finishes below
    for job in w.bucket.jobs():
        if job.state not in FINISHED:
            if job.state == "Submitted":
                w.bucket.start_job(job.job_id)
            w.bucket.finish_job(job.job_id, "Success")
    w.sim.faults.clear()
    w.sender.release()
    assert w.sender.drain(WAIT)
    settled = w.sim.request_count(BUCKET, "/queue")
    wait_until(lambda: w.sim.request_count(BUCKET, "/queue") >= settled + 2, "two more polls")

    for service, queue, tag in (("media", w.queue, "Transcode"), ("workflow", w.flow, "Workflow")):
        truth = Counter(j.state for j in w.bucket.jobs(queue) if j.state in FINISHED)
        counted = {s: w.finished(service, queue, tag, s) for s in FINISHED}
        assert counted == {s: float(truth[s]) for s in FINISHED}, (service, truth)
        assert sum(truth.values()) >= 10, (service, truth)  # the run did something
    # Both paths counted, and each one met what the other had counted.
    for event in ("TaskFinish", "WorkflowFinish"):
        assert w.outcome(event, "counted") > 0, event
        assert w.outcome(event, "duplicate") > 0, event
    counts = w.sender.counts()
    assert counts.dropped > 0 and counts.duplicated > 0


def test_a_workflow_step_reported_without_its_queue_is_left_to_polling(
    slow_polls: World,
) -> None:
    w = slow_polls
    w.sender.steps = True  # CI may report each step of a run, without a QueueId
    run = w.bucket.create_job(w.flow, "Workflow")
    w.bucket.start_job(run)
    w.bucket.finish_job(run, "Success")
    assert w.sender.drain(WAIT)
    wait_until(lambda: w.finished("workflow", w.flow, "Workflow", "Success") == 1, "the run")
    steps = w.outcome("TaskFinish", "unknown_target")
    assert steps >= 1  # each step acknowledged, none counted in a stream of its own
    families = CICollector(w.poller, w.poller.stats, "test").collect()
    assert not [s for f in families for s in f.samples if s.labels.get("service") == "unlisted"]
