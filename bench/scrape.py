"""Target 5: /metrics render time at 50 targets x 10 queues x 20 tags.

The exporter's CICollector renders a snapshot of that many streams (exporter.snapshot records,
as the poller builds them). The reference is what prometheus_client takes to expose the same
series from plain, pre-built metrics: a registry of Gauge, Counter and Histogram objects with
every label set, the way a hand-written exporter keeps them (no _created series, which the
exporter does not have either). Both go through generate_latest, interleaved, in this process;
the ratio is per sample, so a few series more or less on either side do not tilt it.

Render time must not depend on how many jobs are tracked: the collector is timed on two
snapshots of the same streams and counters, one with a thousand tracked jobs and one with ten
million (their active-job gauges that much larger).
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bench.workload import FAILURE_CODES, REGION, bucket_name, tag_names
from exporter.api_stats import ApiStats
from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES, Queue
from exporter.collector import CICollector
from exporter.snapshot import (
    QUEUE_WAIT_BUCKETS,
    RUN_TIME_BUCKETS,
    QueueSnapshot,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
)
from exporter.snapshot import Histogram as SnapshotHistogram

STREAM_LABELS = ("bucket", "region", "service", "queue_id", "tag")
QUEUE_LABELS = ("bucket", "region", "service", "queue_id")
NOW = 1_790_000_000.0


@dataclass(frozen=True)
class ScrapeResult:
    streams: int
    samples: int  # the exporter's, per scrape
    plain_samples: int
    exporter_few: float  # CPU seconds per scrape, the least of the repetitions, few jobs
    exporter_many: float  # the same streams, ten million tracked jobs
    plain: float
    repetitions: int
    few_jobs: int
    many_jobs: int

    @property
    def ratio(self) -> float:
        """The exporter's time per sample over prometheus_client's, the worse snapshot."""
        worst = max(self.exporter_few, self.exporter_many)
        return (worst / self.samples) / (self.plain / self.plain_samples)

    @property
    def jobs_effect(self) -> float:
        """Render time with many tracked jobs over with few."""
        return self.exporter_many / self.exporter_few


class SnapshotSource:
    """A snapshot source that serves the snapshot it holds, always ready: swapped whole by
    setting `current`, as the poller's board is."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot

    def snapshot(self) -> Snapshot:
        return self.current

    def ready(self) -> bool:
        return True


def _histogram(rng: random.Random, bounds: tuple[float, ...]) -> SnapshotHistogram:
    counts = [rng.randrange(0, 500) for _ in bounds]
    cumulative, running = [], 0
    for n in counts:
        running += n
        cumulative.append(running)
    total = running + rng.randrange(0, 50)
    return SnapshotHistogram(bounds, tuple(cumulative), total * 97.25, total)


def _stream(rng: random.Random, queue_id: str, tag: str, active_scale: int) -> StreamSnapshot:
    busy = rng.random() < 0.2
    active = {state: rng.randrange(0, 50) * active_scale if busy else 0 for state in ACTIVE_STATES}
    finished = {state: rng.randrange(0, 100_000) for state in FINISHED_STATES}
    codes = rng.sample(FAILURE_CODES, rng.randrange(1, 4)) if busy else []
    failures = {code: rng.randrange(1, 1000) for code, _ in codes}
    return StreamSnapshot(
        service="media",
        queue_id=queue_id,
        tag=tag,
        active=active,
        finished=finished,
        failures=failures,
        # Every histogram observed: a busy deployment (the snapshot leaves unobserved ones out).
        run_duration={state: _histogram(rng, RUN_TIME_BUCKETS) for state in FINISHED_STATES},
        queue_wait=_histogram(rng, QUEUE_WAIT_BUCKETS),
        oldest={"Submitted": NOW - 600, "Running": NOW - 5400} if busy else {},
        last_failed_job=f"j{rng.getrandbits(128):032x}" if codes else "",
        last_failed_code=codes[0][0] if codes else "",
    )


