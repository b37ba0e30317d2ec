"""One poll's calls to CI, run side by side, each handing back an immutable record.

The order the accounting needs (exporter.accounting's header) is the structure of a stream
task: it lists the stream's active jobs, *then* its finished jobs, on one pool thread, so no
scheduling, retry or back-off can put the finished listing first. Streams run side by side,
`concurrency` at a time (the credential's request gate decides how many really go out).

A poll is: queue listings (one task per service) -> stream tasks (active, then finished) ->
what became of the jobs that vanished (finished listings from the oldest of them, then
describe-by-id in batches of 10 across streams). The target plans each phase and commits the
results on its own thread; the pool threads share nothing mutable but `Abort`, which is
locked: the first error that every later call would meet too ends the poll.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from exporter.accounting import StreamKey, listing_boundary
from exporter.ci.client import CIClient
from exporter.ci.models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CIAPIError,
    CIAuthError,
    CICredentialsError,
    CIError,
    CIStopped,
    Job,
    Queue,
)
from exporter.ci.services import service_named

log = logging.getLogger(__name__)

DESCRIBE_CHUNK = 10  # ids per describe-by-id call of jobs (runs and batch jobs: one)


def describe_chunk(service: str) -> int:
    """Ids per describe-by-id call of the service's jobs."""
    return min(DESCRIBE_CHUNK, service_named(service).job.max_ids)


R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class PollError:
    """Why a poll of a target failed. A change of `kind` (a CI Code, timeout, ...) is news worth
    a log line; the same kind again on another stream is not."""

    kind: str
    message: str


class Stopped(Exception):
    """Raised inside a poll when the exporter is shutting down: nothing of it is committed."""


class Abort:
    """The first error of a poll that every later call would meet too (credentials refused,
    still throttled after retries): calls not yet made are not attempted. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: PollError | None = None

    @property
    def error(self) -> PollError | None:
        with self._lock:
            return self._error

    def note(self, cause: CIError, error: PollError) -> None:
        throttled = isinstance(cause, CIAPIError) and cause.throttled
        if throttled or isinstance(cause, (CIAuthError, CICredentialsError)):
            with self._lock:
                if self._error is None:
                    self._error = error


@dataclass(frozen=True, slots=True)
class QueueListing:
    service: str
    queues: tuple[Queue, ...] | None  # None: the listing failed or was not attempted
    error: PollError | None


@dataclass(frozen=True, slots=True)
class StreamPlan:
    key: StreamKey
    finished_start: int  # startCreationTime of the finished listing


@dataclass(frozen=True, slots=True)
class StreamListing:
    """What a stream task fetched: the active listing, then the finished one. `boundary` is
    when the active listing began on CI's clock, less the margin: the next window's start."""

    key: StreamKey
    boundary: int
    active: tuple[Job, ...] = ()
    finished: tuple[Job, ...] = ()
    error: PollError | None = None


@dataclass(frozen=True, slots=True)
class MissingPlan:
    """Jobs active at the last poll that neither listing returned, and how to look for them:
    first a finished listing from the oldest of them for at most `pages` pages (0: none)."""

    key: StreamKey
    job_ids: tuple[str, ...]
    oldest: float | None
    pages: int


@dataclass(frozen=True, slots=True)
class Recovered:
    """What became of a stream's missing jobs."""

    key: StreamKey
    found: tuple[Job, ...] = ()
    gone: tuple[str, ...] = ()  # ids CI says no longer exist
    left: tuple[str, ...] = ()  # still to describe (after a finished listing)
    error: PollError | None = None


def _where(key: StreamKey) -> str:
    return f"{key.service} queue {key.queue_id} tag {key.tag}"


