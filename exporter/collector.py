"""Snapshot -> Prometheus metric families. The only module that touches prometheus_client types.

Every collect() builds fresh families from the latest snapshot, so a vanished queue vanishes from
/metrics and concurrent scrapes share nothing mutable. Values describe the last poll of the CI
API; /metrics never calls the API.

Speed matters: a large deployment has ~10,000 streams (~860,000 samples) per scrape. The stream
families therefore produce their samples while the exposition iterates them (_LazySamples), build
`Sample` tuples directly instead of through `add_metric` (which zips label names per sample), and
hand over label dicts whose keys are already sorted (see _template). Rendering costs about 1.07x
what prometheus_client needs to expose the same samples from pre-built families.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString

from exporter.api_stats import ApiStats
from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES
from exporter.dedupe import ANOMALY_KINDS
from exporter.snapshot import (
    DURATION_BUCKETS,
    ApiSnapshot,
    Histogram,
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


PREFIX = "tencent_ci_"
_POLL = " Value from the last poll of the CI API."

QUEUE_INFO = PREFIX + "queue_info"
QUEUE_PAUSED = PREFIX + "queue_paused"
QUEUE_MAX_CONCURRENT = PREFIX + "queue_max_concurrent"
QUEUE_MAX_SIZE = PREFIX + "queue_max_size"
QUEUE_NOTIFY = PREFIX + "queue_notify_enabled"
JOBS = PREFIX + "jobs"
JOBS_FINISHED = PREFIX + "jobs_finished"  # counter families are named without _total
JOB_FAILURES = PREFIX + "job_failures"
RUN_DURATION = PREFIX + "job_run_duration_seconds"
QUEUE_WAIT = PREFIX + "job_queue_wait_seconds"
OLDEST = PREFIX + "oldest_job_timestamp_seconds"
UP = PREFIX + "up"
LAST_SUCCESS = PREFIX + "last_successful_poll_timestamp_seconds"
POLL_DURATION = PREFIX + "poll_duration_seconds"
API_REQUESTS = PREFIX + "api_requests"
API_ERRORS = PREFIX + "api_errors"
API_DURATION = PREFIX + "api_request_duration_seconds"
TRACKED_JOBS = PREFIX + "tracked_jobs"
IDLE_STREAMS = PREFIX + "idle_streams"
QUEUES_DROPPED = PREFIX + "queues_dropped"
JOB_ANOMALIES = PREFIX + "job_anomalies"  # a counter: exposed with _total
API_RETRIED = PREFIX + "api_retried_requests"
API_THROTTLED = PREFIX + "api_throttled_requests"
API_SPACING = PREFIX + "api_request_spacing_seconds"
RELOAD_OK = PREFIX + "config_last_reload_successful"
RELOAD_TIME = PREFIX + "config_last_reload_success_timestamp_seconds"
BUILD_INFO = PREFIX + "exporter_build_info"

_EMPTY_DURATION = Histogram(DURATION_BUCKETS, (0,) * len(DURATION_BUCKETS), 0.0, 0)

# prometheus_client's own float formatting (its histograms' `le` values), typed.
_go_float: Callable[[float], str] = floatToGoString

# Skips the NamedTuple's Python-level __new__ (defaults handling): ~40% cheaper per sample.
_new = tuple.__new__


def _sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return _new(Sample, (name, labels, value, None, None, None))


@lru_cache(maxsize=16)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label values, formatted as prometheus_client's own histograms format them."""
    return tuple(_go_float(bound) for bound in bounds)


def _template(fixed: dict[str, str], *slots: str) -> dict[str, str]:
    """`fixed` plus empty `slots`, keys in sorted order.

    The exposition sorts every sample's labels; presorted they cost it a single pass (~20% of
    its per-sample sort time). Filling a slot in a copy keeps the key's place, so copies of one
    template per stream stay sorted.
    """
    return {key: fixed.get(key, "") for key in sorted((*fixed, *slots))}


