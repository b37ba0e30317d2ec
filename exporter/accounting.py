"""One stream's job accounting: which jobs are active now, and which finished jobs have been
counted. Every finished job is counted exactly once. Pure: no I/O, no clock; the poller feeds it
the listings of one poll and commits them all at once, or not at all.

How a poll of a stream finds every finished job (the listings run in this order, which
exporter.poll.pipeline makes structural: one task per stream, active then finished):
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

What CI should never do is handled too. A JobId that another stream of the target counted
(the same JobId in two queues) is remembered but not counted (exporter.dedupe). A counted job
listed active again, or a job older than the window that the stream never saw active, is a
finished job brought back: it is shown active but never counted again (it stays remembered
while active). Both are counted as anomalies, once per job and occurrence.

Every job held (active, or counted and remembered) is held compactly (exporter.held_jobs);
what the counted jobs add up to, counts and histograms, is the tracker's StreamCounts
(exporter.stream_counts).

Threads: a tracker belongs to its target's poll thread (exporter.poll.streams), which also
hands it a reloaded configuration's layout (set_layout) between polls.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import InitVar, dataclass, field

from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES, DescribeResult, Job
from exporter.dedupe import DUPLICATE_ID, RESURRECTED, JobKey, TargetJobIds
from exporter.held_jobs import (
    OLDEST_BY,
    ActiveJob,
    ActiveJobs,
    JobsById,
    job_id_of,
    job_key,
    pack,
    packed_creation,
    packed_state,
    wait_observed,
)
from exporter.snapshot import FailedJob, HistogramLayout, StreamSnapshot
from exporter.stream_counts import CodeLimiter, StreamCounts


def listing_boundary(local_time: float, clock_offset: float | None, skew_tolerance: float) -> int:
    """When a listing that began at `local_time` began on the clock that stamps CI's jobs, less
    what that estimate may be off by. CI's Date header (`clock_offset`) only centres the
    estimate: it comes from CI's front end, and nothing says the job clock agrees with it, so
    the whole tolerance is always taken off (and a second for CI's one-second times)."""
    return math.floor(local_time + (clock_offset or 0.0) - skew_tolerance) - 1


_DEFAULT_LAYOUT = HistogramLayout()


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


@dataclass(frozen=True, slots=True)
class TrackerState:
    """What a stream's accounting needs to resume after a restart without counting a job twice
    or losing one: where its window stands, its baseline, its active jobs and the counted jobs
    a window can still return. Not its counts: counters start at 0 in a new process."""

    window_start: int | None
    baseline_time: float | None
    baseline_fixed: bool
    last_boundary: int | None
    counting: bool
    active: tuple[tuple[str, ActiveJob], ...]  # (JobId, record)
    counted: tuple[tuple[str, float], ...]  # (JobId, creation time)


@dataclass
class StreamTracker:
    key: StreamKey
    codes: InitVar[CodeLimiter]  # handed to its counts
    # CI-clock creation time from which the next finished listing must start; None until the
    # stream's first poll begins.
    window_start: int | None = None
    # CI-clock time the stream's first poll began: jobs that finished before are the baseline
    # and are not counted. The first successful poll sets `counting`.
    baseline_time: float | None = None
    baseline_fixed: bool = False  # set from a stream's own past (a queue that came back)
    last_boundary: int | None = None  # the previous successful poll's
    counting: bool = False
    # JobKey -> packed ActiveJob.
    _active: dict[JobKey, int] = field(default_factory=dict, init=False, repr=False)
    # JobKey -> creation time of finished jobs a future window listing can still return.
    _seen: dict[JobKey, float] = field(default_factory=dict, init=False, repr=False)
    # The bounds of the stream's histograms (None: its service's have none), and the deque of
    # its target's newest failures: handed to its counts.
    layout: InitVar[HistogramLayout | None] = _DEFAULT_LAYOUT
    recent_failures: InitVar[deque[FailedJob] | None] = None
    # Shared by every stream of a target (see share_ids): who counted which job.
    ids: TargetJobIds = field(default_factory=TargetJobIds, repr=False, compare=False)
    vanished: int = 0  # active jobs CI no longer knew (deleted): not counted as finished
    counts: StreamCounts = field(init=False)  # what the counted jobs add up to

    def __post_init__(
        self,
        codes: CodeLimiter,
        layout: HistogramLayout | None,
        recent_failures: deque[FailedJob] | None,
    ) -> None:
        where = (self.key.service, self.key.queue_id, self.key.tag)
        self.counts = (
            StreamCounts(codes, where, layout)
            if recent_failures is None
            else StreamCounts(codes, where, layout, recent_failures)
        )

    @property
    def active(self) -> ActiveJobs:
        return ActiveJobs(self._active)

    @property
    def seen(self) -> JobsById[float]:
        """The counted jobs a window can still return, with their creation times."""
        return JobsById(self._seen)

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
        listed = {job_key(job.job_id) for job in active if job.state in ACTIVE_STATES}
        listed.update(job_key(job.job_id) for job in finished)
        return [job_id_of(key) for key in self._active if key not in listed]

    def oldest_creation(self, job_ids: Iterable[str]) -> float | None:
        """The earliest creation time among these tracked active jobs."""
        records = (self._active.get(job_key(job_id)) for job_id in job_ids)
        times = [t for t in (packed_creation(r) for r in records if r is not None) if t is not None]
        return min(times) if times else None

    # -- commit ---------------------------------------------------------------------------

    def commit(self, listings: StreamListings, boundary: int, now: float) -> None:
        """Apply one successful poll. `boundary` is the CI-clock time (less the margin) at which
        the active listing began: the next window starts there."""
        baseline = not self.counting
        previous = self._active
        self._active = {}
        late: list[tuple[Job, JobKey]] = []
        for job in listings.active:
            key = job_key(job.job_id)
            if job.state in ACTIVE_STATES:
                if key in self._seen or self._old_newcomer(job, key, previous, baseline):
                    self._track_revived(job, key, key in previous)
                else:
                    self._track_active(job, key, previous.get(key))
            elif job.state in FINISHED_STATES and key in previous:
                # A tracked job that the active listing returns finished (CI's index lagging)
                # is as good as listed finished; once counted it is no longer tracked, so a
                # repeat is ignored.
                late.append((job, key))
        finished = [(job, job_key(job.job_id)) for job in listings.finished]
        for job, key in (*finished, *late):
            if job.state in FINISHED_STATES:
                count = not baseline or self._after_baseline(job, key, previous)
                self._finish(job, key, previous, count=count, now=now)
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

    def _after_baseline(self, job: Job, key: JobKey, previous: dict[JobKey, int]) -> bool:
        """In the baseline poll: seen active, or finished after the first poll began."""
        if key in previous or key in self._active:
            return True
        # A workflow run's listing gives no EndTime (exporter.ci.dialect): one created after
        # the baseline surely finished after it.
        ended = job.end_time if job.end_time is not None else job.creation_time
        return self.baseline_time is not None and ended is not None and ended > self.baseline_time

    def report(self, job: Job, now: float) -> str:
        """A finished job CI pushed (a callback), between polls: "counted" now, unless a
        listing or an earlier callback counted it ("duplicate"), or a listing would not count
        it either ("not_counted": it finished before the stream's baseline, or is older than
        the window and not tracked active: counted and forgotten, or never the stream's).
        Counted, it is remembered as a listed one is: the listing that returns it later
        counts nothing, and no describe looks for it."""
        key = job_key(job.job_id)
        if key in self._seen or key in self.ids:
            return "duplicate"
        # Past the window, a job the stream does not remember is one it counted and forgot,
        # or never had: only a tracked job or one in the window may be counted.
        listed = self._in_window(job) if self.counting else self._after_baseline(job, key, {})
        if not (key in self._active or listed):
            return "not_counted"
        self._finish(job, key, {}, count=True, now=now)
        return "counted"

    def report_only(self, since: float) -> None:
        """Make this a stream no listing feeds (a job type CI lists nowhere): every job it is
        told of that was created since `since` counts once, and older ones are forgotten."""
        if self.counting and self.window_start is not None and since < self.window_start + 60:
            return  # moved on at most a minute ago: forgetting is not redone per callback
        self.counting = True
        self.window_start = self.last_boundary = math.floor(since)
        self._forget_before(since - 1)

    def _in_window(self, job: Job) -> bool:
        """Created where the stream's next finished listing will look."""
        return (
            self.counting
            and self.window_start is not None
            and job.creation_time is not None
            and job.creation_time >= self.window_start - 1
        )

    def _old_newcomer(
        self, job: Job, key: JobKey, previous: dict[JobKey, int], baseline: bool
    ) -> bool:
        """Listed active for the first time, yet created before the window of a stream that
        has polled successfully: it existed at the last active listing and was not in it, so
        it had finished, and CI made it active again (see the module)."""
        return (
            not baseline
            and self.last_boundary is not None
            and self.window_start is not None
            and key not in previous
            and job.creation_time is not None
            and job.creation_time < self.window_start - 1
        )

    def _track_revived(self, job: Job, key: JobKey, tracked: bool) -> None:
        """A finished job active again: shown active, remembered as counted while it is, so
        that it is not counted when it finishes again. The anomaly counts once per revival."""
        if not tracked:
            self.ids.note(RESURRECTED)
            if key not in self._seen:
                self._seen[key] = job.creation_time if job.creation_time is not None else 0.0
        self._active[key] = pack(job.state, job.creation_time, job.start_time, True)

    def _track_active(self, job: Job, key: JobKey, before: int | None) -> None:
        observed = before is not None and wait_observed(before)
        if not observed and job.start_time is not None and job.creation_time is not None:
            # Counting wait only for jobs seen before they started would leave out the ones
            # that started between polls; a job seen started counts once here.
            if before is not None or self.counting:
                self.counts.observe_wait(job.start_time - job.creation_time)
            observed = True
        self._active[key] = pack(job.state, job.creation_time, job.start_time, observed)

    def _apply_described(
        self, described: DescribeResult, previous: dict[JobKey, int], now: float
    ) -> None:
        returned = set()
        for job in described.jobs:
            key = job_key(job.job_id)
            returned.add(key)
            if key not in previous:
                continue
            if job.state in FINISHED_STATES:
                self._finish(job, key, previous, count=True, now=now)
            elif job.state in ACTIVE_STATES and key not in self._active:
                # Listed in neither page set while still active: a page race; keep tracking it.
                self._track_active(job, key, previous[key])
        gone = {job_key(job_id) for job_id in described.non_exist_ids} - returned
        self.vanished += sum(1 for key in gone if key in previous)

    def _finish(
        self, job: Job, key: JobKey, previous: dict[JobKey, int], *, count: bool, now: float
    ) -> None:
        if key in self._seen:
            self._active.pop(key, None)  # a revived job, finished again
            return
        created = self._seen[key] = job.creation_time if job.creation_time is not None else now
        before = self._active.pop(key, None)
        if before is None:
            before = previous.get(key)
        if not self.ids.claim(key, created):
            if count:
                self.ids.note(DUPLICATE_ID)
            return
        if not count:
            return
        self.counts.finish(job, before is not None and wait_observed(before), now)

    def set_layout(self, layout: HistogramLayout | None) -> bool:
        """Take up the bounds of a new configuration: see StreamCounts.set_layout."""
        return self.counts.set_layout(layout)

    def _forget_before(self, lowest: float) -> None:
        """Drop finished jobs no future window listing can return (a revived job that is
        active is kept: it must not be counted when it finishes again)."""
        if self._seen:
            active = self._active
            self._seen = {k: t for k, t in self._seen.items() if t >= lowest or k in active}

    def share_ids(self, ids: TargetJobIds) -> None:
        """Take part in the target's view of counted jobs (exporter.dedupe), adding to it the
        ones remembered here: a restart restores the view from the trackers."""
        self.ids = ids
        for key, created in self._seen.items():
            ids.claim(key, created)

    # -- restart --------------------------------------------------------------------------

    def to_state(self) -> TrackerState:
        return TrackerState(
            window_start=self.window_start,
            baseline_time=self.baseline_time,
            baseline_fixed=self.baseline_fixed,
            last_boundary=self.last_boundary,
            counting=self.counting,
            active=tuple(
                (job_id_of(key), ActiveJob.unpack(packed)) for key, packed in self._active.items()
            ),
            counted=tuple((job_id_of(key), t) for key, t in self._seen.items()),
        )

    @classmethod
    def from_state(
        cls,
        key: StreamKey,
        state: TrackerState,
        codes: CodeLimiter,
        recent_failures: deque[FailedJob],
    ) -> StreamTracker:
        """A tracker that takes up where the one that saved `state` stopped, with counts at 0."""
        tracker = cls(
            key,
            codes,
            window_start=state.window_start,
            baseline_time=state.baseline_time,
            # A stream whose polls had begun but never succeeded keeps the baseline it had: the
            # poller's `begin` would otherwise move it to the restart.
            baseline_fixed=state.baseline_fixed
            or (not state.counting and state.window_start is not None),
            last_boundary=state.last_boundary,
            counting=state.counting,
            recent_failures=recent_failures,
        )
        tracker._seen = {job_key(job_id): t for job_id, t in state.counted}
        # A job both counted and active is a revived one: shown active, not counted again.
        tracker._active = {
            k: record.pack()
            for k, record in ((job_key(job_id), r) for job_id, r in state.active)
            if record.state in ACTIVE_STATES
        }
        return tracker

    # -- reading --------------------------------------------------------------------------

    @property
    def tracked_jobs(self) -> int:
        return len(self._active) + len(self._seen)

    def snapshot(self) -> StreamSnapshot:
        active = dict.fromkeys(ACTIVE_STATES, 0)
        oldest: dict[str, float] = {}
        for packed in self._active.values():
            state = packed_state(packed)
            active[state] += 1
            time_of = OLDEST_BY.get(state)
            if time_of is not None:
                t = time_of(packed)
                if t is not None and t < oldest.get(state, t + 1):
                    oldest[state] = t
        counts = self.counts
        run_duration, queue_wait = counts.histograms()
        return StreamSnapshot(
            service=self.key.service,
            queue_id=self.key.queue_id,
            tag=self.key.tag,
            active=active,
            finished={state: counts.finished[state] for state in FINISHED_STATES},
            failures=dict(counts.failures),
            run_duration=run_duration,
            queue_wait=queue_wait,
            oldest=oldest,
            last_failed_job=counts.last_failed_job,
            last_failed_code=counts.last_failed_code,
        )
