"""Every fault the simulator injects, one test each, through the real Poller and collector over
HTTP: two buckets share keys and a request gate, the fault hits one of them. During the fault
nothing crashes, `tencent_ci_up` and the API error counters tell the truth (every attempt
counted, as the simulator saw it), the other bucket is untouched and no job is counted that
did not finish; after it, every job counted exactly once against the simulator's own record.

Time is frozen (freezegun); the client's sleeps are recorded, never slept, on a fake clock
that the pacer and the gate share."""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.collector import CICollector
from exporter.config import Config, ServiceConfig, TargetConfig
from exporter.credentials import Credentials, StaticCredentials
from exporter.poller import Poller
from exporter.ratelimit import Pacer, RequestGate, RetryPolicy
from exporter.simulator import Fault, SimBucket, Simulator
from exporter.simulator.faults import FAULT_KINDS
from exporter.simulator.records import Clock
from exporter.simulator.streams import Stream, Workload

SECRET_ID = "AKIDfaults00000000000000000000000000"
SECRET_KEY = "faults-secret-key-000000000000000000"
SICK, WELL = "sick-1250000000", "well-1250000000"
REGION = "ap-guangzhou"
TAGS = ("Transcode", "Snapshot")
INTERVAL = 60
RETRY = RetryPolicy(attempts=3, initial_backoff=0.5, max_backoff=10.0)
MAX_BODY = 1 << 20

Labels = frozenset[tuple[str, str]]
READ = tuple(
    f"tencent_ci_{name}"
    for name in (
        "up{",
        "jobs_finished_total{",
        "job_failures_total{",
        "api_requests_total{",
        "api_errors_total{",
        "api_retried_requests_total{",
        "api_throttled_requests_total{",
        "api_request_spacing_seconds{",
    )
)


