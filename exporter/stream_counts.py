"""What a stream's counted jobs add up to (exporter.accounting decides which jobs count, once):
finished jobs by state, failures by code, the run-time and queue-wait histograms, the newest
failures and the last failed job. Histograms cost series, so they are made at their first
observation, with the bounds of the configuration (HistogramLayout), and not at all for a
service whose histograms are off.

Threads: a stream's counts belong to its tracker, so to its target's poll thread; the deque of
recent failures is its target's, shared by the target's streams on that thread. The
CodeLimiter is the one object shared across targets, under its lock.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

from exporter.ci.models import FINISHED_STATES, Job
from exporter.snapshot import FailedJob, Histogram, HistogramLayout, cap_label

OTHER_CODE = "other"
RECENT_FAILURES = 50


class HistogramAccumulator:
    """Observations counted in the buckets of `bounds` (ascending; +Inf comes on top)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        value = max(0.0, value)
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> Histogram:
        cumulative, running = [], 0
        for n in self.counts:
            running += n
            cumulative.append(running)
        return Histogram(self.bounds, tuple(cumulative), self.total, self.count)


class CodeLimiter:
    """Failure codes are open-ended text: the first `limit` distinct codes keep their own label,
    later ones become "other". Shared by every stream so the cap holds for the whole exporter.
    A code is cut to MAX_LABEL_CHARS first (codes alike up to there are one label)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()  # targets poll on threads of their own

    def label(self, code: str) -> str:
        code = cap_label(code) if code else "unknown"
        with self._lock:
            if code in self._admitted:
                return code
            if len(self._admitted) < self.limit:
                self._admitted.add(code)
                return code
        return OTHER_CODE


@dataclass
class StreamCounts:
    codes: CodeLimiter
    where: tuple[str, str, str]  # the stream's service, queue and tag, for its failures
    # The bounds of the stream's histograms; None: its service's histograms are off, nothing
    # is observed. Histograms are made at their first observation (a series only for what
    # happened): finished state -> run time, and the queue wait. See set_layout for a change.
    layout: HistogramLayout | None = field(default_factory=HistogramLayout)
    # Usually shared by every stream of a target, so the newest failures of all are at hand.
    recent_failures: deque[FailedJob] = field(
        default_factory=lambda: deque(maxlen=RECENT_FAILURES), repr=False
    )
    finished: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    run_duration: dict[str, HistogramAccumulator] = field(default_factory=dict)
    queue_wait: HistogramAccumulator | None = None
    last_failed_job: str = ""
    last_failed_code: str = ""
    # When that job ended: jobs of one poll are committed in creation order, and the exemplar
    # must be the one that failed last, not the one created last.
    last_failed_time: float = -math.inf

    def finish(self, job: Job, waited: bool, now: float) -> None:
        """A finished job counted; `waited`: its queue wait was observed while it was active."""
        self.finished[job.state] += 1
        if job.start_time is not None and job.end_time is not None:
            self._observe_run(job.state, job.end_time - job.start_time)
        if not waited and job.start_time is not None and job.creation_time is not None:
            self.observe_wait(job.start_time - job.creation_time)
        if job.state == "Failed":
            self._record_failure(job, now)

    def _observe_run(self, state: str, seconds: float) -> None:
        if self.layout is None:
            return
        histogram = self.run_duration.get(state)
        if histogram is None:
            histogram = self.run_duration[state] = HistogramAccumulator(self.layout.run_time)
        histogram.observe(seconds)

    def observe_wait(self, seconds: float) -> None:
        if self.layout is None:
            return
        if self.queue_wait is None:
            self.queue_wait = HistogramAccumulator(self.layout.queue_wait)
        self.queue_wait.observe(seconds)

    def set_layout(self, layout: HistogramLayout | None) -> bool:
        """Take up the bounds of a new configuration (None: histograms off). When they changed,
        the histograms are dropped and start again from their next observation: buckets that
        changed are new series, and Prometheus sees the series it keeps going back to 0 as a
        counter reset, so rate() and histogram_quantile() stay right. Counters, gauges and
        what the stream remembers of its jobs are untouched. Returns whether it changed."""
        if layout == self.layout:
            return False
        self.layout, self.run_duration, self.queue_wait = layout, {}, None
        return True

    def _record_failure(self, job: Job, now: float) -> None:
        code = self.codes.label(job.code)
        self.failures[code] += 1
        ended = job.end_time if job.end_time is not None else now
        if ended >= self.last_failed_time:
            self.last_failed_job, self.last_failed_code = job.job_id, code
            self.last_failed_time = ended
        service, queue_id, tag = self.where
        self.recent_failures.append(
            FailedJob(ended, service, queue_id, tag, job.job_id, job.code, job.message)
        )

    def histograms(self) -> tuple[dict[str, Histogram], Histogram | None]:
        """Run time by finished state, and queue wait, as the stream's snapshot shows them."""
        run_duration = {
            state: self.run_duration[state].snapshot()
            for state in FINISHED_STATES
            if state in self.run_duration
        }
        return run_duration, None if self.queue_wait is None else self.queue_wait.snapshot()
