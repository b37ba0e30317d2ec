"""The demo over two simulated hours: healthy queues healthy, and only the problems it names.

The demo's simulator (seed 1, as `--demo` runs it, throttling included) is polled by the real
Poller over HTTP under freezegun, one poll every POLL_EVERY simulated seconds, for two hours
from the demo's start. What the exporter reports is checked against the alert rules'
thresholds, read from deploy/prometheus/rules/alerts.rules.yml: no healthy queue comes near
TencentCIQueueSaturated or TencentCIJobFailureRatioHigh; the paused queue, the flaky queue,
the backlog queue and the throttled bucket show their problems; what the exporter tracks and
what the simulator holds stay bounded. Retries happen at once and the rate limit is left out
(time does not pass within a poll): the workload is the subject, not the client's waits.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from freezegun import freeze_time
from prometheus_harness import alert_rules

from exporter.api_stats import ApiStats
from exporter.ci.client import CIClient
from exporter.config import Config, TargetConfig
from exporter.credentials import Credentials, StaticCredentials
from exporter.demo import THROTTLE_EVERY, EveryNthCall, demo_config, demo_endpoints, throttle
from exporter.poller import Poller
from exporter.ratelimit import RetryPolicy
from exporter.simulator import Fault, SimBucket, Simulator, build_demo
from exporter.simulator.records import WAITING
from exporter.simulator.streams import FAILURE_CODES, Stream, Surge, Workload
from exporter.simulator.workload import (
    DEMO_BACKLOG_QUEUE,
    DEMO_BUCKETS,
    DEMO_FLAKY_QUEUE,
    DEMO_FLAKY_WORKFLOW,
    DEMO_PATIENCE,
    DEMO_PAUSED_QUEUE,
    DEMO_SURGE_LASTING,
    DEMO_THROTTLED_BUCKET,
)

HOURS = 2
POLL_EVERY = 15.0  # simulated seconds between polls (the demo's 5 s would triple the run time)
WINDOW = 300.0  # the rules' rate windows, [5m]
SAMPLES_PER_WINDOW = int(WINDOW / POLL_EVERY)
RETENTION = 7200.0  # build_demo's default
MAX_RUN_TIME = 3600.0  # Workload's default
TRACKED_JOBS_BOUND = 200  # per target; the run's highest is under 100

# (bucket, queue name) and (bucket, queue name, tag)
QueueKey = tuple[str, str]
StreamKey = tuple[str, str, str]


# --- thresholds, from the rules -----------------------------------------------------------


def _rule(alertname: str) -> str:
    return str(next(r for r in alert_rules() if r["alert"] == alertname)["expr"])


def _number(alertname: str, pattern: str) -> float:
    match = re.search(pattern, _rule(alertname))
    assert match is not None, f"{alertname}: {pattern!r} is not in its expression"
    return float(match.group(1))


@dataclass(frozen=True)
class Thresholds:
    ratio: float
    finished: float
    failed: float
    burst: float
    backlog_age: float


def thresholds() -> Thresholds:
    ratio_alert = "TencentCIJobFailureRatioHigh"
    return Thresholds(
        ratio=_number(ratio_alert, r"ratio_rate5m(?:\{[^}]*\})? > ([\d.]+)"),
        finished=_number(ratio_alert, r"finished:rate5m \* 300 >= (\d+)"),
        failed=_number(ratio_alert, r'\{state="Failed"\} \* 300 >= (\d+)'),
        burst=_number("TencentCIJobFailureCodeBurst", r"rate5m(?:\{[^}]*\})? \* 300 >= (\d+)"),
        backlog_age=_number("TencentCIBacklogStuck", r"\) > (\d+)"),
    )


# --- the run ----------------------------------------------------------------------------


@dataclass
class Sample:
    """What the exporter reported after one poll."""

    up: dict[str, bool]
    tracked: dict[str, int]
    running: Counter[QueueKey]
    submitted: Counter[QueueKey]
    paused: Counter[QueueKey]
    oldest_submitted: dict[QueueKey, float]
    finished: dict[StreamKey, Mapping[str, int]]
    failures: dict[StreamKey, Mapping[str, int]]


@dataclass
class Run:
    start: float
    samples: list[Sample] = field(default_factory=list)
    max_concurrent: dict[QueueKey, int] = field(default_factory=dict)
    throttled: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    job_counts: list[dict[str, int]] = field(default_factory=list)  # per sample, per bucket
    footprints: list[int] = field(default_factory=list)  # per sample, all workloads
    end_jobs: dict[str, list[tuple[str, int, int | None, int | None]]] = field(
        default_factory=dict
    )  # bucket -> (state, creation, start, end) of every job the simulator holds at the end

    def series(self, pick: str, key: QueueKey) -> list[int]:
        return [getattr(s, pick)[key] for s in self.samples]

    def increases(self, key: StreamKey, kind: str) -> list[Counter[str]]:
        """Per sample from the first full window on: what `kind` (finished, failures) grew by
        in the window before it, as increase(...[5m]) sees it."""
        totals = [Counter(getattr(s, kind).get(key, {})) for s in self.samples]
        return [
            totals[i] - totals[i - SAMPLES_PER_WINDOW]
            for i in range(SAMPLES_PER_WINDOW, len(totals))
        ]


def _no_wait(stopping: threading.Event, seconds: float) -> bool:
    return stopping.is_set()


def _client(target: TargetConfig, config: Config, stats: ApiStats) -> CIClient:
    """The exporter's client with its retries and throttle pacing, whose waits take no time."""
    assert isinstance(target.credentials, Credentials)
    retry = config.retry
    return CIClient(
        bucket=target.bucket,
        region=target.region,
        endpoint=target.endpoint,
        credentials=StaticCredentials(target.credentials),
        timeout=config.request_timeout,
        stats=stats,
        retry=RetryPolicy(retry.attempts, retry.initial_backoff, retry.max_backoff),
        sleep=_no_wait,
    )


