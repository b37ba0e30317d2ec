"""The simulated state of CI buckets: queues, jobs and a clock, with a scripted API.

SimBucket holds a bucket's queues and jobs and changes them (this module); where they are kept
and every read of them is its base, BucketIndex (exporter.simulator.bucket_index); the records
and shared constants are exporter.simulator.records.

Thread ownership: every public method holds the bucket lock and returns copies, because the
HTTP threads and the workload thread share a bucket.

A bucket's `on_finish` (exporter.simulator.callbacks) is called with a copy of each job or run
as it finishes, under the bucket lock, on the thread finishing it: it must only queue it.
Unlisted jobs (`create_unlisted_job`: a job type CI lists nowhere) are kept apart from the
listed ones: no listing, describe, count or `jobs()` sees them, only their callbacks do.
"""

from __future__ import annotations

import bisect
import random
import threading
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field

from exporter.ci.services import ALL_SERVICES, SERVICES
from exporter.simulator.bucket_index import BucketIndex
from exporter.simulator.records import (
    CATEGORIES,
    FINISHED,
    JOB_PREFIXES,
    JOB_STATES,
    QUEUE_PREFIXES,
    UNLISTED_SERVICE,
    WAITING,
    Clock,
    ClockView,
    JobKey,
    SimJob,
    SimQueue,
)


@dataclass
class SimBucket(BucketIndex, ClockView):
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

    def resurrect_job(self, job_id: str, at: float | None = None) -> None:
        """A finished job Running again (CI should never do this): it can be finished again."""
        with self._lock:
            job = self._job(job_id)
            if job.state not in FINISHED:
                raise ValueError(f"job {job_id} is {job.state}, not finished")
            job.start_time, job.end_time = self._second(at), None
            job.code, job.message, job.progress = "", "", 0
            self._move(job, "Running")
