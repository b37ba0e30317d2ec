"""Exactly-once for workflow runs and batch (inventory trigger) jobs, as tests/test_scenarios.py
proves it for jobs: the whole exporter against the simulator over real HTTP, time under
freezegun, scripted scenarios, and what /metrics counts compared with the simulator's record.

Each scenario runs for runs (a workflow's executions: service "workflow", tag "Workflow",
listed without times, a Failed one described once for its failed step) and for batch jobs
(service "batch", queue_id "", tag = their Type, a job's life cycle), where it fits both. The
target polls both services every time, so the one a scenario does not drive must count nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from clients import bare_client
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.accounting import StreamKey, StreamTracker, listing_boundary
from exporter.api_stats import ApiStats
from exporter.ci.client import format_creation_time
from exporter.ci.services import SERVICES
from exporter.collector import CICollector
from exporter.config import Config, RateLimitConfig, RetryConfig, ServiceConfig, TargetConfig
from exporter.credentials import Credentials
from exporter.poller import Poller
from exporter.simulator import Clock, Fault, SimJob, Simulator
from exporter.simulator.model import SimBucket
from exporter.simulator.workflows import add_batch_job, add_workflow, start_run, steps_of

SECRET_ID = "AKIDflowscenario00000000000000000000"
SECRET_KEY = "flow-scenario-key-000000000000000000"
BUCKET = "flowscenario-1250000000"
REGION = "ap-chongqing"
INTERVAL = 60
TOLERANCE = 30.0  # clock_skew_tolerance's default

# Counted per (queue_id, tag, state), as the metric labels them.
Counts = Counter[tuple[str, str, str]]


@dataclass(frozen=True)
class Kind:
    """What a scenario drives: workflow runs or batch jobs."""

    name: str
    service: str
    path: str  # the listing's endpoint family (describe-by-id is under it too)
    tags: tuple[str, ...]


RUNS = Kind("runs", "workflow", "/workflowexecution", ("Workflow",))
BATCH_JOBS = Kind("batch", "batch", "/inventorytriggerjob", ("Job", "Workflow"))
KINDS = [pytest.param(RUNS, id="runs"), pytest.param(BATCH_JOBS, id="batch")]
OTHER = {RUNS: BATCH_JOBS, BATCH_JOBS: RUNS}


@dataclass
class World:
    sim: Simulator
    ci: SimBucket
    poller: Poller
    frozen: Any
    registry: CollectorRegistry
    kind: Kind
    workflow: str  # a workflow of the bucket (runs are its executions)
    _tags: Iterator[str] = field(init=False)

    def __post_init__(self) -> None:
        self._tags = itertools.cycle(self.kind.tags)

    # -- scripting CI ------------------------------------------------------------------------

    def start(self, at: float | None = None, workflow: str | None = None) -> str:
        """A run or a batch job, Running from `at` (created then too)."""
        if self.kind is RUNS:
            return start_run(self.ci, workflow or self.workflow, at=at)
        job = add_batch_job(self.ci, next(self._tags), at=at)
        self.ci.start_job(job, at=at)
        return job

    def submit(self, at: float | None = None) -> str:
        """One waiting to start: a batch job Submitted (a run is never Submitted: Running)."""
        if self.kind is RUNS:
            return start_run(self.ci, self.workflow, at=at)
        return add_batch_job(self.ci, next(self._tags), at=at)

    def finish(self, job: str, state: str = "Success", at: float | None = None) -> None:
        if self.ci.job_state(job) == "Submitted":
            self.ci.start_job(job, at=at)
        code = f"E_{job[-4:]}" if state == "Failed" else None
        self.ci.finish_job(job, state, code=code, message="it broke", at=at)

    def run(self, state: str = "Success", at: float | None = None, **kw: str) -> str:
        """One created, started and finished at once."""
        job = self.start(at=at, **kw)
        self.finish(job, state, at=None if at is None else at + 1)
        return job

    # -- polling -----------------------------------------------------------------------------

    def poll(self, seconds: float = INTERVAL) -> None:
        self.frozen.tick(seconds)
        self.poller.poll_once()

    def settle(self) -> None:
        """CI still, no fault: two more polls (a tracked job's end is seen by the next one)."""
        self.sim.faults.clear()
        self.poll()
        self.poll()
        assert self.up() == 1

    # -- what the exporter shows -------------------------------------------------------------

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

    def up(self) -> float | None:
        return self.value("tencent_ci_up", bucket=BUCKET)

    def counted(self, kind: Kind | None = None) -> Counts:
        """tencent_ci_jobs_finished_total of the kind's service, the zeros left out."""
        service = (kind or self.kind).service
        counts: Counts = Counter()
        for (name, labels), v in self.metrics().items():
            ls = dict(labels)
            if name == "tencent_ci_jobs_finished_total" and ls["service"] == service and v:
                counts[(ls["queue_id"], ls["tag"], ls["state"])] += int(v)
        return counts

    def failures(self) -> Counter[str]:
        codes: Counter[str] = Counter()
        for (name, labels), v in self.metrics().items():
            ls = dict(labels)
            if name == "tencent_ci_job_failures_total" and ls["service"] == self.kind.service:
                codes[ls["code"]] += int(v)
        return +codes

    def active(self, state: str = "Running") -> float:
        """tencent_ci_jobs in that state, over the kind's streams."""
        return sum(
            v
            for (name, labels), v in self.metrics().items()
            if name == "tencent_ci_jobs"
            and ("service", self.kind.service) in labels
            and ("state", state) in labels
        )

    # -- the simulator's record --------------------------------------------------------------

    def jobs(self) -> list[SimJob]:
        return [j for j in self.ci.jobs() if j.service == self.kind.service]

    def finished_ids(self) -> set[str]:
        return {j.job_id for j in self.jobs() if j.end_time is not None}

    def truth(self, baseline: set[str], since: set[str] | None = None) -> Counts:
        """What finished, not in `baseline` (and in `since`, if given), labelled as exported."""
        return Counter(
            (j.queue_id if self.kind is RUNS else "", j.tag, j.state)
            for j in self.jobs()
            if j.end_time is not None
            and j.job_id not in baseline
            and (since is None or j.job_id in since)
        )

    def true_failures(self, baseline: set[str]) -> Counter[str]:
        """A Failed run counts under its failed step's type; a batch job under its Code."""
        now = self.ci.now()
        return Counter(
            next(s.type for s in steps_of(j, now) if s.state == "Failed")
            if self.kind is RUNS
            else j.code
            for j in self.jobs()
            if j.state == "Failed" and j.job_id not in baseline
        )

    def label(self, state: str, tag: str | None = None) -> tuple[str, str, str]:
        if self.kind is RUNS:
            return (self.workflow, "Workflow", state)
        return ("", tag or self.kind.tags[0], state)

    def described(self, job_id: str) -> int:
        """How often the job was described by id."""
        return sum(1 for r in self.sim.requests if r.path == f"{self.kind.path}/{job_id}")

    def tracker(self, tag: str | None = None) -> StreamTracker:
        queue = self.workflow if self.kind is RUNS else ""
        key = StreamKey(self.kind.service, queue, tag or self.kind.tags[0])
        return self.poller.targets[0].streams.trackers[key]

    def trackers(self) -> list[StreamTracker]:
        trackers = self.poller.targets[0].streams.trackers
        return [t for key, t in trackers.items() if key.service == self.kind.service]

    def remembered(self, job_id: str) -> bool:
        """Whether a stream of the kind remembers the job as counted."""
        return any(job_id in t.seen for t in self.trackers())


def by_state(counts: Counts) -> Counter[str]:
    states: Counter[str] = Counter()
    for (_, _, state), n in counts.items():
        states[state] += n
    return states


def _config(sim: Simulator, **overrides: Any) -> Config:
    target = TargetConfig(
        BUCKET,
        REGION,
        sim.endpoint(BUCKET),
        Credentials(SECRET_ID, SECRET_KEY),
        (ServiceConfig("workflow", ("Workflow",)), ServiceConfig("batch", ("Workflow", "Job"))),
    )
    settings: dict[str, Any] = {
        "poll_interval": INTERVAL,
        "request_timeout": 2.0,
        # Every stream at every poll unless a scenario says otherwise (the soak: the default).
        "idle_tag_backoff": 0,
        "rate_limit": RateLimitConfig(requests_per_second=1000, burst=1000, concurrency=4),
        # A failed call fails the poll at once: retries are the live soak's.
        "retry": RetryConfig(attempts=1),
        **overrides,
    }
    return Config(targets=(target,), **settings)


def _poller(config: Config, stats: ApiStats) -> tuple[Poller, CollectorRegistry]:
    poller = Poller(config, stats, client_factory=bare_client)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(poller, stats, "test"))
    return poller, registry