def _sample(poller: Poller) -> tuple[Sample, dict[QueueKey, int]]:
    sample = Sample({}, {}, Counter(), Counter(), Counter(), {}, {}, {})
    max_concurrent: dict[QueueKey, int] = {}
    for target in poller.snapshot().targets:
        bucket = target.bucket
        sample.up[bucket], sample.tracked[bucket] = target.up, target.tracked_jobs
        names = {q.queue.queue_id: q.queue.name for q in target.queues}
        for q in target.queues:
            max_concurrent[(bucket, q.queue.name)] = q.queue.max_concurrent
        for stream in target.streams:
            queue = (bucket, names[stream.queue_id])
            sample.running[queue] += stream.active.get("Running", 0)
            sample.submitted[queue] += stream.active.get("Submitted", 0)
            sample.paused[queue] += stream.active.get("Pause", 0)
            if "Submitted" in stream.oldest:
                oldest = sample.oldest_submitted.get(queue, math.inf)
                sample.oldest_submitted[queue] = min(oldest, stream.oldest["Submitted"])
            key = (bucket, queue[1], stream.tag)
            sample.finished[key], sample.failures[key] = stream.finished, stream.failures
    return sample, max_concurrent


def _end_jobs(bucket: SimBucket) -> list[tuple[str, int, int | None, int | None]]:
    return [(j.state, j.creation_time, j.start_time, j.end_time) for j in bucket.jobs()]


