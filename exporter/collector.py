"""Snapshot -> Prometheus metric families, for the queues, streams and targets.

Values describe the last poll of the CI API; /metrics never calls the API. exporter.exposition
renders these families when a snapshot is published, target by target (target_families), and
exporter.self_metrics what changes per scrape. The stream families, built lazily for speed, are
in exporter.collector_streams; discovery's in exporter.collector_discovery. Threads: none of
its own, no mutable state; the snapshot it reads is immutable.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.api_stats import ApiStats
from exporter.build import build_info
from exporter.collector_discovery import discovery_families
from exporter.collector_streams import Targets, stream_families
from exporter.dedupe import ANOMALY_KINDS
from exporter.families import (
    BUILD_INFO,
    IDLE_STREAMS,
    JOB_ANOMALIES,
    LAST_SUCCESS,
    POLL,
    POLL_DURATION,
    QUEUE_INFO,
    QUEUE_MAX_CONCURRENT,
    QUEUE_MAX_SIZE,
    QUEUE_NOTIFY,
    QUEUE_PAUSED,
    QUEUES_DROPPED,
    RELOAD_OK,
    RELOAD_TIME,
    TRACKED_JOBS,
    UP,
    family,
    sample,
)
from exporter.self_metrics import Costs, LiveCollector
from exporter.snapshot import (
    ReloadStatus,
    Snapshot,
    cap_label,
)


class SnapshotSource(Protocol):
    def snapshot(self) -> Snapshot:
        """The latest poll's picture; API self-metrics come from ApiStats, live."""
        ...

    def ready(self) -> bool:
        """True once every target has been polled once."""
        ...


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
    yield from stream_families(targets)
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