@contextmanager
def make_world(
    frozen: Any, kind: Kind, *, bounds: str = "exclusive", offset: float = 0.0, **config: Any
) -> Iterator[World]:
    sim = Simulator({SECRET_ID: SECRET_KEY}, creation_bounds=bounds, seed=11)
    sim.clock_offset = offset
    ci = sim.add_bucket(BUCKET, REGION, services=[*SERVICES, "workflow", "batch"])
    workflow = add_workflow(ci, "transcode-flow")
    sim.start()
    poller, registry = _poller(_config(sim, **config), ApiStats())
    try:
        yield World(sim, ci, poller, frozen, registry, kind, workflow)
    finally:
        poller.stop()
        sim.stop()


def restart(w: World, config: Config) -> None:
    """A new exporter process with the same configuration (and state file, if any)."""
    w.poller.stop()
    w.poller, w.registry = _poller(config, w.poller.stats)


@pytest.fixture
def frozen(frozen_on_every_thread: None) -> Iterator[Any]:
    with freeze_time("2026-11-21 04:00:00", tick=False) as frozen_time:
        yield frozen_time


# -- baseline, between polls -----------------------------------------------------------------


@pytest.mark.parametrize("bounds", ["exclusive", "inclusive"])
@pytest.mark.parametrize("kind", KINDS)
def test_baseline_and_what_finishes_between_polls_are_counted_once(
    frozen: Any, kind: Kind, bounds: str
) -> None:
    with make_world(frozen, kind, bounds=bounds) as w:
        # Baseline: finished before the exporter started, never counted.
        for state in ("Success", "Success", "Failed", "Cancel"):
            w.run(state)
        long_runner = w.start()
        waiting = w.submit()
        frozen.tick(20)
        w.run("Failed")  # in the first window, finished before the first poll: baseline too
        baseline = w.finished_ids()
        w.poller.poll_once()
        assert w.up() == 1
        assert w.counted() == Counter()
        assert w.failures() == Counter()
        assert w.active("Running") == (2 if kind is RUNS else 1)
        if kind is BATCH_JOBS:
            assert w.active("Submitted") == 1

        # Between two polls: the known ones finish, new ones come and go, one stays.
        frozen.tick(10)
        w.run("Success")
        w.run("Failed")
        w.run("Cancel")
        w.finish(long_runner, "Success")
        w.finish(waiting, "Failed")
        stays = w.start()
        w.poll(50)
        expected = w.truth(baseline)
        assert sum(expected.values()) == 5
        assert w.counted() == expected
        assert w.failures() == w.true_failures(baseline)
        assert sum(w.failures().values()) == 2
        assert w.active("Running") == 1
        assert w.counted(OTHER[kind]) == Counter()

        # Nothing new: the counters hold still however often we poll.
        for _ in range(3):
            w.poll()
        assert w.counted() == expected
        w.finish(stays, "Cancel")
        w.poll()
        assert w.counted() == w.truth(baseline)
        assert sum(w.counted().values()) == 6
        if kind is RUNS:
            # Each Failed run described once, baseline ones (in the first window) included.
            failed = [j.job_id for j in w.jobs() if j.state == "Failed"]
            assert [w.described(run) for run in failed] == [1] * len(failed)


