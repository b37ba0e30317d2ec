"""The simulated state of CI buckets: queues, jobs and a clock, with a scripted API.

Jobs are indexed per (queue_id, tag, state) in lists sorted by (creation_time, job_id), so a
listing bisects to its window and merges a few lists instead of scanning the bucket: the
benchmarks run this at a million jobs a day. Every public method holds the bucket lock and
returns copies, because the HTTP threads and the workload thread share a bucket.

A bucket's `on_finish` (exporter.simulator.callbacks) is called with a copy of each job or run
as it finishes, under the bucket lock, on the thread finishing it: it must only queue it.
Unlisted jobs (`create_unlisted_job`: a job type CI lists nowhere) are kept apart from the
listed ones: no listing, describe, count or `jobs()` sees them, only their callbacks do.
"""

from __future__ import annotations

import bisect
import copy
import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from itertools import islice

from exporter.ci.services import ALL_SERVICES, SERVICES

JOB_STATES: tuple[str, ...] = ("Submitted", "Running", "Pause", "Success", "Failed", "Cancel")
FINISHED: tuple[str, ...] = ("Success", "Failed", "Cancel")
WAITING: tuple[str, ...] = ("Submitted", "Pause")

# Which queue categories each service's queues carry; the first is the default.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "media": ("Transcoding", "SpeedTranscoding"),
    "ai": ("AIProcess",),
    "speech": ("Speeching",),
    "pic": ("PicProcessing",),
    "doc": ("DocProcess",),
    # Opt-in per bucket (its `services`): workflows are queues, batch jobs have one pseudo-queue
    # (exporter.simulator.workflows).
    "workflow": ("Workflow",),
    "batch": ("Batch",),
}
# The service of unlisted jobs (SimBucket.create_unlisted_job): file processing, say.
UNLISTED_SERVICE = "file"
# Id prefixes other than a queue's "p" and a job's "j", as CI's ids show (w..., i..., b...).
QUEUE_PREFIXES: dict[str, str] = {"workflow": "w"}
JOB_PREFIXES: dict[str, str] = {"workflow": "i", "batch": "b"}

NOTIFY_URL = "http://callback.example.com/ci-notify"
NOTIFY_EVENT = "TaskFinish"

# (creation_time, job_id): the sort key of every listing.
JobKey = tuple[int, str]


@dataclass
class Clock:
    """CI's clock: the real time (freezegun controls it in tests) plus a settable offset."""

    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset


class ClockView:
    """`clock_offset` and `now()` of the Clock an object holds as `clock` (a bucket's, the
    simulator's): one way to read and move CI's clock."""

    clock: Clock

    @property
    def clock_offset(self) -> float:
        return self.clock.offset

    @clock_offset.setter
    def clock_offset(self, seconds: float) -> None:
        self.clock.offset = seconds

    def now(self) -> float:
        return self.clock.now()


@dataclass(slots=True)
class SimQueue:
    queue_id: str
    service: str
    name: str
    category: str
    max_concurrent: int
    max_size: int
    paused: bool
    notify: bool
    create_time: int
    update_time: int

    @property
    def state(self) -> str:
        return "Paused" if self.paused else "Active"

    def copy(self) -> SimQueue:
        return copy.copy(self)


@dataclass(slots=True)
class SimJob:
    """One job. Kept lean (no per-job strings beyond the id): a benchmark holds millions."""

    job_id: str
    queue_id: str
    service: str
    tag: str
    state: str
    creation_time: int
    start_time: int | None = None
    end_time: int | None = None
    code: str = "Success"
    message: str = ""
    progress: int = 0

    @property
    def key(self) -> JobKey:
        return (self.creation_time, self.job_id)

    def copy(self) -> SimJob:
        # Positional and explicit: copy.copy is the hot spot of a million-job benchmark.
        return SimJob(
            self.job_id,
            self.queue_id,
            self.service,
            self.tag,
            self.state,
            self.creation_time,
            self.start_time,
            self.end_time,
            self.code,
            self.message,
            self.progress,
        )


