"""Where a bucket's queues and jobs are kept and how they are found: the job index and every
read of a bucket (BucketIndex, a base of exporter.simulator.model's SimBucket, which declares
the fields named here).

Jobs are indexed per (queue_id, tag, state) in lists sorted by (creation_time, job_id), so a
listing bisects to its window and merges a few lists instead of scanning the bucket: the
benchmarks run this at a million jobs a day.

Thread ownership: the bucket's, shared by the HTTP threads and the workload thread under the
bucket's lock: every public method takes it and returns copies; the private ones expect it held.
"""

from __future__ import annotations

import bisect
import heapq
import threading
from collections import Counter
from collections.abc import Iterator
from itertools import islice

from exporter.simulator.records import JobKey, JobQuery, SimJob, SimQueue


class BucketIndex:
    """The reads of a bucket's queues and jobs, and the index they go through."""

    name: str
    _lock: threading.RLock
    _queues: dict[str, SimQueue]
    _jobs: dict[str, SimJob]
    _index: dict[tuple[str, str, str], list[JobKey]]
    _counts: Counter[tuple[str, str]]
    _twins: dict[str, list[str]]
    _unlisted: dict[str, SimJob]

    # -- queues --------------------------------------------------------------------------

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

    def unlisted_jobs(self) -> list[SimJob]:
        with self._lock:
            return sorted((j.copy() for j in self._unlisted.values()), key=lambda j: j.key)

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

    # -- the index -----------------------------------------------------------------------

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

    def _untwin(self, job_id: str) -> None:
        job = self._jobs[job_id]
        for queue_id in self._twins.pop(job_id, ()):
            keys = self._index[(queue_id, job.tag, job.state)]
            del keys[bisect.bisect_left(keys, job.key)]

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