# -- window edges ------------------------------------------------------------------------------


@pytest.mark.parametrize("bounds", ["exclusive", "inclusive"])
@pytest.mark.parametrize("kind", KINDS)
def test_jobs_created_at_the_window_edges_are_counted_once(
    frozen: Any, kind: Kind, bounds: str
) -> None:
    """The window of a poll reaches back the clock tolerance before the poll began: what CI
    stamps exactly that far back (and a second either side) is found, and counted once though
    the next listing returns it again."""
    with make_world(frozen, kind, bounds=bounds) as w:
        first = int(w.sim.now())
        edges = [first - int(TOLERANCE) + d for d in (-1, 0, 1)]
        # Before the first poll: at each edge, one finished (baseline) and one still running.
        for edge in edges:
            w.run("Success", at=edge)
        running = [w.start(at=edge) for edge in edges]
        baseline = w.finished_ids()
        w.poller.poll_once()
        assert {t.window_start for t in w.trackers()} == {listing_boundary(first, 0.0, TOLERANCE)}
        assert w.counted() == Counter()
        assert w.active() == 3

        # After it, CI stamps three at the same edges (its job clock lagging): the first poll
        # could not list them, the next one must.
        late = [w.run("Failed", at=edge) for edge in edges]
        for job in running:
            w.finish(job, "Cancel")
        # And three at the next poll's edges, finished before it.
        second = first + INTERVAL
        next_edges = [w.run("Success", at=second - int(TOLERANCE) + d) for d in (-1, 0, 1)]
        w.poll()
        expected = w.truth(baseline)
        assert sum(expected.values()) == 9
        assert w.counted() == expected
        assert w.failures() == w.true_failures(baseline)
        # Those of the first edges are behind the new window (forgotten), the last three not.
        assert not [job for job in late if w.remembered(job)]
        assert all(w.remembered(job) for job in next_edges)

        # The next listing starts before those last three: returned again, not counted again.
        w.sim.reset_requests()
        w.poll()
        starts = [
            r.params["startCreationTime"]
            for r in w.sim.requests
            if r.path == kind.path and "startCreationTime" in r.params
        ]
        assert starts and max(starts) <= format_creation_time(second - int(TOLERANCE) - 1)
        w.poll()
        assert w.counted() == expected


