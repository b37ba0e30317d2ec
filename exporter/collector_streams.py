"""The families of the streams (exporter.poll.streams): per bucket, region, service, queue and
tag, the jobs in each state, those finished and failed, their run time and queue wait, the
oldest job in each state.

Speed matters: a large deployment has ~10,000 streams per rendering. The stream families
therefore produce their samples while the exposition iterates them (_LazySamples), build
`Sample` tuples directly instead of through `add_metric` (which zips label names per sample), and
hand over label dicts whose keys are already sorted (see families.template).

No state: every function builds new families from the snapshot it is given, which is immutable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample

from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES
from exporter.families import (
    JOB_FAILURES,
    JOBS,
    JOBS_FINISHED,
    OLDEST,
    POLL,
    QUEUE_WAIT,
    RUN_DURATION,
    family,
    histogram,
    new,
    template,
)
from exporter.snapshot import StreamSnapshot, TargetSnapshot

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


def stream_families(targets: Targets) -> Iterator[Metric]:
    """The families of every stream (queue, tag): jobs by state, finished and failed jobs, run
    time and queue wait histograms, the oldest job by state."""
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