def _histogram(
    name: str, labels: dict[str, str], with_le: dict[str, str], hist: Histogram
) -> Iterator[Sample]:
    """Buckets (cumulative, +Inf last), _count and _sum, contiguous as OpenMetrics wants.

    `with_le` is `labels` plus an `le` slot, see _template."""
    bucket = name + "_bucket"
    for le, value in zip(_le_values(hist.bounds), hist.cumulative, strict=True):
        bucket_labels = with_le.copy()
        bucket_labels["le"] = le
        yield _new(Sample, (bucket, bucket_labels, value, None, None, None))
    inf_labels = with_le.copy()
    inf_labels["le"] = "+Inf"
    yield _new(Sample, (bucket, inf_labels, hist.count, None, None, None))
    yield _new(Sample, (name + "_count", labels, hist.count, None, None, None))
    yield _new(Sample, (name + "_sum", labels, hist.sum, None, None, None))


def _family(
    name: str, documentation: str, typ: str, samples: list[Sample] | _LazySamples
) -> Metric:
    unit = "seconds" if name.endswith("_seconds") else ""
    metric = Metric(name, documentation, typ, unit)
    # Every exposition (and registry.get_sample_value) only iterates `samples`.
    metric.samples = samples  # type: ignore[assignment]
    return metric


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
            labels = {
                "bucket": target.bucket,
                "region": target.region,
                "service": item.service,
                "queue_id": queue.queue_id,
            }
            info_labels = labels.copy()
            info_labels["name"] = cap_label(queue.name)
            info_labels["category"] = cap_label(queue.category)
            families[QUEUE_INFO].append(_sample(QUEUE_INFO, info_labels, 1))
            families[QUEUE_PAUSED].append(_sample(QUEUE_PAUSED, labels, int(queue.paused)))
            families[QUEUE_MAX_CONCURRENT].append(
                _sample(QUEUE_MAX_CONCURRENT, labels, queue.max_concurrent)
            )
            families[QUEUE_MAX_SIZE].append(_sample(QUEUE_MAX_SIZE, labels, queue.max_size))
            families[QUEUE_NOTIFY].append(_sample(QUEUE_NOTIFY, labels, int(queue.notify_enabled)))
    return families