# -- CI's clock ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "offset"),
    [("date", 20.0), ("date", -20.0), ("jobs", 20.0), ("jobs", -20.0)],
    ids=["ci-ahead", "ci-behind", "job-clock-ahead", "job-clock-behind"],
)
@pytest.mark.parametrize("kind", KINDS)
def test_ci_clock_ahead_or_behind(frozen: Any, kind: Kind, clock: str, offset: float) -> None:
    """CI's clock 20 s off ours ("date": its Date header and its jobs' times), or only the
    clock stamping its jobs 20 s off its Date header ("jobs"): within the tolerance, nothing
    is lost and nothing counted twice."""
    with make_world(frozen, kind, offset=offset if clock == "date" else 0.0) as w:
        if clock == "jobs":
            w.ci.clock = Clock(offset=offset)
        for state in ("Success", "Failed"):
            w.run(state)
        runner = w.start()
        frozen.tick(25)
        w.run("Cancel")  # just before the start, on whichever clock: baseline
        baseline = w.finished_ids()
        w.poller.poll_once()
        for i in range(5):
            frozen.tick(7)
            w.run("Failed" if i % 2 else "Success")
        w.finish(runner, "Success")
        w.poll(25)
        w.poll()
        expected = w.truth(baseline)
        assert by_state(expected) == Counter({"Success": 4, "Failed": 2})
        assert w.counted() == expected
        assert w.failures() == w.true_failures(baseline)
        measured = w.poller.targets[0].client.clock_offset
        assert measured == pytest.approx(offset if clock == "date" else 0.0, abs=1.5)


# -- outages -----------------------------------------------------------------------------------

OUTAGES = ("http_500", "http_503", "http_429", "reset", "malformed", "truncated", "html")