def _drive(sim: Simulator, run: Run, tick: Callable[[float], object]) -> None:
    stats = ApiStats()
    config = demo_config(sim, POLL_EVERY)
    poller = Poller(config, stats, client_factory=_client, **demo_endpoints(sim))
    try:
        for _ in range(int(HOURS * 3600 / POLL_EVERY)):
            tick(POLL_EVERY)
            for workload in sim.workloads:
                workload.advance(workload.bucket.now())
            poller.poll_once()
            sample, run.max_concurrent = _sample(poller)
            run.samples.append(sample)
            run.job_counts.append({b.name: b.job_count() for b in sim.buckets.values()})
            run.footprints.append(sum(w.footprint() for w in sim.workloads))
    finally:
        poller.stop()
    api = stats.snapshot()
    for (bucket, _, _), count in api.throttled.items():
        run.throttled[bucket] = run.throttled.get(bucket, 0) + count
    for (bucket, _, _, _), count in api.requests.items():
        run.requests[bucket] = run.requests.get(bucket, 0) + count
    run.end_jobs = {b.name: _end_jobs(b) for b in sim.buckets.values()}


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    with freeze_time("2026-03-01 12:00:00") as frozen:
        sim = build_demo(seed=1)
        throttle(sim)
        result = Run(sim.now())
        with sim.start():
            _drive(sim, result, frozen.tick)
        yield result


def _queues(run: Run) -> list[QueueKey]:
    return sorted(run.max_concurrent)


def _named(run: Run, name: str) -> QueueKey:
    return next(q for q in _queues(run) if q[1] == name)


def _healthy(run: Run) -> list[QueueKey]:
    special = {DEMO_BACKLOG_QUEUE, DEMO_PAUSED_QUEUE, DEMO_FLAKY_QUEUE}
    return [q for q in _queues(run) if q[1] not in special]


def _at(index: int) -> float:
    """Seconds since the demo's start of sample `index`."""
    return (index + 1) * POLL_EVERY


# --- the checks ---------------------------------------------------------------------------


def test_the_run_covers_every_queue_of_the_demo(run: Run) -> None:
    expected = {(bucket, q.name) for bucket, _, queues in DEMO_BUCKETS for q in queues}

    assert set(_queues(run)) == expected
    assert len(run.samples) == HOURS * 3600 / POLL_EVERY


def test_queues_but_the_backlog_one_run_well_within_max_concurrent(run: Run) -> None:
    for queue in _queues(run):
        limit = run.max_concurrent[queue]
        if queue[1] == DEMO_BACKLOG_QUEUE or not limit:  # workflows and batch jobs: no slots
            continue
        running = run.series("running", queue)
        utilisation = sum(running) / len(running) / limit
        assert utilisation < 0.8, (queue, utilisation)
        # Not once at MaxConcurrent: TencentCIQueueSaturated does not even go pending.
        assert max(running) < limit, (queue, max(running), limit)


def test_backlogs_stay_bounded_but_the_backlog_queues(run: Run) -> None:
    for queue in [*_healthy(run), _named(run, DEMO_FLAKY_QUEUE)]:
        assert max(run.series("submitted", queue)) <= 2, queue
    # The paused queue holds what arrives in DEMO_PATIENCE at most: ~9 jobs on average.
    paused = _named(run, DEMO_PAUSED_QUEUE)
    assert max(run.series("submitted", paused)) == 0
    assert 0 < max(run.series("paused", paused)) <= 25


def test_the_backlog_queue_grows_and_drains_every_hour(run: Run) -> None:
    queue = _named(run, DEMO_BACKLOG_QUEUE)
    backlog = run.series("submitted", queue)
    limit = run.max_concurrent[queue]
    for hour in range(HOURS):
        hour_samples = range(int(hour * 3600 / POLL_EVERY), int((hour + 1) * 3600 / POLL_EVERY))
        peak = max(hour_samples, key=lambda i: backlog[i])
        assert _at(peak) - hour * 3600 <= DEMO_SURGE_LASTING + 5 * 60, "peaks by the surge's end"
        assert backlog[peak] >= 20, (hour, backlog[peak])
        assert all(run.samples[i].running[queue] == limit for i in range(peak - 4, peak + 1))
        # Drained before the next surge.
        assert any(backlog[i] == 0 for i in hour_samples if i > peak), (hour, backlog[peak])
    # Drained before TencentCIBacklogStuck: the oldest waiting job is never that old.
    ages = [
        _at(i) + run.start - s.oldest_submitted[queue]
        for i, s in enumerate(run.samples)
        if queue in s.oldest_submitted
    ]
    assert max(ages) < thresholds().backlog_age * 0.9


