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

Every job held (active, or counted and remembered) costs memory for as long as it is held, so
it is held compactly: the JobId as an int when it has CI's usual form, an active job's record
as one int. Both are exact; `active` and `seen` show them by JobId. Histograms cost series, so
they are made at their first observation, with the bounds of the configuration
(HistogramLayout), and not at all for a service whose histograms are off.

Threads: a tracker belongs to its target's poll thread (exporter.poll.streams), which also
hands it a reloaded configuration's layout (set_layout) between polls. The CodeLimiter is the
one object shared across targets, under its lock.
"""

from __future__ import annotations

import bisect
import math
import re
import struct
import threading
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from exporter.ci.models import ACTIVE_STATES, FINISHED_STATES, DescribeResult, Job
from exporter.dedupe import DUPLICATE_ID, RESURRECTED, JobKey, TargetJobIds
from exporter.snapshot import (
    FailedJob,
    Histogram,
    HistogramLayout,
    StreamSnapshot,
    cap_label,
)

OTHER_CODE = "other"

RECENT_FAILURES = 50


def listing_boundary(local_time: float, clock_offset: float | None, skew_tolerance: float) -> int:
    """When a listing that began at `local_time` began on the clock that stamps CI's jobs, less
    what that estimate may be off by. CI's Date header (`clock_offset`) only centres the
    estimate: it comes from CI's front end, and nothing says the job clock agrees with it, so
    the whole tolerance is always taken off (and a second for CI's one-second times)."""
    return math.floor(local_time + (clock_offset or 0.0) - skew_tolerance) - 1


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


# -- how tracked jobs are held (see the module doc) ----------------------------------------

_USUAL_ID = re.compile(r"[a-z][0-9a-f]{32}\Z")
_HEX_BITS = 128
_HEX_MASK = (1 << _HEX_BITS) - 1
_LETTER_BITS = {chr(c): c << _HEX_BITS for c in range(ord("a"), ord("z") + 1)}


def job_key(job_id: str) -> JobKey:
    """CI's JobIds are a letter and 32 lowercase hex digits: as an int that is half the memory
    of the text. Any other id is kept as it is (an int key never equals a str key)."""
    if len(job_id) == 33 and _USUAL_ID.match(job_id):
        return _LETTER_BITS[job_id[0]] | int(job_id[1:], 16)
    return job_id


def job_id_of(key: JobKey) -> str:
    if isinstance(key, str):
        return key
    return chr(key >> _HEX_BITS) + (key & _HEX_MASK).to_bytes(16, "big").hex()


# An active job's record packed in one int: bits 0-1 the state, bit 2 wait observed, bits 3-4
# whether each time is known, from bit 5 the two times as IEEE doubles (creation, then start).
_STATE_CODES = {state: code for code, state in enumerate(ACTIVE_STATES)}
_WAIT_OBSERVED, _HAS_CREATION, _HAS_START = 4, 8, 16
_TIMES_SHIFT = 5
_TWO_TIMES = struct.Struct("<dd")
_ONE_TIME = struct.Struct("<d")
_DOUBLE_MASK = (1 << 64) - 1


def _pack(state: str, creation: float | None, start: float | None, wait_observed: bool) -> int:
    flags = _STATE_CODES[state]
    if wait_observed:
        flags |= _WAIT_OBSERVED
    if creation is None:
        creation = 0.0
    else:
        flags |= _HAS_CREATION
    if start is None:
        start = 0.0
    else:
        flags |= _HAS_START
    return int.from_bytes(_TWO_TIMES.pack(creation, start), "little") << _TIMES_SHIFT | flags


def _double(bits: int) -> float:
    value: float = _ONE_TIME.unpack(bits.to_bytes(8, "little"))[0]
    return value


def _packed_creation(packed: int) -> float | None:
    """A packed record's creation time, without unpacking the rest."""
    return _double(packed >> _TIMES_SHIFT & _DOUBLE_MASK) if packed & _HAS_CREATION else None


def _packed_start(packed: int) -> float | None:
    return _double(packed >> (_TIMES_SHIFT + 64)) if packed & _HAS_START else None


def _packed_running_since(packed: int) -> float | None:
    """When a running job started; its creation when no start is known (a workflow run's
    listing gives none, and a run starts when it is created: it waits for no slot)."""
    start = _packed_start(packed)
    return start if start is not None else _packed_creation(packed)


# The age of the backlog is told by when its oldest job was created; of the running jobs, by
# when the longest-running one started.
_OLDEST_BY = {"Submitted": _packed_creation, "Running": _packed_running_since}


@dataclass(slots=True)
class ActiveJob:
    state: str
    creation_time: float | None
    start_time: float | None
    wait_observed: bool

    def pack(self) -> int:
        return _pack(self.state, self.creation_time, self.start_time, self.wait_observed)

    @staticmethod
    def unpack(packed: int) -> ActiveJob:
        creation, start = _TWO_TIMES.unpack((packed >> _TIMES_SHIFT).to_bytes(16, "little"))
        return ActiveJob(
            ACTIVE_STATES[packed & 3],
            creation if packed & _HAS_CREATION else None,
            start if packed & _HAS_START else None,
            bool(packed & _WAIT_OBSERVED),
        )


_Held = TypeVar("_Held")


class JobsById(Mapping[str, _Held]):
    """A read-only view, by JobId, of jobs held by JobKey: for tests and inspection."""

    __slots__ = ("_jobs",)

    def __init__(self, jobs: dict[JobKey, _Held]) -> None:
        self._jobs = jobs

    def __getitem__(self, job_id: str) -> _Held:
        return self._jobs[job_key(job_id)]

    def __contains__(self, job_id: object) -> bool:
        return isinstance(job_id, str) and job_key(job_id) in self._jobs

    def __iter__(self) -> Iterator[str]:
        return map(job_id_of, self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


class ActiveJobs(Mapping[str, ActiveJob]):
    """A read-only view, by JobId, of a stream's active jobs."""

    __slots__ = ("_packed",)

    def __init__(self, jobs: dict[JobKey, int]) -> None:
        self._packed = JobsById(jobs)

    def __getitem__(self, job_id: str) -> ActiveJob:
        return ActiveJob.unpack(self._packed[job_id])

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._packed

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)


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
    # JobKey -> packed ActiveJob.
    _active: dict[JobKey, int] = field(default_factory=dict, init=False, repr=False)
    # JobKey -> creation time of finished jobs a future window listing can still return.
    _seen: dict[JobKey, float] = field(default_factory=dict, init=False, repr=False)
    finished: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    # The bounds of the stream's histograms; None: its service's histograms are off, nothing
    # is observed. Histograms are made at their first observation (a series only for what
    # happened): finished state -> run time, and the queue wait. See set_layout for a change.
    layout: HistogramLayout | None = field(default_factory=HistogramLayout)
    run_duration: dict[str, HistogramAccumulator] = field(default_factory=dict)
    queue_wait: HistogramAccumulator | None = None
    # Usually shared by every stream of a target, so the newest failures of all are at hand.
    recent_failures: deque[FailedJob] = field(
        default_factory=lambda: deque(maxlen=RECENT_FAILURES), repr=False
    )
    # Shared by every stream of a target (see share_ids): who counted which job.
    ids: TargetJobIds = field(default_factory=TargetJobIds, repr=False, compare=False)
    last_failed_job: str = ""
    last_failed_code: str = ""
    # When that job ended: jobs of one poll are committed in creation order, and the exemplar
    # must be the one that failed last, not the one created last.
    last_failed_time: float = -math.inf
    vanished: int = 0  # active jobs CI no longer knew (deleted): not counted as finished

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
        times = [
            t for t in (_packed_creation(r) for r in records if r is not None) if t is not None
        ]
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
        self._active[key] = _pack(job.state, job.creation_time, job.start_time, True)

    def _track_active(self, job: Job, key: JobKey, before: int | None) -> None:
        observed = before is not None and bool(before & _WAIT_OBSERVED)
        if not observed and job.start_time is not None and job.creation_time is not None:
            # Counting wait only for jobs seen before they started would leave out the ones
            # that started between polls; a job seen started counts once here.
            if before is not None or self.counting:
                self._observe_wait(job.start_time - job.creation_time)
            observed = True
        self._active[key] = _pack(job.state, job.creation_time, job.start_time, observed)

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
        self.finished[job.state] += 1
        if job.start_time is not None and job.end_time is not None:
            self._observe_run(job.state, job.end_time - job.start_time)
        waited = before is not None and bool(before & _WAIT_OBSERVED)
        if not waited and job.start_time is not None and job.creation_time is not None:
            self._observe_wait(job.start_time - job.creation_time)
        if job.state == "Failed":
            self._record_failure(job, now)

    # -- histograms -----------------------------------------------------------------------

    def _observe_run(self, state: str, seconds: float) -> None:
        if self.layout is None:
            return
        histogram = self.run_duration.get(state)
        if histogram is None:
            histogram = self.run_duration[state] = HistogramAccumulator(self.layout.run_time)
        histogram.observe(seconds)

    def _observe_wait(self, seconds: float) -> None:
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
        self.recent_failures.append(
            FailedJob(
                time=ended,
                service=self.key.service,
                queue_id=self.key.queue_id,
                tag=self.key.tag,
                job_id=job.job_id,
                code=job.code,
                message=job.message,
            )
        )

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
            if record.state in _STATE_CODES
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
            state = ACTIVE_STATES[packed & 3]
            active[state] += 1
            time_of = _OLDEST_BY.get(state)
            if time_of is not None:
                t = time_of(packed)
                if t is not None and t < oldest.get(state, t + 1):
                    oldest[state] = t
        return StreamSnapshot(
            service=self.key.service,
            queue_id=self.key.queue_id,
            tag=self.key.tag,
            active=active,
            finished={state: self.finished[state] for state in FINISHED_STATES},
            failures=dict(self.failures),
            run_duration={
                state: self.run_duration[state].snapshot()
                for state in FINISHED_STATES
                if state in self.run_duration
            },
            queue_wait=None if self.queue_wait is None else self.queue_wait.snapshot(),
            oldest=oldest,
            last_failed_job=self.last_failed_job,
            last_failed_code=self.last_failed_code,
        )