@pytest.mark.parametrize("kind", KINDS)
def test_outage_of_several_polls_loses_nothing_and_counts_nothing_twice(
    frozen: Any, kind: Kind
) -> None:
    with make_world(frozen, kind, request_timeout=0.5) as w:
        sim = w.sim
        long_runner = w.start()
        baseline = w.finished_ids()
        w.poller.poll_once()
        w.run("Success")
        w.poll()
        assert sum(w.counted().values()) == 1
        runners = []
        for fault in OUTAGES:
            sim.faults.add(Fault(fault, path=kind.path))
            w.run("Failed")
            w.run("Success")
            runners.append(w.start())
            if fault == "reset":
                w.finish(long_runner, "Success")  # created long before the window: described
            w.poll()
            assert w.up() == 0, fault
            sim.faults.clear()
        for job in runners[:4]:
            w.finish(job, "Cancel")
        errors = {
            dict(labels)["error"]
            for (name, labels), v in w.metrics().items()
            if name == "tencent_ci_api_errors_total" and dict(labels)["endpoint"] == kind.path
        }
        assert {"InternalError", "SlowDown", "connection", "invalid_response"} <= errors
        w.sim.reset_requests()
        w.poll()
        assert w.up() == 1
        assert w.described(long_runner) == 1
        w.poll()
        expected = w.truth(baseline)
        assert sum(expected.values()) == 1 + 2 * len(OUTAGES) + 1 + 4
        assert w.counted() == expected
        assert w.failures() == w.true_failures(baseline)
        assert w.active() == len(OUTAGES) - 4
        w.settle()
        assert w.counted() == expected


@pytest.mark.parametrize("kind", KINDS)
def test_an_outage_from_the_first_poll_loses_nothing_that_finishes_after_the_start(
    frozen: Any, kind: Kind
) -> None:
    """Every poll of the runs (or batch jobs) fails from the start for three polls: what was
    created and finished after the start is counted at the first success. (A run's listing
    gives no EndTime: that it finished after the start is known from its creation.)"""
    with make_world(frozen, kind) as w:
        w.run("Success")
        baseline = w.finished_ids()
        outage = w.sim.faults.add(Fault("http_503", path=kind.path))
        w.poller.poll_once()
        assert w.up() == 0
        frozen.tick(TOLERANCE + 15)  # beyond the tolerance: these surely came after the start
        for state in ("Success", "Success", "Failed", "Cancel"):
            w.run(state)
        w.poll()
        w.poll()
        assert w.up() == 0
        w.run("Success")
        w.sim.faults.remove(outage)
        w.poll()
        assert w.up() == 1
        w.poll()
        expected = w.truth(baseline)
        assert sum(expected.values()) == 5
        assert w.counted() == expected
        assert w.failures() == w.true_failures(baseline)


# -- restarts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_a_restart_with_the_state_file_counts_what_finished_while_down_once(
    frozen: Any, tmp_path: Path, kind: Kind, with_state: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with make_world(frozen, kind) as w:
        state_file = str(tmp_path / "state.json") if with_state else None
        config = replace(w.poller.config, state_file=state_file)
        restart(w, config)
        w.run("Success")  # baseline
        long_runner = w.start()
        waiting = w.submit()
        w.poller.poll_once()
        w.run("Success")
        w.run("Failed")
        w.poll()
        assert sum(w.counted().values()) == 2
        # Down for ten minutes: the long runner finishes, the waiting one fails, and one comes
        # and goes.
        w.poller.stop()
        finished_before = w.finished_ids()
        frozen.tick(600)
        w.finish(long_runner, "Success")
        w.finish(waiting, "Failed")
        w.run("Cancel")
        down = w.finished_ids() - finished_before
        caplog.clear()
        caplog.set_level(logging.WARNING, logger="exporter")
        restart(w, config)
        w.poll()
        w.poll()
        assert not caplog.records  # the saved state taken up whole
        # Counters start again at 0: what finished while down is counted once, nothing twice.
        if with_state:
            expected = w.truth(set(), since=down)
            assert sum(expected.values()) == 3
            assert w.counted() == expected
        else:  # without one, the downtime is a new baseline: nothing of it is counted
            assert w.counted() == Counter()
        after = {w.run("Success")}
        w.poll()
        w.poll()
        assert w.counted() == w.truth(set(), since=(down if with_state else set()) | after)


# -- workflows coming and going -----------------------------------------------------------------