def _ratio_alert(finished: Counter[str], limits: Thresholds) -> bool:
    total, failed = sum(finished.values()), finished["Failed"]
    return total >= limits.finished and failed >= limits.failed and failed / total > limits.ratio


def test_only_the_flaky_queue_fails_enough_for_the_failure_alerts(run: Run) -> None:
    limits = thresholds()
    streams = sorted({key for s in run.samples for key in s.finished})
    for key in streams:
        windows = run.increases(key, "finished")
        alerting = sum(_ratio_alert(w, limits) for w in windows)
        bursts = {
            code
            for w in run.increases(key, "failures")
            for code, n in w.items()
            if n >= limits.burst
        }
        if key[1] == DEMO_FLAKY_WORKFLOW:  # its own alert, on the same ratio and floors
            # Runs are fewer than the flaky queue's jobs: a window now and then falls short of
            # the 20 finished the alert needs (26 of 460 in this run).
            assert alerting >= 0.9 * len(windows), (key, alerting, len(windows))
        elif key[1] == DEMO_FLAKY_QUEUE and sum(run.samples[-1].finished[key].values()):
            assert alerting == len(windows), (key, alerting, len(windows))
            assert bursts == {"InternalError"}, key
        else:
            assert alerting == 0, key
            assert bursts == set(), key
            total = Counter(run.samples[-1].finished[key])
            assert total["Failed"] <= max(limits.ratio * sum(total.values()), 2), (key, total)


def test_the_flaky_queue_fails_with_several_codes(run: Run) -> None:
    failures = run.samples[-1].failures
    codes = sum((Counter(failures[k]) for k in failures if k[1] == DEMO_FLAKY_QUEUE), Counter())

    assert set(codes) == {code for code, _ in FAILURE_CODES}
    assert codes.most_common(1)[0][0] == "InternalError"


def test_tracked_jobs_stay_bounded(run: Run) -> None:
    half = len(run.samples) // 2
    for bucket in run.samples[0].tracked:
        tracked = [s.tracked[bucket] for s in run.samples]
        assert max(tracked) <= TRACKED_JOBS_BOUND, (bucket, max(tracked))
        # No growth: the second hour holds no more than the first.
        assert max(tracked[half:]) <= 1.2 * max(tracked[:half]), bucket


def test_the_simulator_holds_a_bounded_store(run: Run) -> None:
    end = run.start + HOURS * 3600
    for bucket, jobs in run.end_jobs.items():
        for state, created, started, ended in jobs:
            if ended is not None:
                assert ended >= end - RETENTION - 1, (bucket, state)
            elif state in WAITING:
                assert created >= end - DEMO_PATIENCE - 1, (bucket, state)
            else:
                assert started is not None and started >= end - MAX_RUN_TIME - 1
    # What the workload holds besides: events, waiting jobs, finished ones to expire.
    assert run.footprints[-1] <= 3 * sum(run.job_counts[-1].values())


def test_the_throttled_bucket_is_throttled_and_still_polled(run: Run) -> None:
    share = run.throttled[DEMO_THROTTLED_BUCKET] / run.requests[DEMO_THROTTLED_BUCKET]

    assert 0.05 < share <= 1 / THROTTLE_EVERY + 0.001, share
    assert set(run.throttled) == {DEMO_THROTTLED_BUCKET}
    # Every throttled call went through on its retry: no poll of any bucket failed.
    assert all(all(s.up.values()) for s in run.samples)


# --- the parts, on their own ----------------------------------------------------------------

T0 = 1_700_000_000


def test_a_surge_is_on_for_lasting_seconds_of_every_period() -> None:
    surge = Surge(rate=1.0, every=3600.0, lasting=900.0, offset=600.0)

    assert [surge.on(t) for t in (0, 599, 600, 1499, 1500, 4199, 4200, 5099)] == [
        False,
        False,
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError):
        Surge(rate=1.0, every=60.0, lasting=61.0)


