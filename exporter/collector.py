"""Snapshot -> Prometheus metric families, for the queues, streams and targets.

Values describe the last poll of the CI API; /metrics never calls the API. exporter.exposition
renders these families when a snapshot is published, target by target (target_families), and
exporter.self_metrics what changes per scrape. Threads: none of its own, no mutable state; the
snapshot it reads is immutable.

Speed matters: a large deployment has ~10,000 streams per rendering. The stream families
therefore produce their samples while the exposition iterates them (_LazySamples), build
`Sample` tuples directly instead of through `add_metric` (which zips label names per sample), and
hand over label dicts whose keys are already sorted (see families.template).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample

from exporter.api_stats import ApiStats
from exporter.build import build_info
from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES
from exporter.collector_discovery import discovery_families
from exporter.dedupe import ANOMALY_KINDS
from exporter.families import (
    BUILD_INFO,
    IDLE_STREAMS,
    JOB_ANOMALIES,
    JOB_FAILURES,
    JOBS,
    JOBS_FINISHED,
    LAST_SUCCESS,
    OLDEST,
    POLL,
    POLL_DURATION,
    QUEUE_INFO,
    QUEUE_MAX_CONCURRENT,
    QUEUE_MAX_SIZE,
    QUEUE_NOTIFY,
    QUEUE_PAUSED,
    QUEUE_WAIT,
    QUEUES_DROPPED,
    RELOAD_OK,
    RELOAD_TIME,
    RUN_DURATION,
    TRACKED_JOBS,
    UP,
    family,
    histogram,
    new,
    sample,
    template,
)
from exporter.self_metrics import Costs, LiveCollector
from exporter.snapshot import (
    ReloadStatus,
    Snapshot,
    StreamSnapshot,
    TargetSnapshot,
    cap_label,
)


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot:
        """The latest poll's picture; API self-metrics come from ApiStats, live."""
        ...

    def ready(self) -> bool:
        """True once every target has been polled once."""
        ...


Targets = tuple[TargetSnapshot, ...]


class _LazySamples:
    """A family's samples, produced anew each time the exposition iterates them.

    At 10,000 streams, built as lists, the samples take over 300 MB per scrape and, because
    they all survive until rendered, trigger full garbage collections that cost as much as
    building them. Produced on iteration from the immutable snapshot, each
    sample dies as soon as its line is written.
    """

    __slots__ = ("_produce", "_targets")

    def __init__(self, produce: Callable[[Targets], Iterator[Sample]], targets: Targets) -> None:
        self._produce = produce
        self._targets = targets

    def __iter__(self) -> Iterator[Sample]:
        return self._produce(self._targets)

    def __len__(self) -> int:
        # For callers that count samples; the exposition never asks.
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"_LazySamples({self._produce.__name__})"


def _queue_samples(targets: Targets) -> dict[str, list[Sample]]:
    families: dict[str, list[Sample]] = {
        QUEUE_INFO: [],
        QUEUE_PAUSED: [],
        QUEUE_MAX_CONCURRENT: [],
        QUEUE_MAX_SIZE: [],
        QUEUE_NOTIFY: [],
    }
    for target in targets:
        for item in target.queues:
            queue = item.queue
            if item.service == "batch":
                continue  # batch jobs have no queue: their listing's stand-in is not shown
            labels = {
                "bucket": target.bucket,
                "region": target.region,
                "service": item.service,
                "queue_id": queue.queue_id,
            }
            info_labels = labels.copy()
            info_labels["name"] = cap_label(queue.name)
            info_labels["category"] = cap_label(queue.category)
            families[QUEUE_INFO].append(sample(QUEUE_INFO, info_labels, 1))
            families[QUEUE_PAUSED].append(sample(QUEUE_PAUSED, labels, int(queue.paused)))
            if item.service == "workflow":
                continue  # a workflow has no slots, size or notification of its own
            families[QUEUE_MAX_CONCURRENT].append(
                sample(QUEUE_MAX_CONCURRENT, labels, queue.max_concurrent)
            )
            families[QUEUE_MAX_SIZE].append(sample(QUEUE_MAX_SIZE, labels, queue.max_size))
            families[QUEUE_NOTIFY].append(sample(QUEUE_NOTIFY, labels, int(queue.notify_enabled)))
    return families


def _queue_metrics(targets: Targets) -> Iterator[Metric]:
    samples = _queue_samples(targets)
    yield family(
        QUEUE_INFO,
        "Descriptive fields of a CI queue (name, category); always 1." + POLL,
        "gauge",
        samples[QUEUE_INFO],
    )
    yield family(
        QUEUE_PAUSED,
        "1 when the queue's State is Paused, else 0." + POLL,
        "gauge",
        samples[QUEUE_PAUSED],
    )
    yield family(
        QUEUE_MAX_CONCURRENT,
        "The queue's MaxConcurrent setting." + POLL,
        "gauge",
        samples[QUEUE_MAX_CONCURRENT],
    )
    yield family(
        QUEUE_MAX_SIZE, "The queue's MaxSize setting." + POLL, "gauge", samples[QUEUE_MAX_SIZE]
    )
    yield family(
        QUEUE_NOTIFY,
        "1 when the queue's NotifyConfig State is On, else 0." + POLL,
        "gauge",
        samples[QUEUE_NOTIFY],
    )


