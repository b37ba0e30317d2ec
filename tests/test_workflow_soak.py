"""Exactly-once for workflow runs and batch jobs under a live, flaky CI, every pipeline setting
at its default: tests/test_soak_live.py's harness (its VirtualTime) over the two services.

Over real HTTP against the simulator: runs of three workflows and batch jobs of both types
come and go *during* polls (every answer moves CI's clock and plays the workload up to it), a
fifth of the calls to /workflowexecution and /inventorytriggerjob (listings and describes) and
of the workflow listings fail (500, 503 SlowDown, connection reset), the client retries with
its default policy, streams are listed `concurrency` (4) at a time, idle ones spaced out, and
the poll interval (6 s) is longer than the clock tolerance (1 s). Runs take seconds, so most
end after the window has moved past their creation and are described by id (one id a call);
batch jobs wait for one of three slots first. Time is virtual (see tests/test_soak_live.py).

At the end every run and batch job that finished after the first poll is counted exactly once,
per (workflow, state) and (batch type, state), and every failure under its code: a Failed
run's is its failed step's type, a batch job's its Code.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from counting import counters
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from prometheus_client import CollectorRegistry
from test_soak_live import VirtualTime

from exporter.api_stats import ApiStats
from exporter.ci.services import SERVICES
from exporter.collector import CICollector
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poll.clients import SharedClients, build_client
from exporter.poller import Poller
from exporter.simulator import Fault, Simulator
from exporter.simulator.streams import Stream, Workload
from exporter.simulator.workflows import BATCH, BATCH_QUEUE_ID, RUNS, WORKFLOWS, steps_of

SECRET_ID, SECRET_KEY = "AKIDflowsoak0000000000000000000000000", "flow-soak-key-000000000000000000"
BUCKET, REGION = "flowsoak-1250000000", "ap-chengdu"
INTERVAL, TOLERANCE = 6.0, 1.0
BATCH_TYPES = ("Job", "Workflow")
# The endpoint families of the two services, and the fault each may meet (probability).
FAULTS = (
    Fault("http_500", path=RUNS, probability=0.08),
    Fault("http_503", path=RUNS, probability=0.08),
    Fault("reset", path=RUNS, probability=0.04),
    Fault("http_500", path=BATCH, probability=0.08),
    Fault("http_503", path=BATCH, probability=0.08),
    Fault("reset", path=BATCH, probability=0.04),
    Fault("http_503", path=WORKFLOWS, probability=0.2),
)
FAULTED = (RUNS, BATCH, WORKFLOWS)


Soak = tuple[
    Counter[tuple[str, ...]], Counter[tuple[str, ...]], Counter[str], Counter[str], Counter[str]
]


def run_soak(seed: int, polls: int = 40, state_file: str | None = None) -> Soak:
    """With a `state_file`, the exporter is stopped halfway, stays down for 30 s of CI's time
    while the workload goes on, and starts again from the file: what the two processes counted
    adds up to the truth."""
    rng = random.Random(seed)
    with freeze_time("2026-12-01 08:00:00") as frozen:
        sim = Simulator(
            {SECRET_ID: SECRET_KEY},
            creation_bounds=rng.choice(["exclusive", "inclusive"]),
            seed=seed,
        )
        ci = sim.add_bucket(BUCKET, REGION, services=[*SERVICES, "workflow", "batch"])
        history = ci.now() - 600
        # Workflows start their runs at once (no slots of their own); batch jobs wait for one
        # of three.
        flows = [
            ci.add_queue("workflow", name=f"flow{i}", max_concurrent=1000, at=history)
            for i in range(3)
        ]
        ci.add_queue("batch", name="batch", queue_id=BATCH_QUEUE_ID, max_concurrent=3, at=history)
        streams = [
            Stream(f, "Workflow", rate=rng.uniform(0.1, 0.25), median_run=rng.choice([1.0, 3.0]))
            for f in flows
        ]
        # Long runners: still running many polls on, ending far behind the window.
        streams.append(Stream(flows[0], "Workflow", rate=0.02, median_run=40.0))
        streams += [
            Stream(BATCH_QUEUE_ID, kind, rate=rng.uniform(0.1, 0.2), median_run=2.0)
            for kind in BATCH_TYPES
        ]
        workload = Workload(ci, seed, streams, start=history, failure_ratio=0.25, cancel_ratio=0.08)
        workload.advance(ci.now())  # ten minutes of history: the baseline
        assert isinstance(frozen, FrozenDateTimeFactory)
        time = VirtualTime(frozen, workload, seed)
        sim.on_request = time.on_request
        with sim.start():
            target = TargetConfig(
                BUCKET,
                REGION,
                sim.endpoint(BUCKET),
                Credentials(SECRET_ID, SECRET_KEY),
                (ServiceConfig("workflow", ("Workflow",)), ServiceConfig("batch", BATCH_TYPES)),
            )
            # Every setting at its default but the interval and the tolerance.
            config = Config(
                (target,),
                poll_interval=INTERVAL,
                clock_skew_tolerance=TOLERANCE,
                state_file=state_file,
            )
            stats = ApiStats()
            shared = SharedClients(sleep=time.sleep)

            def start() -> tuple[Poller, CollectorRegistry]:
                poller = Poller(
                    config,
                    stats,
                    client_factory=lambda t, c, s: build_client(t, c, s, shared=shared),
                )
                registry = CollectorRegistry(auto_describe=False)
                registry.register(CICollector(poller, stats, "test"))
                return poller, registry

            poller, registry = start()
            counted_before = (Counter[tuple[str, ...]](), Counter[str]())
            poller.poll_once()  # the baseline: CI still, no fault
            assert poller.snapshot().targets[0].up
            baseline = {j.job_id for j in ci.jobs() if j.end_time is not None}
            time.moving = True
            for fault in FAULTS:
                sim.faults.add(Fault(fault.kind, path=fault.path, probability=fault.probability))
            downs = 0
            for n in range(polls):
                if state_file is not None and n == polls // 2:
                    poller.stop()
                    counted_before = counters(registry)
                    time.tick(30.0)  # down: runs and batch jobs start and end meanwhile
                    poller, registry = start()
                time.tick(INTERVAL + rng.uniform(-0.5, 0.5))
                poller.poll_once()
                downs += not poller.snapshot().targets[0].up
            # Settle: CI still, no fault, the last ends seen.
            sim.faults.clear()
            time.moving = False
            # Every stream due again, those the idle back-off spaced out included.
            for wait in (INTERVAL, config.idle_tag_backoff, INTERVAL):
                frozen.tick(wait)
                poller.poll_once()
            assert poller.snapshot().targets[0].up
            poller.stop()
        requests = [r for r in sim.requests if r.path.startswith(FAULTED)]
        faulted = sum(1 for r in requests if r.fault)
        described = sum(1 for r in requests if r.path.startswith(RUNS + "/"))
        finished, failures = counters(registry)
        finished += counted_before[0]
        failures += counted_before[1]

    now = ci.now()
    done = [j for j in ci.jobs() if j.end_time is not None and j.job_id not in baseline]
    runs = [j for j in done if j.service == "workflow"]
    batch = [j for j in done if j.service == "batch"]
    expected: Counter[tuple[str, ...]] = Counter((j.queue_id, j.tag, j.state) for j in runs)
    expected.update(("", j.tag, j.state) for j in batch)
    expected_failures = Counter(
        next(s.type for s in steps_of(j, now) if s.state == "Failed")
        for j in runs
        if j.state == "Failed"
    )
    expected_failures.update(j.code for j in batch if j.state == "Failed")
    # The run went through what it claims: a live workload of both kinds, a fifth of the calls
    # faulted, retries, runs described by id, and some polls that still failed.
    retries = sum(stats.snapshot().retries.values())
    assert len(runs) >= 100 and len(batch) >= 60
    assert {j.state for j in runs} == {j.state for j in batch} == {"Success", "Failed", "Cancel"}
    assert 0.1 < faulted / len(requests) < 0.35
    assert retries > 30
    assert described > 50
    return (
        finished,
        expected,
        failures,
        expected_failures,
        Counter(
            runs=len(runs),
            batch=len(batch),
            polls=polls + 4,
            downs=downs,
            requests=len(requests),
            faulted=faulted,
            retries=retries,
            described=described,
        ),
    )


@pytest.mark.usefixtures("frozen_on_every_thread")
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_every_run_and_batch_job_counted_once_under_a_live_flaky_ci(seed: int) -> None:
    finished, expected, failures, expected_failures, _ = run_soak(seed)
    assert finished == expected
    assert failures == expected_failures


@pytest.mark.usefixtures("frozen_on_every_thread")
@pytest.mark.parametrize("seed", [5, 6, 7, 8])
def test_counted_once_across_a_restart_with_the_state_file(seed: int, tmp_path: Path) -> None:
    finished, expected, failures, expected_failures, _ = run_soak(
        seed, state_file=str(tmp_path / "state.json")
    )
    assert finished == expected
    assert failures == expected_failures