class Pipeline:
    """The calls of one poll of one target. Built per poll by the target's thread."""

    def __init__(
        self,
        client: CIClient,
        *,
        concurrency: int,
        stopping: threading.Event,
        clock: Callable[[], float],
        skew_tolerance: float,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.stopping = stopping
        self.clock = clock
        self.skew_tolerance = skew_tolerance
        self.abort = Abort()

    # -- running ----------------------------------------------------------------------------

    def run(self, tasks: Sequence[Callable[[], R]]) -> list[R]:
        """Run a phase's tasks, `concurrency` at a time; every one ends before this returns.
        Their results, in order; Stopped if the exporter is shutting down."""
        self._check_stopping()
        if self.concurrency <= 1 or len(tasks) <= 1:
            return [self._unless_stopping(task) for task in tasks]
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(tasks)), thread_name_prefix="stream"
        ) as pool:
            futures = [pool.submit(self._unless_stopping, task) for task in tasks]
            results: list[R] = []
            stopped = False
            for future in futures:
                try:
                    results.append(future.result())
                except Stopped:
                    stopped = True
        if stopped:
            raise Stopped
        return results

    def _check_stopping(self) -> None:
        if self.stopping.is_set():
            raise Stopped

    def _unless_stopping(self, task: Callable[[], R]) -> R:
        self._check_stopping()
        return task()

    @contextmanager
    def _errors(self, key: StreamKey, failed: list[PollError]) -> Iterator[None]:
        """A CI error becomes the stream's PollError (appended to `failed`); a bug costs the
        stream, not the target; shutting down ends the poll."""
        try:
            yield
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise Stopped from error
            failed.append(PollError(error.kind, f"{_where(key)}: {error}"))
            self.abort.note(error, failed[-1])
        except Stopped:
            raise
        except Exception as error:  # a bug: the traceback for the debug log, the stream fails
            log.debug("unexpected error polling a stream", exc_info=True)
            failed.append(
                PollError("internal", f"{_where(key)}: internal error: {type(error).__name__}")
            )

    # -- queue listings ------------------------------------------------------------------------

    def list_queues(self, services: Sequence[str]) -> list[QueueListing]:
        return self.run([functools.partial(self._queues, name) for name in services])

    def _queues(self, name: str) -> QueueListing:
        if (fatal := self.abort.error) is not None:
            return QueueListing(name, None, fatal)
        try:
            return QueueListing(name, tuple(self.client.list_queues(service_named(name))), None)
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise Stopped from error
            failed = PollError(error.kind, f"{name} queue listing: {error}")
            self.abort.note(error, failed)
            return QueueListing(name, None, failed)

    # -- stream tasks ----------------------------------------------------------------------

    def list_streams(self, plans: Sequence[StreamPlan]) -> list[StreamListing]:
        return self.run([functools.partial(self._stream, plan) for plan in plans])

    def _stream(self, plan: StreamPlan) -> StreamListing:
        """The active listing, then the finished listing: in this order, on this thread."""
        key = plan.key
        boundary = listing_boundary(self.clock(), self.client.clock_offset, self.skew_tolerance)
        service = service_named(key.service)
        failed: list[PollError] = []
        active: tuple[Job, ...] = ()
        finished: tuple[Job, ...] = ()
        with self._errors(key, failed):
            if (fatal := self.abort.error) is None:
                active = tuple(self.client.list_jobs(service, key.queue_id, key.tag, ACTIVE_STATES))
            if (fatal := fatal or self.abort.error) is None:
                finished = tuple(
                    self.client.list_jobs(
                        service,
                        key.queue_id,
                        key.tag,
                        FINISHED_STATES,
                        start_creation_time=plan.finished_start,
                        order="Asc",
                    )
                )
            if fatal is not None:
                failed.append(fatal)
        if failed:
            return StreamListing(key, boundary, error=failed[0])
        return StreamListing(key, boundary, active, finished)

    # -- what became of vanished jobs -------------------------------------------------------

    def recover(self, plans: Sequence[MissingPlan]) -> dict[StreamKey, Recovered]:
        """Describe-by-id takes 10 ids a call, batched across the target's streams. When many
        are missing in one stream (a backlog drained in creation order), a finished listing
        from the oldest of them, 100 a page, is cheaper: it is tried first for at most half
        the calls describing would take, and what it did not find is described after it."""
        listed = [p for p in plans if p.pages > 0 and p.oldest is not None]
        described = [Recovered(p.key, left=p.job_ids) for p in plans if p not in listed]
        tasks: list[Callable[[], list[Recovered]]] = [
            functools.partial(self._list_missing, p) for p in listed
        ]
        first = self.run([*tasks, *self._describe_tasks(described)])
        from_listings = [r for part in first[: len(listed)] for r in part]
        results = _merge([*from_listings, *described], first[len(listed) :])
        second = self.run(self._describe_tasks(from_listings))
        return _merge(list(results.values()), second)

    def _list_missing(self, plan: MissingPlan) -> list[Recovered]:
        key = plan.key
        if (fatal := self.abort.error) is not None:
            return [Recovered(key, error=fatal)]
        assert plan.oldest is not None
        wanted = set(plan.job_ids)
        found: list[Job] = []
        failed: list[PollError] = []
        with self._errors(key, failed):
            pages = self.client.iter_job_pages(
                service_named(key.service),
                key.queue_id,
                key.tag,
                FINISHED_STATES,
                start_creation_time=math.floor(plan.oldest) - 1,
                order="Asc",
            )
            for page in itertools.islice(pages, plan.pages):
                found.extend(job for job in page if job.job_id in wanted)
                wanted.difference_update(job.job_id for job in page)
                if not wanted:
                    break
        if failed:
            return [Recovered(key, error=failed[0])]
        left = tuple(job_id for job_id in plan.job_ids if job_id in wanted)
        return [Recovered(key, found=tuple(found), left=left)]

    def _describe_tasks(self, wanting: Sequence[Recovered]) -> list[Callable[[], list[Recovered]]]:
        """Describe calls for every stream's missing jobs, 10 ids a call whatever stream they
        came from: a few long runners finishing in many streams cost one call, not one each."""
        by_service: dict[str, list[tuple[str, StreamKey]]] = {}
        for recovered in wanting:
            if recovered.error is None:
                by_service.setdefault(recovered.key.service, []).extend(
                    (job_id, recovered.key) for job_id in recovered.left
                )
        return [
            functools.partial(self._describe, wanted[i : i + chunk])
            for service, wanted in by_service.items()
            for chunk in (describe_chunk(service),)
            for i in range(0, len(wanted), chunk)
        ]

    def _describe(self, chunk: list[tuple[str, StreamKey]]) -> list[Recovered]:
        # A JobId that CI lists in two queues is missing from both streams: each one hears
        # what became of it (the accounting counts it once, exporter.dedupe).
        owners: dict[str, list[StreamKey]] = {}
        for job_id, owner in chunk:
            owners.setdefault(job_id, []).append(owner)
        keys = list(dict.fromkeys(owner for _, owner in chunk))
        if (fatal := self.abort.error) is not None:
            return [Recovered(key, error=fatal) for key in keys]
        try:
            result = self.client.describe_jobs(service_named(keys[0].service), list(owners))
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise Stopped from error
            errors = [PollError(error.kind, f"{_where(key)}: {error}") for key in keys]
            self.abort.note(error, errors[0])
            return [Recovered(key, error=e) for key, e in zip(keys, errors, strict=True)]
        found: dict[StreamKey, list[Job]] = {key: [] for key in keys}
        gone: dict[StreamKey, list[str]] = {key: [] for key in keys}
        for job in result.jobs:
            for owner in owners.get(job.job_id, ()):
                found[owner].append(job)
        for job_id in result.non_exist_ids:
            for owner in owners.get(job_id, ()):
                gone[owner].append(job_id)
        return [Recovered(key, tuple(found[key]), tuple(gone[key])) for key in keys]


def _merge(
    base: Sequence[Recovered], described: Sequence[list[Recovered]]
) -> dict[StreamKey, Recovered]:
    """Each stream's recovery so far, with what the describe calls found added to it (the
    first error of a stream is kept; nothing is left to describe once described)."""
    merged = {r.key: r for r in base}
    for part in itertools.chain.from_iterable(described):
        before = merged[part.key]
        merged[part.key] = Recovered(
            part.key,
            found=before.found + part.found,
            gone=before.gone + part.gone,
            error=before.error or part.error,
        )
    return merged
