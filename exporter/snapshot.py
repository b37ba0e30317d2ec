"""The immutable picture that /metrics renders. The poller builds one per poll and swaps it in;
the collector only reads. Aggregates only: its size does not grow with the number of jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.ci.models import Queue

# Label values that come from CI (a queue's name and category, a failure code) are cut to this
# many characters where they become labels: CI lets them be long, and every sample repeats them.
MAX_LABEL_CHARS = 128


def cap_label(value: str) -> str:
    """`value` cut to MAX_LABEL_CHARS, ending in "..." when cut."""
    return value if len(value) <= MAX_LABEL_CHARS else value[: MAX_LABEL_CHARS - 3] + "..."


# Default bucket bounds, in seconds (the +Inf bucket comes on top). Media jobs run from seconds
# to hours, and a queue's wait from nothing to an hour of backlog. Few bounds keep a busy stream
# within the series budget (README, "Series per stream"): a run-time histogram is 10 series per
# finished state, a queue-wait histogram 8. Users choose their own in the config (histograms:).
RUN_TIME_BUCKETS: tuple[float, ...] = (5, 30, 60, 300, 900, 3600, 14400)
QUEUE_WAIT_BUCKETS: tuple[float, ...] = (1, 10, 60, 300, 3600)


@dataclass(frozen=True, slots=True)
class HistogramLayout:
    """The bucket bounds of a stream's histograms: run time (StartTime to EndTime of finished
    jobs) and queue wait (CreationTime to StartTime). Ascending, positive, finite."""

    run_time: tuple[float, ...] = RUN_TIME_BUCKETS
    queue_wait: tuple[float, ...] = QUEUE_WAIT_BUCKETS


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts for `bounds` (the +Inf bucket is `count`)."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """One (service, queue, tag) stream of one target."""

    service: str
    queue_id: str
    tag: str
    active: Mapping[str, int]  # Submitted, Running, Pause -> jobs now in that state
    finished: Mapping[str, int]  # Success, Failed, Cancel -> total since start
    failures: Mapping[str, int]  # failure code (capped, or "other") -> total
    # Histograms appear with their first observation (none for a service whose histograms
    # are off): finished state -> run-time histogram, and the queue-wait histogram or None.
    run_duration: Mapping[str, Histogram]
    queue_wait: Histogram | None
    oldest: Mapping[str, float]  # "Submitted" -> CreationTime, "Running" -> StartTime
    last_failed_job: str = ""  # JobId of the latest failure, for exemplars
    last_failed_code: str = ""  # its code as counted in `failures` (capped), for the exemplar


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    service: str
    queue: Queue


@dataclass(frozen=True, slots=True)
class FailedJob:
    """A recent failure, for the landing page."""

    time: float
    service: str
    queue_id: str
    tag: str
    job_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    bucket: str
    region: str
    up: bool
    polled: bool  # at least one poll has finished (successfully or not)
    last_poll_time: float | None
    last_success_time: float | None
    last_poll_duration: float | None
    last_error: str
    queues: tuple[QueueSnapshot, ...]
    streams: tuple[StreamSnapshot, ...]
    tracked_jobs: int
    recent_failures: tuple[FailedJob, ...] = ()
    idle_streams: int = 0  # left out of the last poll by the idle back-off
    # Per service: queues of the last listing over max_queues_per_service (not polled).
    queues_dropped: Mapping[str, int] = field(default_factory=dict)
    max_queues: int = 0  # max_queues_per_service when the snapshot was taken
    # Per kind (exporter.dedupe.ANOMALY_KINDS): jobs CI listed as it should not have.
    anomalies: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiSnapshot:
    requests: Mapping[tuple[str, str, str, str], int]  # (bucket, region, endpoint, status)
    errors: Mapping[tuple[str, str, str, str], int]  # (bucket, region, endpoint, error)
    durations: Mapping[str, Histogram]  # endpoint -> histogram
    # How the client held back. (bucket, region, endpoint) -> calls made again after a failure
    retries: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # (bucket, region, endpoint) -> answers that said slow down (429, 503, SlowDown)
    throttled: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # (bucket, region) -> seconds kept between the target's requests since CI throttled it
    spacing: Mapping[tuple[str, str], float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    successful: bool = True
    last_success_time: float | None = None  # the start, until a reload succeeds


@dataclass(frozen=True, slots=True)
class DiscoveryStatus:
    """The last bucket discovery of one (region, service), the entries listing it merged."""

    region: str
    service: str
    buckets: int  # polled for the service: listed now, or missing for less than the grace
    successful: bool  # the last listing (of every entry) succeeded
    last_success_time: float | None  # when every entry's listing last succeeded
    duration: float  # seconds the last listings took


@dataclass(frozen=True, slots=True)
class Snapshot:
    targets: tuple[TargetSnapshot, ...] = ()
    reload: ReloadStatus = ReloadStatus()
    discovery: tuple[DiscoveryStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class RenderCost:
    """The last rendering of /metrics in one format (exporter.exposition)."""

    format: str  # text, openmetrics (or either with -dots: the dots escaping)
    seconds: float  # wall time it took
    size: int  # bytes, uncompressed, of what was rendered at publish time
    renders: int  # renderings of this format so far