def synthetic_snapshot(
    targets: int, queues: int, tags: int, *, tracked_jobs: int, seed: int = 5
) -> Snapshot:
    """A snapshot of targets x queues x tags streams. The same seed gives the same streams and
    counters; `tracked_jobs` scales the active jobs of the busy ones (a fifth), as tracked jobs
    would."""
    rng = random.Random(seed)
    scale = max(1, tracked_jobs // max(1, targets * queues * tags // 5 * 75))
    found: list[TargetSnapshot] = []
    for t in range(targets):
        queue_records: list[QueueSnapshot] = []
        streams: list[StreamSnapshot] = []
        for q in range(queues):
            queue = Queue(
                queue_id=f"p{rng.getrandbits(128):032x}",
                name=f"q{q:02d}",
                state="Paused" if q == queues - 1 else "Active",
                max_size=10000,
                max_concurrent=rng.randrange(10, 500),
                category="Transcoding",
                notify_enabled=q % 2 == 0,
                create_time=NOW - 86400,
                update_time=NOW - 3600,
            )
            queue_records.append(QueueSnapshot("media", queue))
            streams.extend(_stream(rng, queue.queue_id, tag, scale) for tag in tag_names(tags))
        found.append(
            TargetSnapshot(
                bucket=bucket_name(t),
                region=REGION,
                up=True,
                polled=True,
                last_poll_time=NOW,
                last_success_time=NOW,
                last_poll_duration=4.2,
                last_error="",
                queues=tuple(queue_records),
                streams=tuple(streams),
                tracked_jobs=tracked_jobs // targets,
            )
        )
    return Snapshot(targets=tuple(found))


def exporter_registry(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CICollector(SnapshotSource(snapshot), ApiStats(), "bench"))
    return registry


def plain_registry(snapshot: Snapshot) -> CollectorRegistry:
    """The same series as prometheus_client metric objects, every label set beforehand.
    Render it with created series off (see _without_created)."""
    registry = CollectorRegistry(auto_describe=False)
    _fill_plain(registry, snapshot)
    return registry


@contextmanager
def _without_created() -> Iterator[None]:
    # prometheus_client decides at each collect whether counters and histograms add a
    # _created series; the exporter has none. A process-wide switch: put back afterwards.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


def _fill_plain(registry: CollectorRegistry, snapshot: Snapshot) -> None:
    def gauge(name: str, labels: tuple[str, ...]) -> Gauge:
        return Gauge(name, name, labels, registry=registry)

    jobs = gauge("tencent_ci_jobs", (*STREAM_LABELS, "state"))
    oldest = gauge("tencent_ci_oldest_job_timestamp_seconds", (*STREAM_LABELS, "state"))
    finished = Counter(
        "tencent_ci_jobs_finished", "f", (*STREAM_LABELS, "state"), registry=registry
    )
    failures = Counter("tencent_ci_job_failures", "f", (*STREAM_LABELS, "code"), registry=registry)
    run = Histogram(
        "tencent_ci_job_run_duration_seconds",
        "r",
        (*STREAM_LABELS, "state"),
        registry=registry,
        buckets=RUN_TIME_BUCKETS,
    )
    wait = Histogram(
        "tencent_ci_job_queue_wait_seconds",
        "w",
        STREAM_LABELS,
        registry=registry,
        buckets=QUEUE_WAIT_BUCKETS,
    )
    queue_gauges = [
        gauge(f"tencent_ci_queue_{name}", QUEUE_LABELS)
        for name in ("paused", "max_concurrent", "max_size", "notify_enabled")
    ]
    info = gauge("tencent_ci_queue_info", (*QUEUE_LABELS, "name", "category"))
    target_gauges = [
        gauge(f"tencent_ci_{name}", ("bucket", "region"))
        for name in ("up", "last_successful_poll_timestamp_seconds", "tracked_jobs")
    ]
    for target in snapshot.targets:
        where = (target.bucket, target.region)
        for gauge_ in target_gauges:
            gauge_.labels(*where).set(target.tracked_jobs)
        for item in target.queues:
            queue = item.queue
            labels = (*where, item.service, queue.queue_id)
            info.labels(*labels, queue.name, queue.category).set(1)
            for gauge_ in queue_gauges:
                gauge_.labels(*labels).set(queue.max_concurrent)
        for stream in target.streams:
            series = (*where, stream.service, stream.queue_id, stream.tag)
            for state in ACTIVE_STATES:
                jobs.labels(*series, state).set(stream.active.get(state, 0))
            for state in FINISHED_STATES:
                finished.labels(*series, state).inc(stream.finished.get(state, 0))
                run.labels(*series, state).observe(stream.run_duration[state].sum)
            for code, total in stream.failures.items():
                failures.labels(*series, code).inc(total)
            if stream.queue_wait is not None:
                wait.labels(*series).observe(stream.queue_wait.sum)
            for state, at in stream.oldest.items():
                oldest.labels(*series, state).set(at)


def count_samples(exposition: bytes) -> int:
    """Sample lines of a text exposition (the rest are # HELP and # TYPE)."""
    return sum(1 for line in exposition.splitlines() if line and not line.startswith(b"#"))


def _render(registry: CollectorRegistry) -> tuple[float, bytes]:
    """CPU seconds of one exposition, and the text: on a busy machine CPU time is steadier
    than wall time, and the exposition is single-threaded."""
    gc.collect()
    began = time.process_time()
    text = generate_latest(registry)
    return time.process_time() - began, text


def run_scrape(
    *, targets: int = 50, queues: int = 10, tags: int = 20, repetitions: int = 2
) -> ScrapeResult:
    with _without_created():
        return _run_scrape(targets, queues, tags, repetitions)


def _run_scrape(targets: int, queues: int, tags: int, repetitions: int) -> ScrapeResult:
    few_jobs, many_jobs = 1_000, 10_000_000
    few = synthetic_snapshot(targets, queues, tags, tracked_jobs=few_jobs)
    many = synthetic_snapshot(targets, queues, tags, tracked_jobs=many_jobs)
    registries: dict[str, CollectorRegistry] = {
        "few": exporter_registry(few),
        "many": exporter_registry(many),
        "plain": plain_registry(few),
    }
    del few, many
    times: dict[str, list[float]] = {name: [] for name in registries}
    samples: dict[str, int] = {}
    for _ in range(repetitions):
        for name, registry in registries.items():
            seconds, text = _render(registry)
            times[name].append(seconds)
            samples[name] = count_samples(text)
            del text

    def best(name: str) -> float:
        # The least CPU time: what rendering costs with the least interference.
        return min(times[name])

    return ScrapeResult(
        streams=targets * queues * tags,
        samples=samples["few"],
        plain_samples=samples["plain"],
        exporter_few=best("few"),
        exporter_many=best("many"),
        plain=best("plain"),
        repetitions=repetitions,
        few_jobs=few_jobs,
        many_jobs=many_jobs,
    )