class FakeSleep:
    """Every wait of the clients (retries, pacing, the gate) recorded and skipped; the clock
    the pacers and the gate read moves by what was waited."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def __call__(self, stopping: threading.Event, seconds: float) -> bool:
        with self._lock:
            self.waits.append(seconds)
            self.now += seconds
        return stopping.is_set()


@dataclass
class World:
    sim: Simulator
    frozen: Any
    poller: Poller
    registry: CollectorRegistry
    sleeps: FakeSleep
    workloads: dict[str, Workload]
    baseline: dict[str, set[str]] = field(default_factory=dict)
    _samples: dict[tuple[str, Labels], float] | None = None

    def bucket(self, name: str) -> SimBucket:
        return self.sim.bucket(name)

    def poll(self, seconds: float = INTERVAL) -> None:
        self.frozen.tick(seconds)
        for workload in self.workloads.values():
            workload.advance(workload.bucket.now())
        self.poller.poll_once()
        self._samples = None

    def samples(self) -> dict[tuple[str, Labels], float]:
        """The series these tests read, from one scrape per poll (histograms left out: parsing
        them would be most of the run time)."""
        if self._samples is None:
            text = generate_latest(self.registry).decode()
            wanted = "\n".join(line for line in text.splitlines() if line.startswith(READ))
            self._samples = {
                (sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(wanted + "\n")
                for sample in family.samples
            }
        return self._samples

    def total(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples().items() if n == name and wanted <= ls)

    def up(self, bucket: str) -> float | None:
        found = [
            v
            for (n, ls), v in self.samples().items()
            if n == "tencent_ci_up" and ("bucket", bucket) in ls
        ]
        return found[0] if found else None

    def counted(self, bucket: str) -> tuple[Counter[tuple[str, ...]], Counter[str]]:
        finished: Counter[tuple[str, ...]] = Counter()
        failures: Counter[str] = Counter()
        for (name, ls), value in self.samples().items():
            labels = dict(ls)
            if labels.get("bucket") != bucket or not value:
                continue
            if name == "tencent_ci_jobs_finished_total":
                finished[(labels["queue_id"], labels["tag"], labels["state"])] += int(value)
            elif name == "tencent_ci_job_failures_total":
                failures[labels["code"]] += int(value)
        return finished, failures

    def truth(self, bucket: str) -> tuple[Counter[tuple[str, ...]], Counter[str]]:
        """What the simulator says finished since the exporter started."""
        done = [
            j
            for j in self.bucket(bucket).jobs()
            if j.end_time is not None and j.job_id not in self.baseline[bucket]
        ]
        finished = Counter((j.queue_id, j.tag, j.state) for j in done)
        failures = Counter(j.code for j in done if j.state == "Failed")
        return finished, failures

    def assert_never_counted_more_than_finished(self) -> None:
        for name in (SICK, WELL):
            finished, failures = self.counted(name)
            truth_finished, truth_failures = self.truth(name)
            assert not finished - truth_finished, name
            assert not failures - truth_failures, name

    def api(self, name: str, bucket: str = SICK, **labels: str) -> float:
        return self.total(f"tencent_ci_api_{name}_total", bucket=bucket, **labels)

    def assert_every_attempt_counted(self) -> None:
        """The exporter's request counters agree with the simulator's log, bucket by bucket."""
        for name in (SICK, WELL):
            assert self.api("requests", name) == self.sim.request_count(bucket=name), name

    def recover(self, clear: bool = True) -> None:
        """The fault cleared: two polls later both targets are up and every count exact."""
        if clear:
            self.sim.faults.clear()
        self.poll()
        self.poll()
        assert self.up(SICK) == 1 and self.up(WELL) == 1
        for name in (SICK, WELL):
            finished, failures = self.counted(name)
            truth_finished, truth_failures = self.truth(name)
            assert sum(truth_finished.values()) > 20, "the run must finish enough jobs to tell"
            assert finished == truth_finished, name
            assert failures == truth_failures, name


def add_bucket(sim: Simulator, name: str, seed: int) -> Workload:
    ci = sim.add_bucket(name, REGION)
    queues = [ci.add_queue("media", name=f"{name[:4]}-q{i}", max_concurrent=8) for i in range(2)]
    streams = [
        Stream(q, tag, rate=0.05, median_run=run)
        for q in queues
        for tag, run in zip(TAGS, (8, 40), strict=True)
    ]
    return Workload(ci, seed, streams, start=ci.now() - 3600, failure_ratio=0.25, cancel_ratio=0.1)


@contextmanager
def make_world(frozen: Any, *, timeout: float = 2.0) -> Iterator[World]:
    sim = Simulator({SECRET_ID: SECRET_KEY}, seed=11)
    workloads = {name: add_bucket(sim, name, seed) for seed, name in enumerate((SICK, WELL))}
    for workload in workloads.values():
        workload.advance(workload.bucket.now())  # an hour of history: the baseline
    sim.start()
    sleeps = FakeSleep()
    stopping = threading.Event()
    # Both buckets sign with the same keys, so they share one gate, as the exporter does.
    gate = RequestGate(15.0, 30, 4, clock=sleeps.clock, sleep=sleeps)
    rng = random.Random(3)

    def build(target: TargetConfig, config: Config, stats: ApiStats) -> CIClient:
        return CIClient(
            bucket=target.bucket,
            region=target.region,
            endpoint=target.endpoint,
            credentials=StaticCredentials(target.credentials),
            timeout=config.request_timeout,
            stats=stats,
            max_body_bytes=MAX_BODY,
            retry=RETRY,
            gate=gate,
            stopping=stopping,
            sleep=sleeps,
            random=rng.random,
            pacer=Pacer(clock=sleeps.clock),
        )

    targets = tuple(
        TargetConfig(
            name,
            REGION,
            sim.endpoint(name),
            Credentials(SECRET_ID, SECRET_KEY),
            (ServiceConfig("media", TAGS),),
        )
        for name in (SICK, WELL)
    )
    stats = ApiStats()
    poller = Poller(
        Config(targets, poll_interval=INTERVAL, request_timeout=timeout),
        stats,
        client_factory=build,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(poller, stats, "test"))
    world = World(sim, frozen, poller, registry, sleeps, workloads)
    world.baseline = {
        name: {j.job_id for j in sim.bucket(name).jobs() if j.end_time is not None}
        for name in (SICK, WELL)
    }
    try:
        poller.poll_once()
        assert world.up(SICK) == 1 and world.up(WELL) == 1
        world.poll()
        yield world
    finally:
        stopping.set()
        poller.stop()
        sim.stop()


@pytest.fixture
def world() -> Iterator[World]:
    with freeze_time("2026-11-21 06:00:00", tick=False) as frozen, make_world(frozen) as w:
        yield w


def fail_polls(world: World, fault: Fault, polls: int = 2) -> None:
    """Two polls with the fault on the sick bucket: it is down, the other up, nothing
    over-counted; then every attempt is in the request counters."""
    fault.bucket = SICK
    world.sim.faults.add(fault)
    for _ in range(polls):
        world.poll()
        assert world.up(SICK) == 0
        assert world.up(WELL) == 1
        world.assert_never_counted_more_than_finished()
    world.assert_every_attempt_counted()
    assert world.api("errors", WELL) == 0


def warnings_naming(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    lines = []
    for record in caplog.records:
        line = record.getMessage() + " " + " ".join(str(v) for v in vars(record).values())
        if record.levelno >= logging.WARNING and text in line:
            lines.append(line)
    return lines


# -- CI's errors ----------------------------------------------------------------------------


def test_http_500(world: World) -> None:
    fault = Fault("http_500")
    fail_polls(world, fault)
    assert world.api("errors", error="InternalError") == fault.hits
    assert world.api("retried_requests") > 0
    # Every request tried three times: two retries per request that failed.
    assert world.api("retried_requests") == 2 * fault.hits / 3
    world.recover()


def test_http_500_for_a_while_is_absorbed_by_retries(world: World) -> None:
    fault = Fault("http_500", times=2, bucket=SICK)  # fewer failures in a row than attempts
    world.sim.faults.add(fault)
    world.poll()
    assert world.up(SICK) == 1
    assert world.api("errors", error="InternalError") == 2
    assert world.api("retried_requests") == 2
    world.assert_every_attempt_counted()
    world.recover()


def test_http_503_is_throttling(world: World) -> None:
    fault = Fault("http_503")
    fail_polls(world, fault)
    assert world.api("errors", error="SlowDown") == fault.hits
    assert world.api("throttled_requests") == fault.hits
    spacing = world.total("tencent_ci_api_request_spacing_seconds", bucket=SICK)
    assert spacing > 0  # the target slowed itself down
    assert world.total("tencent_ci_api_request_spacing_seconds", bucket=WELL) == 0
    world.recover()


def test_http_429_waits_for_retry_after(world: World) -> None:
    fault = Fault("http_429", retry_after=7)
    fail_polls(world, fault, polls=1)
    assert world.api("errors", error="SlowDown") == fault.hits
    assert world.api("throttled_requests") == fault.hits
    retry_waits = [w for w in world.sleeps.waits if w >= 7]
    assert len(retry_waits) >= world.api("retried_requests") > 0
    world.recover()


def test_http_429_with_an_http_date(world: World) -> None:
    fault = Fault("http_429", retry_after=42, retry_after_as_date=True)
    fail_polls(world, fault, polls=1)
    assert 42.0 in world.sleeps.waits
    world.recover()


def test_slow_down_in_the_body(world: World) -> None:
    fault = Fault("slow_down")  # 400 with Code SlowDown: only the body says it
    fail_polls(world, fault)
    assert world.api("errors", error="SlowDown") == fault.hits
    assert world.api("requests", status="400") == fault.hits
    assert world.api("throttled_requests") == fault.hits
    world.recover()


def test_html_error_page_from_a_gateway(world: World) -> None:
    fault = Fault("html", status=502)
    fail_polls(world, fault)
    assert world.api("errors", error="http_502") == fault.hits
    assert world.api("retried_requests") > 0
    world.recover()


def test_html_page_with_status_200(world: World) -> None:
    fault = Fault("html", status=200)
    fail_polls(world, fault)
    assert world.api("errors", error="invalid_response") == fault.hits
    world.recover()


# -- the connection -------------------------------------------------------------------------


def test_slow_answer_times_out(frozen_only: Any) -> None:
    with make_world(frozen_only, timeout=0.2) as world:
        # Held on the queue listing only, so the test waits 3 x 0.2 s of real time per poll.
        fault = Fault("slow", path="/queue", delay=1.0, bucket=SICK)
        world.sim.faults.add(fault)
        world.poll()
        assert world.up(SICK) == 0 and world.up(WELL) == 1
        assert world.api("errors", error="timeout") == 3
        assert world.api("retried_requests", endpoint="/queue") == 2
        # The streams of the queues already known were still polled and counted.
        world.assert_never_counted_more_than_finished()
        world.recover()


def test_connection_reset(world: World) -> None:
    fault = Fault("reset")
    fail_polls(world, fault)
    assert world.api("errors", error="connection") == fault.hits
    assert world.api("requests", status="error") == fault.hits
    world.recover()


def test_truncated_body(world: World) -> None:
    fault = Fault("truncated")
    fail_polls(world, fault)
    assert world.api("errors", error="connection") == fault.hits
    world.recover()


# -- the body -------------------------------------------------------------------------------


def test_malformed_xml(world: World) -> None:
    fault = Fault("malformed")
    fail_polls(world, fault)
    assert world.api("errors", error="invalid_response") == fault.hits
    world.recover()


def test_oversized_body_is_refused_without_retries(world: World) -> None:
    fault = Fault("oversized", size=2 * MAX_BODY)
    fail_polls(world, fault)
    assert world.api("errors", error="invalid_response") == fault.hits
    assert world.api("retried_requests") == 0
    world.recover()


def test_repeated_next_token(world: World) -> None:
    fault = Fault("repeat_token")
    fail_polls(world, fault)
    # The first page of each listing is fine; the second repeats its token: that answer is
    # the invalid one, and it is not retried (it would repeat again).
    followed = [r for r in world.sim.requests if r.bucket == SICK and "nextToken" in r.params]
    assert world.api("errors", error="invalid_response") == len(followed) > 0
    assert world.api("retried_requests") == 0
    assert "NextToken" in world.poller.snapshot().targets[0].last_error
    world.recover()


@pytest.mark.parametrize("job_field", ["JobId", "State", "CreationTime"])
def test_jobs_missing_a_field_they_cannot_be_counted_without(world: World, job_field: str) -> None:
    """Without its id or state a job cannot be counted; without its creation time it cannot
    be placed in a window (and could be counted twice): the answer is invalid, the stream
    keeps its state and catches up afterwards."""
    fault = Fault("missing_field", job_field=job_field)
    fail_polls(world, fault)
    assert world.api("errors", error="invalid_response") > 0
    assert job_field in world.poller.snapshot().targets[0].last_error
    world.recover()


@pytest.mark.parametrize("job_field", ["Tag", "QueueId", "Code", "StartTime", "EndTime"])
def test_jobs_missing_a_field_they_can_be_counted_without(world: World, job_field: str) -> None:
    """Tag and QueueId are the ones the listing asked for; a failure without Code counts as
    code "unknown", so here the truth is taken as such; times not reached are None."""
    world.sim.faults.add(Fault("missing_field", job_field=job_field, bucket=SICK))
    world.poll()
    world.poll()
    assert world.up(SICK) == 1 and world.api("errors") == 0
    world.assert_every_attempt_counted()
    world.sim.faults.clear()
    world.poll()
    world.poll()
    finished, failures = world.counted(SICK)
    truth_finished, truth_failures = world.truth(SICK)
    assert finished == truth_finished
    if job_field == "Code":
        # Failures seen while the fault was on lost their code: counted, as "unknown".
        assert sum(failures.values()) == sum(truth_failures.values())
        assert failures["unknown"] > 0
    else:
        assert failures == truth_failures


def test_unknown_job_state_fails_the_stream_loudly(world: World) -> None:
    """A state we do not know is not skipped: a tracked job left out would be lost. The poll
    fails naming it, without retries, and counts are exact once states are known again."""
    fault = Fault("unknown_state", state="Queuing")
    fail_polls(world, fault)
    assert world.api("errors", error="invalid_response") > 0
    assert world.api("retried_requests") == 0
    assert "unknown State 'Queuing'" in world.poller.snapshot().targets[0].last_error
    world.recover()


# -- clocks and keys ------------------------------------------------------------------------


def test_clock_skew_within_the_signature_window(world: World) -> None:
    """CI's clock (its front end and the clock stamping its jobs) 4 minutes ahead: signatures
    still pass, the Date header tells the exporter, and counts stay exact."""
    world.bucket(SICK).clock = Clock(offset=240)
    world.sim.faults.add(Fault("skew", offset=240, bucket=SICK))
    for _ in range(4):
        world.poll()
        assert world.up(SICK) == 1 and world.up(WELL) == 1
    assert world.poller.targets[0].client.clock_offset == pytest.approx(240, abs=2)
    assert world.api("errors") == 0
    world.recover(clear=False)


def test_expired_signature_from_a_skewed_clock(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fault = Fault("skew", offset=3600)
    fail_polls(world, fault)
    assert world.api("errors", error="SignatureExpired") == fault.hits
    assert world.api("retried_requests") == 0  # refused keys are not retried
    # One warning naming the Code, not one per poll or per stream.
    assert len(warnings_naming(caplog, "SignatureExpired")) == 1
    world.recover()


@pytest.mark.parametrize(("status", "code"), [(403, "AccessDenied"), (401, "SecretidNotExist")])
def test_refused_keys(
    world: World, caplog: pytest.LogCaptureFixture, status: int, code: str
) -> None:
    caplog.set_level(logging.INFO)
    fault = Fault("auth", status=status, code=code)
    fail_polls(world, fault)
    assert world.api("errors", error=code) == fault.hits
    assert world.api("requests", status=str(status)) == fault.hits
    assert world.api("retried_requests") == 0
    assert len(warnings_naming(caplog, code)) == 1
    world.recover()


def test_wrong_secret_key_everywhere(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Keys rotated on CI's side: every bucket refuses them with InvalidAuthorization."""
    caplog.set_level(logging.INFO)
    world.sim.api.credentials[SECRET_ID] = "rotated-key"
    world.poll()
    assert world.up(SICK) == 0 and world.up(WELL) == 0
    assert world.api("retried_requests") == 0 and world.api("retried_requests", WELL) == 0
    assert world.api("errors", error="InvalidAuthorization") > 0
    assert len(warnings_naming(caplog, "InvalidAuthorization")) == 2  # one per target
    world.sim.api.credentials[SECRET_ID] = SECRET_KEY
    world.recover()


@pytest.fixture
def frozen_only() -> Iterator[Any]:
    with freeze_time("2026-11-21 06:00:00", tick=False) as frozen:
        yield frozen


def test_every_fault_kind_has_a_test_here() -> None:
    source = Path(__file__).read_text()
    assert [kind for kind in FAULT_KINDS if f'Fault("{kind}"' not in source] == []
