"""The tools the collectors build metric families with: names, samples, histograms.

No state: every function builds new objects from its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter.snapshot import Histogram

PREFIX = "tencent_ci_"
POLL = " Value from the last poll of the CI API."

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
CALLBACKS = PREFIX + "callbacks_received"  # a counter: exposed with _total
CALLBACKS_REJECTED = PREFIX + "callback_requests_rejected"  # a counter
LAST_CALLBACK = PREFIX + "last_callback_timestamp_seconds"
DISCOVERED = PREFIX + "discovery_buckets"
DISCOVERY_OK = PREFIX + "discovery_last_successful"
DISCOVERY_TIME = PREFIX + "discovery_last_success_timestamp_seconds"
DISCOVERY_DURATION = PREFIX + "discovery_duration_seconds"

EXPOSITION_SECONDS = PREFIX + "exposition_render_seconds"
EXPOSITION_BYTES = PREFIX + "exposition_bytes"
EXPOSITION_RENDERS = PREFIX + "exposition_renders"  # a counter: exposed with _total

# prometheus_client's own float formatting (its histograms' `le` values), typed.
_go_float: Callable[[float], str] = floatToGoString

# Skips the NamedTuple's Python-level __new__ (defaults handling): ~40% cheaper per sample.
new = tuple.__new__


def sample(name: str, labels: dict[str, str], value: float) -> Sample:
    return new(Sample, (name, labels, value, None, None, None))


@lru_cache(maxsize=16)
def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label values, formatted as prometheus_client's own histograms format them."""
    return tuple(_go_float(bound) for bound in bounds)


def template(fixed: dict[str, str], *slots: str) -> dict[str, str]:
    """`fixed` plus empty `slots`, keys in sorted order.

    The exposition sorts every sample's labels; presorted they cost it a single pass (~20% of
    its per-sample sort time). Filling a slot in a copy keeps the key's place, so copies of one
    template per stream stay sorted.
    """
    return {key: fixed.get(key, "") for key in sorted((*fixed, *slots))}


def histogram(
    name: str, labels: dict[str, str], with_le: dict[str, str], hist: Histogram
) -> Iterator[Sample]:
    """Buckets (cumulative, +Inf last), _count and _sum, contiguous as OpenMetrics wants.

    `with_le` is `labels` plus an `le` slot, see template."""
    bucket = name + "_bucket"
    for le, value in zip(_le_values(hist.bounds), hist.cumulative, strict=True):
        bucket_labels = with_le.copy()
        bucket_labels["le"] = le
        yield new(Sample, (bucket, bucket_labels, value, None, None, None))
    inf_labels = with_le.copy()
    inf_labels["le"] = "+Inf"
    yield new(Sample, (bucket, inf_labels, hist.count, None, None, None))
    yield new(Sample, (name + "_count", labels, hist.count, None, None, None))
    yield new(Sample, (name + "_sum", labels, hist.sum, None, None, None))


def family(name: str, documentation: str, typ: str, samples: Iterable[Sample]) -> Metric:
    unit = "seconds" if name.endswith("_seconds") else ""
    metric = Metric(name, documentation, typ, unit)
    # Every exposition (and registry.get_sample_value) only iterates `samples`.
    metric.samples = samples  # type: ignore[assignment]
    return metric