def _queue_metrics(targets: Targets) -> Iterator[Metric]:
    samples = _queue_samples(targets)
    yield _family(
        QUEUE_INFO,
        "Descriptive fields of a CI queue (name, category); always 1." + _POLL,
        "gauge",
        samples[QUEUE_INFO],
    )
    yield _family(
        QUEUE_PAUSED,
        "1 when the queue's State is Paused, else 0." + _POLL,
        "gauge",
        samples[QUEUE_PAUSED],
    )
    yield _family(
        QUEUE_MAX_CONCURRENT,
        "The queue's MaxConcurrent setting." + _POLL,
        "gauge",
        samples[QUEUE_MAX_CONCURRENT],
    )
    yield _family(
        QUEUE_MAX_SIZE, "The queue's MaxSize setting." + _POLL, "gauge", samples[QUEUE_MAX_SIZE]
    )
    yield _family(
        QUEUE_NOTIFY,
        "1 when the queue's NotifyConfig State is On, else 0." + _POLL,
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
        template = _template(labels, "state")
        counts = values(stream)
        for state in states:
            state_labels = template.copy()
            state_labels["state"] = state
            yield _new(Sample, (name, state_labels, counts.get(state, 0), None, None, None))


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
        template = _template(labels, "state")
        for state, timestamp in stream.oldest.items():
            state_labels = template.copy()
            state_labels["state"] = state
            yield _new(Sample, (OLDEST, state_labels, timestamp, None, None, None))


def _failures(targets: Targets) -> Iterator[Sample]:
    name = JOB_FAILURES + "_total"
    for stream, labels in _streams(targets):
        if not stream.failures:
            continue
        template = _template(labels, "code")
        exemplar_code = stream.last_failed_code if _exemplar_fits(stream.last_failed_job) else None
        for code, total in stream.failures.items():
            code_labels = template.copy()
            code_labels["code"] = code
            exemplar = (
                Exemplar({_EXEMPLAR_LABEL: stream.last_failed_job}, 1.0)
                if code == exemplar_code
                else None
            )
            yield _new(Sample, (name, code_labels, total, None, exemplar, None))


# OpenMetrics: an exemplar's label names and values take at most 128 UTF-8 characters in all;
# parsers refuse the whole exposition past it.
EXEMPLAR_MAX_CHARS = 128
_EXEMPLAR_LABEL = "job_id"


def _exemplar_fits(job_id: str) -> bool:
    """A JobId that can be an exemplar: one too long goes without (cut, it names no job)."""
    return 0 < len(job_id) <= EXEMPLAR_MAX_CHARS - len(_EXEMPLAR_LABEL)


def _run_duration(targets: Targets) -> Iterator[Sample]:
    """Every finished state, an empty histogram when nothing finished in it yet."""
    for stream, labels in _streams(targets):
        template = _template(labels, "state")
        template_le = _template(labels, "state", "le")
        durations = stream.run_duration
        for state in FINISHED_STATES:
            state_labels = template.copy()
            state_labels["state"] = state
            with_le = template_le.copy()
            with_le["state"] = state
            hist = durations.get(state, _EMPTY_DURATION)
            yield from _histogram(RUN_DURATION, state_labels, with_le, hist)


def _queue_wait(targets: Targets) -> Iterator[Sample]:
    for stream, labels in _streams(targets):
        sorted_labels = _template(labels)
        yield from _histogram(QUEUE_WAIT, sorted_labels, _template(labels, "le"), stream.queue_wait)


def _stream_metrics(targets: Targets) -> Iterator[Metric]:
    yield _family(
        JOBS,
        "Jobs now in each active state (Submitted, Running, Pause)." + _POLL,
        "gauge",
        _LazySamples(_jobs, targets),
    )
    yield _family(
        JOBS_FINISHED,
        "Jobs that reached a finished state (Success, Failed, Cancel), each counted once." + _POLL,
        "counter",
        _LazySamples(_finished, targets),
    )
    yield _family(
        JOB_FAILURES,
        "Failed jobs by failure Code (rare codes grouped as other); the exemplar carries the"
        " latest failed JobId." + _POLL,
        "counter",
        _LazySamples(_failures, targets),
    )
    yield _family(
        RUN_DURATION,
        "StartTime to EndTime of finished jobs, by finished state." + _POLL,
        "histogram",
        _LazySamples(_run_duration, targets),
    )
    yield _family(
        QUEUE_WAIT,
        "CreationTime to StartTime of jobs." + _POLL,
        "histogram",
        _LazySamples(_queue_wait, targets),
    )
    yield _family(
        OLDEST,
        "Unix time of the oldest job in a state (CreationTime for Submitted, StartTime for"
        " Running); absent when there is none." + _POLL,
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
        up.append(_sample(UP, labels, 1 if target.up else 0))
        if target.last_success_time is not None:
            last_success.append(_sample(LAST_SUCCESS, labels, target.last_success_time))
        if target.last_poll_duration is not None:
            poll_duration.append(_sample(POLL_DURATION, labels, target.last_poll_duration))
        tracked.append(_sample(TRACKED_JOBS, labels, target.tracked_jobs))
        idle.append(_sample(IDLE_STREAMS, labels, target.idle_streams))
        for service, count in sorted(target.queues_dropped.items()):
            dropped.append(_sample(QUEUES_DROPPED, {**labels, "service": service}, count))
        for kind in ANOMALY_KINDS:
            anomalies.append(
                _sample(
                    JOB_ANOMALIES + "_total",
                    {**labels, "kind": kind},
                    target.anomalies.get(kind, 0),
                )
            )
    yield _family(
        UP,
        "1 when the target's last poll of the CI API succeeded completely, else 0.",
        "gauge",
        up,
    )
    yield _family(
        LAST_SUCCESS,
        "Unix time the last poll of the CI API that succeeded completely finished; absent"
        " before the first success.",
        "gauge",
        last_success,
    )
    yield _family(
        POLL_DURATION, "How long the last poll of the CI API took.", "gauge", poll_duration
    )
    yield _family(
        TRACKED_JOBS,
        "Jobs held in memory for accounting (active or recently finished)." + _POLL,
        "gauge",
        tracked,
    )
    yield _family(
        IDLE_STREAMS,
        "Streams (queue, tag) the last poll of the CI API left out because they have been"
        " idle (idle_tag_backoff).",
        "gauge",
        idle,
    )
    yield _family(
        QUEUES_DROPPED,
        "Queues of the last listing of a service beyond max_queues_per_service: neither polled"
        " nor exported." + _POLL,
        "gauge",
        dropped,
    )
    yield _family(
        JOB_ANOMALIES,
        "Jobs CI listed as it should not have, counted once each: duplicate_id (a JobId another"
        " queue already had), resurrected (a finished job active again)." + _POLL,
        "counter",
        anomalies,
    )


def _reload_metrics(reload: ReloadStatus) -> Iterator[Metric]:
    yield _family(
        RELOAD_OK,
        "1 when the last configuration reload succeeded (or none was tried), else 0.",
        "gauge",
        [_sample(RELOAD_OK, {}, 1 if reload.successful else 0)],
    )
    if reload.last_success_time is not None:
        yield _family(
            RELOAD_TIME,
            "Unix time of the last successful configuration load.",
            "gauge",
            [_sample(RELOAD_TIME, {}, reload.last_success_time)],
        )


def _api_metrics(api: ApiSnapshot) -> Iterator[Metric]:
    requests = [
        _sample(
            API_REQUESTS + "_total",
            {
                "bucket": bucket,
                "region": region,
                "endpoint": endpoint,
                "status": status,
            },
            total,
        )
        for (bucket, region, endpoint, status), total in sorted(api.requests.items())
    ]
    errors = [
        _sample(
            API_ERRORS + "_total",
            {
                "bucket": bucket,
                "region": region,
                "endpoint": endpoint,
                "error": error,
            },
            total,
        )
        for (bucket, region, endpoint, error), total in sorted(api.errors.items())
    ]
    durations: list[Sample] = []
    for endpoint, hist in sorted(api.durations.items()):
        labels = {"endpoint": endpoint}
        durations.extend(_histogram(API_DURATION, labels, _template(labels, "le"), hist))
    yield _family(
        API_REQUESTS,
        "Calls made to the CI API, by endpoint and HTTP status (or error).",
        "counter",
        requests,
    )
    yield _family(
        API_ERRORS,
        "Failed calls to the CI API, by endpoint and error (CI Code or failure kind).",
        "counter",
        errors,
    )
    yield _family(
        API_DURATION, "Duration of calls to the CI API, by endpoint.", "histogram", durations
    )
    retried, throttled, spacing = API_RETRIED, API_THROTTLED, API_SPACING
    for name, counts, help_text in (
        (retried, api.retries, "Calls to the CI API made again after a failed one."),
        (throttled, api.throttled, "CI API answers that said slow down (429, 503, SlowDown)."),
    ):
        samples = [
            _sample(name + "_total", {"bucket": b, "region": r, "endpoint": e}, total)
            for (b, r, e), total in sorted(counts.items())
        ]
        yield _family(name, help_text + " By endpoint.", "counter", samples)
    yield _family(
        spacing,
        "Seconds kept between a target's API calls since CI throttled it; 0 when not slowed.",
        "gauge",
        [
            _sample(spacing, {"bucket": b, "region": r}, seconds)
            for (b, r), seconds in sorted(api.spacing.items())
        ],
    )


class CICollector(Collector):
    """Renders the latest snapshot and the API call statistics, fresh on every scrape."""

    def __init__(self, source: SnapshotSource, stats: ApiStats, version: str) -> None:
        self._source = source
        self._stats = stats
        self._version = version

    def describe(self) -> list[Metric]:
        # Registration must not take a snapshot; an empty describe() also skips the registry's
        # duplicate-name bookkeeping, which is fine for the exporter's single collector.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source.snapshot()
        targets = snapshot.targets
        yield from _queue_metrics(targets)
        yield from _stream_metrics(targets)
        yield from _target_metrics(targets)
        # ApiStats, not the snapshot's copy: calls are counted as they happen, mid-poll too.
        yield from _api_metrics(self._stats.snapshot())
        yield from _reload_metrics(snapshot.reload)
        yield _family(
            BUILD_INFO,
            "Build information of the exporter; always 1.",
            "gauge",
            [_sample(BUILD_INFO, {"version": self._version}, 1)],
        )
