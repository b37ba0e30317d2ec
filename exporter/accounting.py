"""One stream's job accounting: which jobs are active now, and which finished jobs have been
counted. Every finished job is counted exactly once. Pure: no I/O, no clock; the poller feeds it
the listings of one poll and commits them all at once, or not at all.

How a poll of a stream finds every finished job (the listings run in this order):
1. list the active jobs (Submitted, Running, Pause), whatever their creation time;
2. list the finished jobs created since `window_start` (minus a second, so that it does not
   matter whether CI's bounds are inclusive or exclusive);
3. describe by id the jobs that were active at the last poll and now appear in neither
   listing: long runners created before the window.
A job created before `window_start` and still unfinished at step 1 of a poll is in that poll's
active listing, so it is found later by step 3; one created after is found by step 2. After a
successful poll `window_start` moves up to when step 1 began on CI's clock, less a margin for
the uncertainty of that clock, and never moves down. Finished jobs that the window can return
again are remembered by JobId until the window passes their creation time.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES, DescribeResult, Job
from exporter.snapshot import DURATION_BUCKETS, FailedJob, Histogram, StreamSnapshot

OTHER_CODE = "other"

# The age of the backlog is told by when its oldest job was created; of the running jobs, by
# when the longest-running one started.
_OLDEST_BY = {"Submitted": "creation_time", "Running": "start_time"}
RECENT_FAILURES = 50


def listing_boundary(local_time: float, clock_offset: float | None, skew_tolerance: float) -> int:
    """When a listing that began at `local_time` began on the clock that stamps CI's jobs, less
    what that estimate may be off by. CI's Date header (`clock_offset`) only centres the
    estimate: it comes from CI's front end, and nothing says the job clock agrees with it, so
    the whole tolerance is always taken off (and a second for CI's one-second times)."""
    return math.floor(local_time + (clock_offset or 0.0) - skew_tolerance) - 1


class HistogramAccumulator:
    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
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
    later ones become "other". Shared by every stream so the cap holds for the whole exporter."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self._lock = threading.Lock()  # targets poll on threads of their own

    def label(self, code: str) -> str:
        code = code or "unknown"
        with self._lock:
            if code in self._admitted:
                return code
            if len(self._admitted) < self.limit:
                self._admitted.add(code)
                return code
        return OTHER_CODE


@dataclass(slots=True)
class ActiveJob:
    state: str
    creation_time: float | None
    start_time: float | None
    wait_observed: bool


@dataclass(frozen=True, slots=True)
class StreamKey:
    service: str
    queue_id: str
    tag: str


@dataclass(frozen=True, slots=True)
class StreamListings:
    """What one poll of a stream fetched, in the order fetched."""

    active: Sequence[Job]
    finished: Sequence[Job]
    described: DescribeResult | None = None
    # The active listing took more than one page. CI's nextToken is opaque: if it counts jobs,
    # a job finishing mid-listing shifts the pages and an active job is skipped.
    active_paged: bool = False


@dataclass
class StreamTracker:
    key: StreamKey
    codes: CodeLimiter
    # CI-clock creation time from which the next finished listing must start; None until the
    # stream's first poll begins.
    window_start: int | None = None
    # CI-clock time the stream's first poll began: jobs that finished before are the baseline
    # and are not counted. The first successful poll sets `counting`.
    baseline_time: float | None = None
    baseline_fixed: bool = False  # set from a stream's own past (a queue that came back)
    last_boundary: int | None = None  # the previous successful poll's
    counting: bool = False
    active: dict[str, ActiveJob] = field(default_factory=dict)
    # JobId -> creation time of finished jobs a future window listing can still return.
    seen: dict[str, float] = field(default_factory=dict)
    finished: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    run_duration: dict[str, HistogramAccumulator] = field(default_factory=dict)
    queue_wait: HistogramAccumulator = field(default_factory=HistogramAccumulator)
    # Usually shared by every stream of a target, so the newest failures of all are at hand.
    recent_failures: deque[FailedJob] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))
    last_failed_job: str = ""
    last_failed_code: str = ""
    vanished: int = 0  # active jobs CI no longer knew (deleted): not counted as finished

    def __post_init__(self) -> None:
        for state in FINISHED_STATES:
            self.run_duration.setdefault(state, HistogramAccumulator())

    # -- planning -------------------------------------------------------------------------

    def begin(self, boundary: int, ci_start: float) -> None:
        """Until the stream's first successful poll, its baseline is where polling of it began
        (`ci_start`, and the window from `boundary`), taken on the best estimate of CI's clock
        so far. What finishes after that is counted at the first success, even if the polls
        in between failed."""
        if self.counting or self.baseline_fixed:
            return
        self.window_start, self.baseline_time = boundary, ci_start

    def finished_listing_start(self, boundary: int) -> int:
        """The startCreationTime of this poll's finished listing. `boundary` is where the window
        would begin for a stream seen for the first time."""
        start = self.window_start if self.window_start is not None else boundary
        # One second lower: with exclusive bounds a job created in the very second of the
        # edge would otherwise be missed; inclusive bounds return it again, and `seen` drops it.
        return start - 1

    def to_describe(self, active: Iterable[Job], finished: Iterable[Job]) -> list[str]:
        """Jobs active at the last poll that neither listing returned as active or finished."""
        listed = {job.job_id for job in active if job.state in ACTIVE_STATES}
        listed.update(job.job_id for job in finished)
        return [job_id for job_id in self.active if job_id not in listed]

    def oldest_creation(self, job_ids: Iterable[str]) -> float | None:
        """The earliest creation time among these tracked active jobs."""
        times = [
            t
            for t in (self.active[i].creation_time for i in job_ids if i in self.active)
            if t is not None
        ]
        return min(times) if times else None

    # -- commit ---------------------------------------------------------------------------

    def commit(self, listings: StreamListings, boundary: int, now: float) -> None:
        """Apply one successful poll. `boundary` is the CI-clock time (less the margin) at which
        the active listing began: the next window starts there."""
        baseline = not self.counting
        previous = self.active
        self.active = {}
        for job in listings.active:
            if job.state in ACTIVE_STATES and job.job_id not in self.seen:
                self._track_active(job, previous.get(job.job_id))
        # A tracked job that the active listing returns finished (CI's index lagging) is as good
        # as listed finished; once counted it is no longer tracked, so a repeat is ignored.
        late = [
            job
            for job in listings.active
            if job.state in FINISHED_STATES and job.job_id in previous
        ]
        for job in (*listings.finished, *late):
            if job.state in FINISHED_STATES:
                count = not baseline or self._after_baseline(job, previous)
                self._finish(job, previous, count=count, now=now)
        if listings.described is not None:
            self._apply_described(listings.described, previous, now)
        # After a paged active listing the window stays one poll behind, so that a job it may
        # have skipped (created since the last poll) is still in the next finished listing.
        edge = boundary
        if listings.active_paged and self.last_boundary is not None:
            edge = self.last_boundary
        new_start = edge if self.window_start is None else max(self.window_start, edge)
        self.window_start, self.last_boundary = new_start, boundary
        self.counting = True
        self._forget_before(new_start - 1)

    def _after_baseline(self, job: Job, previous: dict[str, ActiveJob]) -> bool:
        """In the baseline poll: seen active, or finished after the first poll began."""
        if job.job_id in previous or job.job_id in self.active:
            return True
        return (
            self.baseline_time is not None
            and job.end_time is not None
            and job.end_time > self.baseline_time
        )

    def _track_active(self, job: Job, before: ActiveJob | None) -> None:
        observed = before.wait_observed if before is not None else False
        if not observed and job.start_time is not None and job.creation_time is not None:
            # Counting wait only for jobs seen before they started would leave out the ones
            # that started between polls; a job seen started counts once here.
            if before is not None or self.counting:
                self.queue_wait.observe(job.start_time - job.creation_time)
            observed = True
        self.active[job.job_id] = ActiveJob(job.state, job.creation_time, job.start_time, observed)

    def _apply_described(
        self, described: DescribeResult, previous: dict[str, ActiveJob], now: float
    ) -> None:
        returned = set()
        for job in described.jobs:
            returned.add(job.job_id)
            if job.job_id not in previous or job.job_id in self.seen:
                continue
            if job.state in FINISHED_STATES:
                self._finish(job, previous, count=True, now=now)
            elif job.state in ACTIVE_STATES and job.job_id not in self.active:
                # Listed in neither page set while still active: a page race; keep tracking it.
                self._track_active(job, previous[job.job_id])
        gone = set(described.non_exist_ids) - returned
        self.vanished += sum(1 for job_id in gone if job_id in previous)

    def _finish(self, job: Job, previous: dict[str, ActiveJob], *, count: bool, now: float) -> None:
        if job.job_id in self.seen:
            return
        self.seen[job.job_id] = job.creation_time if job.creation_time is not None else now
        before = self.active.pop(job.job_id, None) or previous.get(job.job_id)
        if not count:
            return
        self.finished[job.state] += 1
        if job.start_time is not None and job.end_time is not None:
            self.run_duration[job.state].observe(job.end_time - job.start_time)
        waited = before is not None and before.wait_observed
        if not waited and job.start_time is not None and job.creation_time is not None:
            self.queue_wait.observe(job.start_time - job.creation_time)
        if job.state == "Failed":
            self._record_failure(job, now)

    def _record_failure(self, job: Job, now: float) -> None:
        code = self.codes.label(job.code)
        self.failures[code] += 1
        self.last_failed_job, self.last_failed_code = job.job_id, code
        self.recent_failures.append(
            FailedJob(
                time=job.end_time if job.end_time is not None else now,
                service=self.key.service,
                queue_id=self.key.queue_id,
                tag=self.key.tag,
                job_id=job.job_id,
                code=job.code,
                message=job.message,
            )
        )

    def _forget_before(self, lowest: float) -> None:
        """Drop finished jobs no future window listing can return."""
        if self.seen:
            self.seen = {job_id: t for job_id, t in self.seen.items() if t >= lowest}

    # -- reading --------------------------------------------------------------------------

    @property
    def tracked_jobs(self) -> int:
        return len(self.active) + len(self.seen)

    def snapshot(self) -> StreamSnapshot:
        active = dict.fromkeys(ACTIVE_STATES, 0)
        oldest: dict[str, float] = {}
        for job in self.active.values():
            active[job.state] += 1
            since = _OLDEST_BY.get(job.state)
            if since is not None:
                t = getattr(job, since)
                if t is not None and t < oldest.get(job.state, t + 1):
                    oldest[job.state] = t
        return StreamSnapshot(
            service=self.key.service,
            queue_id=self.key.queue_id,
            tag=self.key.tag,
            active=active,
            finished={state: self.finished[state] for state in FINISHED_STATES},
            failures=dict(self.failures),
            run_duration={s: h.snapshot() for s, h in self.run_duration.items()},
            queue_wait=self.queue_wait.snapshot(),
            oldest=oldest,
            last_failed_job=self.last_failed_job,
            last_failed_code=self.last_failed_code,
        )