def _streams(targets: Targets) -> Iterator[tuple[StreamSnapshot, dict[str, str]]]:
    """Every stream with the labels that identify it."""
    for target in targets:
        bucket, region = target.bucket, target.region
        for stream in target.streams:
            yield (
                stream,
                {
                    "bucket": bucket,
                    "region": region,
                    "service": stream.service,
                    "queue_id": stream.queue_id,
                    "tag": stream.tag,
                },
            )


def _per_state(
    name: str,
    states: tuple[str, ...],
    values: Callable[[StreamSnapshot], Mapping[str, int]],
    targets: Targets,
) -> Iterator[Sample]:
    """One sample for every state of every stream, 0 when absent: series known to exist are
    exported before their first event, so rate() and alerts work from the start."""
    for stream, labels in _streams(targets):
        state_template = template(labels, "state")
        counts = values(stream)
        for state in states:
            state_labels = state_template.copy()
            state_labels["state"] = state
            yield new(Sample, (name, state_labels, counts.get(state, 0), None, None, None))


def _jobs(targets: Targets) -> Iterator[Sample]:
    return _per_state(JOBS, ACTIVE_STATES, _active_of, targets)


def _finished(targets: Targets) -> Iterator[Sample]:
    return _per_state(JOBS_FINISHED + "_total", FINISHED_STATES, _finished_of, targets)


def _active_of(stream: StreamSnapshot) -> Mapping[str, int]:
    return stream.active


def _finished_of(stream: StreamSnapshot) -> Mapping[str, int]:
    return stream.finished


def _oldest(targets: Targets) -> Iterator[Sample]:
    for stream, labels in _streams(targets):
        if not stream.oldest:
            continue
        state_template = template(labels, "state")
        for state, timestamp in stream.oldest.items():
            state_labels = state_template.copy()
            state_labels["state"] = state
            yield new(Sample, (OLDEST, state_labels, timestamp, None, None, None))


def _failures(targets: Targets) -> Iterator[Sample]:
    name = JOB_FAILURES + "_total"
    for stream, labels in _streams(targets):
        if not stream.failures:
            continue
        code_template = template(labels, "code")
        exemplar_code = stream.last_failed_code if _exemplar_fits(stream.last_failed_job) else None
        for code, total in stream.failures.items():
            code_labels = code_template.copy()
            code_labels["code"] = code
            exemplar = (
                Exemplar({_EXEMPLAR_LABEL: stream.last_failed_job}, 1.0)
                if code == exemplar_code
                else None
            )
            yield new(Sample, (name, code_labels, total, None, exemplar, None))


# OpenMetrics: an exemplar's label names and values take at most 128 UTF-8 characters in all;
# parsers refuse the whole exposition past it.
EXEMPLAR_MAX_CHARS = 128
_EXEMPLAR_LABEL = "job_id"


def _exemplar_fits(job_id: str) -> bool:
    """A JobId that can be an exemplar: one too long goes without (cut, it names no job)."""
    return 0 < len(job_id) <= EXEMPLAR_MAX_CHARS - len(_EXEMPLAR_LABEL)


def _run_duration(targets: Targets) -> Iterator[Sample]:
    """The finished states a stream has observed a run time in: a histogram appears with its
    first observation (series budget: README, "Series per stream")."""
    for stream, labels in _streams(targets):
        durations = stream.run_duration
        if not durations:
            continue
        state_template = template(labels, "state")
        le_template = template(labels, "state", "le")
        for state in FINISHED_STATES:
            hist = durations.get(state)
            if hist is None:
                continue
            state_labels = state_template.copy()
            state_labels["state"] = state
            with_le = le_template.copy()
            with_le["state"] = state
            yield from histogram(RUN_DURATION, state_labels, with_le, hist)


def _queue_wait(targets: Targets) -> Iterator[Sample]:
    for stream, labels in _streams(targets):
        if stream.queue_wait is not None:
            sorted_labels = template(labels)
            le_labels = template(labels, "le")
            yield from histogram(QUEUE_WAIT, sorted_labels, le_labels, stream.queue_wait)


def _stream_metrics(targets: Targets) -> Iterator[Metric]:
    yield family(
        JOBS,
        "Jobs now in each active state (Submitted, Running, Pause)." + POLL,
        "gauge",
        _LazySamples(_jobs, targets),
    )
    yield family(
        JOBS_FINISHED,
        "Jobs that reached a finished state (Success, Failed, Cancel), each counted once." + POLL,
        "counter",
        _LazySamples(_finished, targets),
    )
    yield family(
        JOB_FAILURES,
        "Failed jobs by failure Code (rare codes grouped as other); the exemplar carries the"
        " latest failed JobId." + POLL,
        "counter",
        _LazySamples(_failures, targets),
    )
    yield family(
        RUN_DURATION,
        "StartTime to EndTime of finished jobs, by finished state." + POLL,
        "histogram",
        _LazySamples(_run_duration, targets),
    )
    yield family(
        QUEUE_WAIT,
        "CreationTime to StartTime of jobs." + POLL,
        "histogram",
        _LazySamples(_queue_wait, targets),
    )
    yield family(
        OLDEST,
        "Unix time of the oldest job in a state (CreationTime for Submitted, StartTime for"
        " Running); absent when there is none." + POLL,
        "gauge",
        _LazySamples(_oldest, targets),
    )