def test_a_paused_workflow_shows_paused_counts_its_runs_and_resumes(frozen: Any) -> None:
    with make_world(frozen, RUNS) as w:
        flow = w.workflow
        carries_on = w.start()
        w.poller.poll_once()
        assert w.value("tencent_ci_queue_paused", queue_id=flow) == 0
        w.ci.set_queue_paused(flow, True)
        with pytest.raises(ValueError, match="paused"):
            w.start()  # a paused workflow starts no runs
        w.poll()
        assert w.value("tencent_ci_queue_paused", queue_id=flow) == 1
        assert w.active() == 1  # its running run carries on
        w.finish(carries_on, "Failed")
        w.poll()
        assert w.counted() == Counter({w.label("Failed"): 1})
        w.ci.set_queue_paused(flow, False)
        w.run("Success")
        w.run("Cancel")
        w.poll()
        assert w.value("tencent_ci_queue_paused", queue_id=flow) == 0
        assert w.counted() == w.truth(set())
        assert sum(w.counted().values()) == 3
        w.settle()
        assert sum(w.counted().values()) == 3


def test_a_workflow_deleted_and_one_added_between_polls(frozen: Any) -> None:
    with make_world(frozen, RUNS) as w:
        doomed, kept = w.workflow, add_workflow(w.ci, "kept-flow")
        w.run("Success", workflow=doomed)  # baseline
        doomed_runner = w.start(workflow=doomed)
        w.poller.poll_once()
        w.run("Failed", workflow=doomed)
        w.run("Success", workflow=kept)
        w.poll()
        assert w.counted() == Counter(
            {(doomed, "Workflow", "Failed"): 1, (kept, "Workflow", "Success"): 1}
        )
        # Between two polls: the doomed workflow ends a run and goes, runs and all (CI keeps
        # nothing of it); a new one comes with runs finished and running.
        w.finish(doomed_runner, "Success")
        w.run("Success", workflow=doomed)
        w.ci.remove_queue(doomed)
        added = add_workflow(w.ci, "new-flow")
        w.run("Success", workflow=added)
        w.run("Failed", workflow=added)
        added_runner = w.start(workflow=added)
        w.run("Cancel", workflow=kept)
        w.poll()
        assert not [k for k in w.metrics() if ("queue_id", doomed) in k[1]]
        assert w.value("tencent_ci_queue_info", queue_id=added) == 1
        # Every run of a workflow that came after the first listing counts.
        assert w.counted() == Counter(
            {
                (kept, "Workflow", "Success"): 1,
                (kept, "Workflow", "Cancel"): 1,
                (added, "Workflow", "Success"): 1,
                (added, "Workflow", "Failed"): 1,
            }
        )
        w.finish(added_runner, "Success")
        w.settle()
        assert w.counted() == w.truth(set())  # the doomed one's runs went with it
        assert w.failures() == w.true_failures(set())


# -- gone from the listings: described by id ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_one_gone_from_the_listings_is_described_by_id(frozen: Any, kind: Kind) -> None:
    """A long runner, created before the window, is in neither listing once it ends: it is
    described by id (one id a call) and counted; one that CI deleted is not counted."""
    with make_world(frozen, kind) as w:
        ends, deleted = w.start(), w.start()
        w.poller.poll_once()
        for _ in range(3):  # the window moves past their creation
            w.poll()
        w.finish(ends, "Failed")
        w.sim.reset_requests()
        w.poll()
        assert w.described(ends) == 1
        assert w.counted() == Counter({w.label("Failed", kind.tags[0]): 1})
        assert w.failures() == w.true_failures(set())
        w.ci.delete_job(deleted)
        w.sim.reset_requests()
        w.poll()
        assert w.described(deleted) == 1
        # Not counted: the stream notes that CI no longer knew it.
        assert sum(t.vanished for t in w.trackers()) == 1
        assert w.active() == 0
        w.settle()
        assert w.counted() == Counter({w.label("Failed", kind.tags[0]): 1})


# -- idle back-off -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_idle_stream_polled_less_often_loses_nothing(frozen: Any, kind: Kind) -> None:
    with make_world(frozen, kind, idle_tag_backoff=600) as w:
        w.poller.poll_once()
        for _ in range(8):  # idle long enough to be spaced out
            w.poll()
        assert w.value("tencent_ci_idle_streams", bucket=BUCKET)
        for state in ("Success", "Failed", "Cancel", "Success"):
            w.run(state)
        for _ in range(10):
            w.poll()
        assert w.counted() == w.truth(set())
        assert sum(w.counted().values()) == 4