@dataclass(frozen=True, slots=True)
class SimStep:
    """One step (task) of a workflow run: derived from the run when asked for, never stored
    (exporter.simulator.workflows.steps_of)."""

    type: str
    name: str
    job_id: str
    state: str
    start: int
    end: int | None
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """One job listing: which jobs, in which order, from where on."""

    services: frozenset[str]
    queue_id: str
    tag: str
    states: frozenset[str]
    start: int | None = None
    end: int | None = None
    inclusive: bool = False
    descending: bool = True
    after: JobKey | None = None  # the cursor: the last key already returned


@dataclass
class SimBucket(ClockView):
    """One bucket's queues and jobs. `seed` makes the generated ids reproducible."""

    name: str
    region: str = "ap-guangzhou"
    clock: Clock = field(default_factory=Clock)
    seed: int | str | None = None
    # The services enabled on the bucket (bucket listings, exporter.simulator.discovery), and
    # when it was bound to CI (its CreateTime there; now when not given).
    services: frozenset[str] = field(default_factory=lambda: frozenset(SERVICES))
    created: float | None = None
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False)
    _queues: dict[str, SimQueue] = field(default_factory=dict, init=False, repr=False)
    _jobs: dict[str, SimJob] = field(default_factory=dict, init=False, repr=False)
    _index: dict[tuple[str, str, str], list[JobKey]] = field(
        default_factory=dict, init=False, repr=False
    )
    _queue_tags: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    _counts: Counter[tuple[str, str]] = field(default_factory=Counter, init=False, repr=False)
    # Hostile CI, for tests: JobId -> other queues whose listings also return that job.
    _twins: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)
    # Jobs CI lists nowhere (create_unlisted_job): finished only through their callbacks.
    _unlisted: dict[str, SimJob] = field(default_factory=dict, init=False, repr=False)
    # Called with a copy of each job as it finishes, under the lock (see the module).
    on_finish: Callable[[SimJob], None] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        unknown = set(self.services).difference(ALL_SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}")
        self.services = frozenset(self.services)
        if self.created is None:
            self.created = float(int(self.clock.now()))

    # -- clock ---------------------------------------------------------------------------

    def _second(self, at: float | None) -> int:
        # CI reports times to the second.
        return int(self.now() if at is None else at)

    def _new_id(self, prefix: str, taken: Container[str]) -> str:
        while True:
            candidate = f"{prefix}{self._rng.getrandbits(128):032x}"
            if candidate not in taken:
                return candidate

    # -- queues --------------------------------------------------------------------------

    def add_queue(
        self,
        service: str,
        name: str | None = None,
        category: str | None = None,
        max_concurrent: int = 10,
        max_size: int = 10000,
        paused: bool = False,
        notify: bool = False,
        queue_id: str | None = None,
        at: float | None = None,
    ) -> str:
        if service not in ALL_SERVICES or service not in CATEGORIES:
            raise ValueError(f"unknown service {service!r}")
        if service not in SERVICES and service not in self.services:
            raise ValueError(f"service {service!r} is not enabled on bucket {self.name}")
        category = category or CATEGORIES[service][0]
        if category not in CATEGORIES[service]:
            raise ValueError(f"category {category!r} is not one of {service}'s")
        with self._lock:
            if queue_id is None:
                queue_id = self._new_id(QUEUE_PREFIXES.get(service, "p"), self._queues)
            elif queue_id in self._queues:
                raise ValueError(f"queue {queue_id} exists")
            created = self._second(at)
            self._queues[queue_id] = SimQueue(
                queue_id=queue_id,
                service=service,
                name=name or f"queue-{service}-{len(self._queues) + 1}",
                category=category,
                max_concurrent=max_concurrent,
                max_size=max_size,
                paused=paused,
                notify=notify,
                create_time=created,
                update_time=created,
            )
            self._queue_tags[queue_id] = set()
            return queue_id

    def remove_queue(self, queue_id: str) -> None:
        """The queue goes, and its jobs with it."""
        with self._lock:
            self._queue(queue_id)
            for job_id, queues in list(self._twins.items()):
                if queue_id in queues or self._jobs[job_id].queue_id == queue_id:
                    self._untwin(job_id)
            for tag in self._queue_tags.pop(queue_id):
                for state in JOB_STATES:
                    for _, job_id in self._index.pop((queue_id, tag, state), []):
                        del self._jobs[job_id]
                    self._counts.pop((queue_id, state), None)
            del self._queues[queue_id]

    def set_queue_paused(self, queue_id: str, paused: bool, at: float | None = None) -> None:
        """Pausing holds waiting jobs in Pause; running jobs carry on (as CI documents)."""
        with self._lock:
            queue = self._queue(queue_id)
            if queue.paused == paused:
                return
            queue.paused = paused
            queue.update_time = self._second(at)
            old, new = ("Submitted", "Pause") if paused else ("Pause", "Submitted")
            for tag in self._queue_tags[queue_id]:
                for _, job_id in list(self._index.get((queue_id, tag, old), [])):
                    self._move(self._jobs[job_id], new)

    def queue(self, queue_id: str) -> SimQueue:
        with self._lock:
            return self._queue(queue_id).copy()

    def queues(self, service: str | None = None) -> list[SimQueue]:
        """Queues in listing order (creation time, then id)."""
        with self._lock:
            found = [
                q.copy() for q in self._queues.values() if service is None or q.service == service
            ]
        return sorted(found, key=lambda q: (q.create_time, q.queue_id))

    def _queue(self, queue_id: str) -> SimQueue:
        try:
            return self._queues[queue_id]
        except KeyError:
            raise KeyError(f"no queue {queue_id} in bucket {self.name}") from None

    # -- jobs ----------------------------------------------------------------------------

    def create_job(self, queue_id: str, tag: str, at: float | None = None) -> str:
        with self._lock:
            queue = self._queue(queue_id)
            job = SimJob(
                job_id=self._new_id(JOB_PREFIXES.get(queue.service, "j"), self._jobs),
                queue_id=queue_id,
                service=queue.service,
                tag=tag,
                state="Pause" if queue.paused else "Submitted",
                creation_time=self._second(at),
            )
            self._jobs[job.job_id] = job
            self._queue_tags[queue_id].add(tag)
            self._index_add(job)
            return job.job_id

    def create_unlisted_job(
        self,
        queue_id: str,
        tag: str,
        at: float | None = None,
        service: str = UNLISTED_SERVICE,
    ) -> str:
        """A Submitted job in `queue_id` (any id: no queue is needed) that no listing,
        describe or count shows: only its TaskFinish callback tells of it. Its life cycle is a
        job's: start_job, finish_job."""
        if not queue_id:
            raise ValueError("an unlisted job needs a queue id")
        with self._lock:
            job_id = self._new_id("j", self._jobs)
            while job_id in self._unlisted:
                job_id = self._new_id("j", self._jobs)
            self._unlisted[job_id] = SimJob(
                job_id=job_id,
                queue_id=queue_id,
                service=service,
                tag=tag,
                state="Submitted",
                creation_time=self._second(at),
            )
            return job_id

    def unlisted_jobs(self) -> list[SimJob]:
        with self._lock:
            return sorted((j.copy() for j in self._unlisted.values()), key=lambda j: j.key)

    def start_job(self, job_id: str, at: float | None = None) -> None:
        with self._lock:
            job = self._any_job(job_id)
            if job.state not in WAITING:
                raise ValueError(f"job {job_id} is {job.state}, cannot start")
            job.start_time = self._second(at)
            job.progress = 0
            self._move(job, "Running")

    def finish_job(
        self,
        job_id: str,
        state: str = "Success",
        code: str | None = None,
        message: str | None = None,
        at: float | None = None,
    ) -> None:
        if state not in FINISHED:
            raise ValueError(f"finish state must be one of {FINISHED}, not {state!r}")
        with self._lock:
            job = self._any_job(job_id)
            if job.state in FINISHED:
                raise ValueError(f"job {job_id} already finished ({job.state})")
            job.end_time = self._second(at)
            if state == "Success" and job.start_time is None:
                job.start_time = job.end_time
            if state == "Failed":
                job.code = code or "InternalError"
                job.message = message if message is not None else "job failed"
            else:
                job.code, job.message = "Success", message or ""
            if state == "Success":
                job.progress = 100
            self._move(job, state)
            if self.on_finish is not None:
                self.on_finish(job.copy())

    def delete_job(self, job_id: str) -> None:
        """The job disappears, as when CI stops keeping it."""
        with self._lock:
            if self._unlisted.pop(job_id, None) is not None:
                return
            job = self._job(job_id)
            self._unindex(job)
            self._twins.pop(job_id, None)
            del self._jobs[job_id]

    # -- hostile CI, for tests ----------------------------------------------------------------

    def duplicate_job(self, job_id: str, queue_id: str) -> None:
        """Make `queue_id`'s listings return the job too, under the same JobId, with that
        queue's QueueId (CI should never do this); describe-by-id still returns it once.
        The copy follows the job's state."""
        with self._lock:
            job, queue = self._job(job_id), self._queue(queue_id)
            if queue_id == job.queue_id or queue_id in self._twins.get(job_id, ()):
                raise ValueError(f"job {job_id} is already listed in queue {queue_id}")
            if queue.service != job.service:
                raise ValueError(f"queue {queue_id} is not a {job.service} queue")
            self._queue_tags[queue_id].add(job.tag)
            self._twins.setdefault(job_id, []).append(queue_id)
            bisect.insort(self._index.setdefault((queue_id, job.tag, job.state), []), job.key)

    def _untwin(self, job_id: str) -> None:
        job = self._jobs[job_id]
        for queue_id in self._twins.pop(job_id, ()):
            keys = self._index[(queue_id, job.tag, job.state)]
            del keys[bisect.bisect_left(keys, job.key)]

    def resurrect_job(self, job_id: str, at: float | None = None) -> None:
        """A finished job Running again (CI should never do this): it can be finished again."""
        with self._lock:
            job = self._job(job_id)
            if job.state not in FINISHED:
                raise ValueError(f"job {job_id} is {job.state}, not finished")
            job.start_time, job.end_time = self._second(at), None
            job.code, job.message, job.progress = "", "", 0
            self._move(job, "Running")

    def job(self, job_id: str) -> SimJob:
        """A job, listed or not."""
        with self._lock:
            return self._any_job(job_id).copy()

    def jobs(self, queue_id: str | None = None) -> list[SimJob]:
        """Every job (of one queue), oldest first: for tests and determinism checks."""
        with self._lock:
            found = [
                j.copy() for j in self._jobs.values() if queue_id is None or j.queue_id == queue_id
            ]
        return sorted(found, key=lambda j: j.key)

    def job_count(self) -> int:
        with self._lock:
            return len(self._jobs)

    def count(self, queue_id: str, state: str) -> int:
        """Jobs of a queue in one state, over all tags."""
        with self._lock:
            return self._counts[(queue_id, state)]

    def job_state(self, job_id: str) -> str:
        with self._lock:
            return self._any_job(job_id).state

    def free_slots(self, queue_id: str) -> int:
        """How many more jobs may start now: none in a paused queue."""
        with self._lock:
            queue = self._queue(queue_id)
            if queue.paused:
                return 0
            return max(0, queue.max_concurrent - self._counts[(queue_id, "Running")])

    def _job(self, job_id: str) -> SimJob:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id} in bucket {self.name}") from None

    def _any_job(self, job_id: str) -> SimJob:
        job = self._unlisted.get(job_id)
        return self._job(job_id) if job is None else job

    def _index_add(self, job: SimJob) -> None:
        bisect.insort(self._index.setdefault((job.queue_id, job.tag, job.state), []), job.key)
        self._counts[(job.queue_id, job.state)] += 1
        if self._twins:
            for queue_id in self._twins.get(job.job_id, ()):
                bisect.insort(self._index.setdefault((queue_id, job.tag, job.state), []), job.key)

    def _unindex(self, job: SimJob) -> None:
        keys = self._index[(job.queue_id, job.tag, job.state)]
        del keys[bisect.bisect_left(keys, job.key)]
        self._counts[(job.queue_id, job.state)] -= 1
        if self._twins:
            for queue_id in self._twins.get(job.job_id, ()):
                keys = self._index[(queue_id, job.tag, job.state)]
                del keys[bisect.bisect_left(keys, job.key)]

    def _move(self, job: SimJob, state: str) -> None:
        if job.job_id in self._unlisted:
            job.state = state  # in no index
            return
        self._unindex(job)
        job.state = state
        self._index_add(job)

    # -- what the API reads --------------------------------------------------------------

    def list_queues(
        self,
        service: str,
        queue_ids: list[str] | None = None,
        state: str | None = None,
        categories: tuple[str, ...] | None = None,
    ) -> tuple[list[SimQueue], list[str]]:
        """(matching queues in listing order, requested ids that do not exist here).

        An id that exists but is filtered out by state or category is not "non-existent".
        """
        queues = self.queues(service)
        missing: list[str] = []
        if queue_ids is not None:
            known = {q.queue_id for q in queues}
            missing = [qid for qid in dict.fromkeys(queue_ids) if qid not in known]
            wanted = set(queue_ids)
            queues = [q for q in queues if q.queue_id in wanted]
        if state is not None:
            queues = [q for q in queues if q.state == state]
        if categories is not None:
            queues = [q for q in queues if q.category in categories]
        return queues, missing

    def list_jobs(self, query: JobQuery, size: int) -> tuple[list[SimJob], bool]:
        """(up to `size` jobs after the cursor, whether more follow)."""
        with self._lock:
            queue = self._queues.get(query.queue_id)
            if queue is None or queue.service not in query.services:
                return [], False
            streams = [
                self._window(self._index.get((query.queue_id, query.tag, s), []), query)
                for s in sorted(query.states)
            ]
            merged = heapq.merge(*streams, reverse=query.descending)
            keys = list(islice(merged, size + 1))
            jobs = [self._jobs[jid].copy() for _, jid in keys[:size]]
            if self._twins:
                for job in jobs:
                    job.queue_id = query.queue_id  # a twin shows the queue it is listed in
            return jobs, len(keys) > size

    @staticmethod
    def _window(keys: list[JobKey], query: JobQuery) -> Iterator[JobKey]:
        lo, hi = 0, len(keys)
        # Creation times are whole seconds; ("",) sorts before any id of the same second.
        if query.start is not None:
            first = query.start if query.inclusive else query.start + 1
            lo = bisect.bisect_left(keys, (first, ""))
        if query.end is not None:
            past = query.end + 1 if query.inclusive else query.end
            hi = bisect.bisect_left(keys, (past, ""))
        if query.after is not None:
            if query.descending:
                hi = min(hi, bisect.bisect_left(keys, query.after))
            else:
                lo = max(lo, bisect.bisect_right(keys, query.after))
        order = range(hi - 1, lo - 1, -1) if query.descending else range(lo, hi)
        return (keys[i] for i in order)

    def describe_jobs(
        self, services: frozenset[str], job_ids: list[str]
    ) -> tuple[list[SimJob], list[str]]:
        """(jobs found, in request order; ids unknown to these services)."""
        found: list[SimJob] = []
        missing: list[str] = []
        with self._lock:
            for job_id in dict.fromkeys(job_ids):
                job = self._jobs.get(job_id)
                if job is not None and job.service in services:
                    found.append(job.copy())
                else:
                    missing.append(job_id)
        return found, missing