def test_a_surging_stream_arrives_faster_while_the_surge_is_on() -> None:
    bucket = SimBucket("surge-1250000000", seed=1)
    queue = bucket.add_queue("media", max_concurrent=1000, at=T0)
    surge = Surge(rate=0.5, every=3600.0, lasting=900.0)
    stream = Stream(queue, "Transcode", rate=0.05, median_run=1.0, surge=surge)
    Workload(bucket, seed=2, streams=[stream], start=T0).advance(T0 + 3600)

    created = Counter(j.creation_time - T0 < 900 for j in bucket.jobs())
    # 450 expected in the surge's 15 minutes, 135 in the other 45.
    assert 380 < created[True] < 520
    assert 95 < created[False] < 175


def test_a_submitter_gives_up_on_a_job_waiting_longer_than_its_patience() -> None:
    bucket = SimBucket("paused-1250000000", seed=1)
    queue = bucket.add_queue("media", paused=True, at=T0)
    stream = Stream(queue, "Transcode", rate=0.05, patience=600.0)
    workload = Workload(bucket, seed=3, streams=[stream], start=T0, retention=1200.0)
    counts = []
    for t in range(T0 + 600, T0 + 7200, 600):
        workload.advance(t)
        counts.append(bucket.count(queue, "Pause"))

    cancelled = [j for j in bucket.jobs() if j.state == "Cancel"]
    assert cancelled and all(j.start_time is None for j in cancelled)
    assert all(j.end_time == j.creation_time + 600 for j in cancelled if j.end_time)
    # ~30 waiting (600 s at 0.05/s) from the first patience on, instead of ever more.
    assert max(counts) < 50 and counts[-1] < 50
    assert bucket.job_count() < 150  # waiting, and cancelled ones kept for the retention
    assert workload.footprint() < 200


def test_a_job_that_starts_in_time_is_not_given_up() -> None:
    bucket = SimBucket("busy-1250000000", seed=1)
    queue = bucket.add_queue("media", max_concurrent=50, at=T0)
    stream = Stream(queue, "Transcode", rate=0.2, median_run=5.0, patience=60.0)
    workload = Workload(
        bucket, seed=4, streams=[stream], start=T0, failure_ratio=0.0, cancel_ratio=0.0
    )
    workload.advance(T0 + 1800)

    assert bucket.count(queue, "Cancel") == 0
    assert all(j.start_time is not None for j in bucket.jobs())


def test_weighted_failure_codes_come_in_proportion() -> None:
    bucket = SimBucket("codes-1250000000", seed=1)
    queue = bucket.add_queue("media", max_concurrent=1000, at=T0)
    codes = (("InternalError", "internal", 8.0), ("InputFileNotExist", "no input", 2.0))
    stream = Stream(queue, "Tts", rate=1.0, median_run=1.0, failure_ratio=1.0, failure_codes=codes)
    Workload(bucket, seed=5, streams=[stream], start=T0, cancel_ratio=0.0).advance(T0 + 1000)

    failed = Counter(j.code for j in bucket.jobs() if j.state == "Failed")
    assert set(failed) == {"InternalError", "InputFileNotExist"}
    assert 0.75 < failed["InternalError"] / sum(failed.values()) < 0.85


def test_the_throttle_answers_every_nth_call_of_its_bucket_and_keeps_other_faults() -> None:
    sim = Simulator(seed=1)
    sim.faults.add(Fault("http_500", bucket="other-1250000000"))
    fault = throttle(sim, "hot-1250000000")
    faults = sim.faults
    assert isinstance(faults, EveryNthCall)

    picked = [faults.pick("hot-1250000000", "/jobs") for _ in range(3 * THROTTLE_EVERY)]
    assert [i for i, f in enumerate(picked) if f is fault] == [0, 12, 24]
    assert fault.kind == "html" and fault.status == 503 and fault.hits == 3
    other = faults.pick("other-1250000000", "/jobs")
    assert other is not None and other.kind == "http_500"