def _target_metrics(targets: Targets) -> Iterator[Metric]:
    up: list[Sample] = []
    last_success: list[Sample] = []
    poll_duration: list[Sample] = []
    tracked: list[Sample] = []
    idle: list[Sample] = []
    dropped: list[Sample] = []
    anomalies: list[Sample] = []
    for target in targets:
        labels = {"bucket": target.bucket, "region": target.region}
        up.append(sample(UP, labels, 1 if target.up else 0))
        if target.last_success_time is not None:
            last_success.append(sample(LAST_SUCCESS, labels, target.last_success_time))
        if target.last_poll_duration is not None:
            poll_duration.append(sample(POLL_DURATION, labels, target.last_poll_duration))
        tracked.append(sample(TRACKED_JOBS, labels, target.tracked_jobs))
        idle.append(sample(IDLE_STREAMS, labels, target.idle_streams))
        for service, count in sorted(target.queues_dropped.items()):
            dropped.append(sample(QUEUES_DROPPED, {**labels, "service": service}, count))
        for kind in ANOMALY_KINDS:
            anomalies.append(
                sample(
                    JOB_ANOMALIES + "_total",
                    {**labels, "kind": kind},
                    target.anomalies.get(kind, 0),
                )
            )
    yield family(
        UP,
        "1 when the target's last poll of the CI API succeeded completely, else 0.",
        "gauge",
        up,
    )
    yield family(
        LAST_SUCCESS,
        "Unix time the last poll of the CI API that succeeded completely finished; absent"
        " before the first success.",
        "gauge",
        last_success,
    )
    yield family(
        POLL_DURATION, "How long the last poll of the CI API took.", "gauge", poll_duration
    )
    yield family(
        TRACKED_JOBS,
        "Jobs held in memory for accounting (active or recently finished)." + POLL,
        "gauge",
        tracked,
    )
    yield family(
        IDLE_STREAMS,
        "Streams (queue, tag) the last poll of the CI API left out because they have been"
        " idle (idle_tag_backoff).",
        "gauge",
        idle,
    )
    yield family(
        QUEUES_DROPPED,
        "Queues of the last listing of a service beyond max_queues_per_service: neither polled"
        " nor exported." + POLL,
        "gauge",
        dropped,
    )
    yield family(
        JOB_ANOMALIES,
        "Jobs CI listed as it should not have, counted once each: duplicate_id (a JobId another"
        " queue already had), resurrected (a finished job active again)." + POLL,
        "counter",
        anomalies,
    )


def _reload_metrics(reload: ReloadStatus) -> Iterator[Metric]:
    yield family(
        RELOAD_OK,
        "1 when the last configuration reload succeeded (or none was tried), else 0.",
        "gauge",
        [sample(RELOAD_OK, {}, 1 if reload.successful else 0)],
    )
    if reload.last_success_time is not None:
        yield family(
            RELOAD_TIME,
            "Unix time of the last successful configuration load.",
            "gauge",
            [sample(RELOAD_TIME, {}, reload.last_success_time)],
        )


def target_families(targets: Targets) -> Iterator[Metric]:
    """The families of the targets' snapshots: the same families in the same order whatever
    the targets, their samples target by target, so renderings of single targets join."""
    yield from _queue_metrics(targets)
    yield from _stream_metrics(targets)
    yield from _target_metrics(targets)


def snapshot_families(snapshot: Snapshot, version: str) -> Iterator[Metric]:
    """The rest of what the snapshot shows: the reload status, discovery and the build."""
    yield from _reload_metrics(snapshot.reload)
    yield from discovery_families(snapshot.discovery)
    build = build_info()
    labels = {"python_version": build.python_version, "revision": build.revision}
    yield family(
        BUILD_INFO,
        "Build information of the exporter: its version, the revision it was built from"
        ' ("unknown" when not known) and the Python running it; always 1.',
        "gauge",
        [sample(BUILD_INFO, {**labels, "version": version}, 1)],
    )


class CICollector(Collector):
    """The whole exposition, rendered fresh on every collect(): what exporter.exposition
    renders piecewise and caches, and what tests read values from with get_sample_value."""

    def __init__(
        self, source: SnapshotSource, stats: ApiStats, version: str, costs: Costs = tuple
    ) -> None:
        self._source = source
        self._version = version
        self._live = LiveCollector(stats, costs)

    def describe(self) -> list[Metric]:
        # Registration must not take a snapshot; an empty describe() also skips the registry's
        # duplicate-name bookkeeping, which is fine for the exporter's single collector.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source.snapshot()
        yield from target_families(snapshot.targets)
        yield from snapshot_families(snapshot, self._version)
        yield from self._live.collect()
