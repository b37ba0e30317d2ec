"""Per target: list queues, poll every (service, queue, tag) stream, commit what succeeded, and
swap in a new snapshot. Runs in the background; /metrics only ever reads the last snapshot."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from exporter.accounting import (
    RECENT_FAILURES,
    CodeLimiter,
    StreamKey,
    StreamListings,
    StreamTracker,
    listing_boundary,
)
from exporter.api_stats import ApiStats
from exporter.ci.client import JOB_PAGE_SIZE, QUEUE_PAGE_SIZE, CIClient
from exporter.ci.models import (
    ACTIVE_STATES,
    FINISHED_STATES,
    CIAPIError,
    CIAuthError,
    CICredentialsError,
    CIError,
    CIStopped,
    DescribeResult,
    Job,
    Queue,
)
from exporter.ci.services import SERVICES, Service
from exporter.config import Config, RateLimitConfig, ServiceConfig, TargetConfig
from exporter.credentials import (
    CredentialProvider,
    CredentialSource,
    credential_key,
    provider_for,
)
from exporter.ratelimit import RequestGate, RetryPolicy
from exporter.sharding import ALL, Shard, select
from exporter.snapshot import FailedJob, QueueSnapshot, ReloadStatus, Snapshot, TargetSnapshot
from exporter.state import StateFile, TargetState

log = logging.getLogger(__name__)


Clock = Callable[[], float]

# How long the accounting of a queue that left CI's listing is kept, should it come back.
RETIRED_FOR = 3600.0
DESCRIBE_CHUNK = 10  # ids per describe-by-id call
MAX_WAIT = 86400.0
# Polls in a row that see no job before a stream's polls are spaced out.
IDLE_AFTER = 2  # Event.wait overflows on absurd delays; config caps the interval anyway


@dataclass(frozen=True, slots=True)
class PollError:
    """Why a poll of a target failed. A change of `kind` (a CI Code, timeout, ...) is news worth
    a log line; the same kind again on another stream is not."""

    kind: str
    message: str


class _Stopped(Exception):
    """Raised inside a poll when the exporter is shutting down."""


def wall_clock() -> float:
    # Looked up at each call, not bound at import, so that freezegun can move it in tests.
    return time.time()


@dataclass(slots=True)
class _StreamWork:
    """One stream's listings in this poll, waiting for the describe batch and the commit."""

    key: StreamKey
    tracker: StreamTracker
    boundary: int
    active: list[Job] = field(default_factory=list)
    finished: list[Job] = field(default_factory=list)
    found: list[Job] = field(default_factory=list)  # missing jobs a finished listing returned
    to_describe: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # ids CI says no longer exist
    error: PollError | None = None


@dataclass(slots=True)
class _Idle:
    """How long a stream has shown no job, and when it is next due."""

    streak: int = 0
    due: float = 0.0


def _tag_start(service: str, tag: str) -> str:
    return f"{service}:{tag}"


def idle_delay(streak: int, interval: float, longest: float) -> float:
    """The wait before polling a stream again after `streak` polls in a row saw no job: one
    interval for the first IDLE_AFTER, then doubling, never more than `longest`."""
    if streak < IDLE_AFTER or longest <= interval:
        return interval
    return min(longest, interval * 2.0 ** (streak - IDLE_AFTER + 1))


def idle_phase(key: StreamKey, delay: float, interval: float) -> float:
    """How much earlier than `delay` an idle stream is due again. Streams that went idle
    together would otherwise all come due in one poll, every idle_tag_backoff: a burst of
    calls that the rate limit then stretches. Each stream keeps a phase of its own, whole
    intervals, up to a quarter of the delay (never later: the maximum holds)."""
    intervals = int(delay / interval / 4)
    return (zlib.crc32(repr(key).encode()) % (intervals + 1)) * interval


class TargetPoller:
    """One target (bucket): its queues, its stream trackers, its health."""

    def __init__(
        self,
        target: TargetConfig,
        client: CIClient,
        *,
        codes: CodeLimiter,
        clock_skew_tolerance: float,
        clock: Clock | None = None,
        stopping: threading.Event | None = None,
        concurrency: int = 1,
        poll_interval: float = 60.0,
        idle_tag_backoff: float = 0.0,
    ) -> None:
        self.target = target
        self.stopping = stopping if stopping is not None else threading.Event()
        self.client = client
        self.codes = codes
        self.clock_skew_tolerance = clock_skew_tolerance
        self.clock = clock or wall_clock
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.idle_tag_backoff = idle_tag_backoff
        self.queues: dict[str, tuple[Queue, ...]] = {}
        self.trackers: dict[StreamKey, StreamTracker] = {}
        self.retired: dict[StreamKey, tuple[float, StreamTracker]] = {}
        # Every stream's failures in one list, newest last: the landing page shows these.
        self.recent_failures: deque[FailedJob] = deque(maxlen=RECENT_FAILURES)
        # Per service: the local time its polling began, the baseline of its streams.
        self.service_started: dict[str, float] = {}
        # Where streams of queues gone for longer than RETIRED_FOR would take up again:
        # (window start, CI time they were retired).
        self.resume_at: dict[StreamKey, tuple[int, float]] = {}
        # (service, tag) pairs added by a reload: their first poll is a baseline, like the
        # streams of the first listing, not a new queue counted in full.
        self.new_tags: set[tuple[str, str]] = set()
        self.idle: dict[StreamKey, _Idle] = {}
        self.pending: _Update | None = None
        # An error that every later call of this poll would meet too (credentials refused,
        # still throttled after retries): the rest of the poll is not attempted.
        self._fatal: PollError | None = None
        self.skipped_streams = 0  # in the last poll, by the idle back-off
        self.last_poll_time: float | None = None
        self.last_success_time: float | None = None
        self.last_poll_duration: float | None = None
        self.last_error = ""
        self.last_error_kind = ""
        self.up = False
        self.polled = False

    @property
    def name(self) -> str:
        return f"{self.target.bucket}/{self.target.region}"

    def configure(self, config: Config) -> None:
        self.clock_skew_tolerance = config.clock_skew_tolerance
        self.poll_interval = config.poll_interval
        self.idle_tag_backoff = config.idle_tag_backoff
        self.concurrency = config.rate_limit.concurrency

    def apply_pending(self) -> None:
        """Take up a reloaded configuration: streams still polled keep their accounting, tags
        added to a service start from a baseline of their own, like the service's first poll."""
        update, self.pending = self.pending, None
        if update is None:
            return
        before = {s.name: set(s.tags) for s in self.target.services}
        after = {s.name: set(s.tags) for s in update.target.services}
        now = self.clock()
        for service, tags in after.items():
            for tag in tags - before.get(service, tags):
                self.new_tags.add((service, tag))
                self.service_started[_tag_start(service, tag)] = now
        for service in set(before) - set(after):
            self.queues.pop(service, None)
            for name in [n for n in self.service_started if n.split(":")[0] == service]:
                del self.service_started[name]

        def dropped(key: StreamKey) -> bool:
            return key.tag not in after.get(key.service, ())

        self.trackers = {k: v for k, v in self.trackers.items() if not dropped(k)}
        self.retired = {k: v for k, v in self.retired.items() if not dropped(k)}
        self.resume_at = {k: v for k, v in self.resume_at.items() if not dropped(k)}
        self.idle = {k: v for k, v in self.idle.items() if not dropped(k)}
        if update.client is not None:
            self.client.close()
            self.client = update.client
        self.target = update.target
        self.configure(update.config)

    def state(self) -> TargetState:
        """What a restart needs to take up this target's accounting (see exporter.state).
        Not a copy: save it on this target's own thread, between polls."""
        return TargetState(
            service_started=self.service_started,
            trackers=self.trackers,
            retired=self.retired,
            resume_at=self.resume_at,
            services={s.name: s.tags for s in self.target.services},
        )

    def restore(self, state: TargetState) -> None:
        """Take up the accounting a previous process saved, for the streams still configured;
        tags configured since start from a baseline of their own, like tags added by a reload."""
        services = {s.name: s.tags for s in self.target.services}
        kept = state.restricted_to(services)
        self.trackers, self.retired, self.resume_at = kept.trackers, kept.retired, kept.resume_at
        self.service_started.update(kept.service_started)
        now = self.clock()
        for service, tag in state.added_tags(services):
            self.new_tags.add((service, tag))
            self.service_started[_tag_start(service, tag)] = now

    def _started(self, key: StreamKey) -> float:
        """Where the baseline of a stream lies: when polling of its tag (added by a reload)
        or else of its service began."""
        started = self.service_started.get(_tag_start(key.service, key.tag))
        return started if started is not None else self.service_started[key.service]

    def poll(self) -> None:
        started = self.clock()
        try:
            errors = self._poll_all()
        except _Stopped:
            return  # shutting down: what was cut short says nothing about the target
        finished = self.clock()
        self.last_poll_time, self.last_poll_duration = finished, finished - started
        self.polled = True
        self._set_health(errors[0] if errors else None)
        if not errors:
            self.last_success_time = finished

    def _poll_all(self) -> list[PollError]:
        """Every call of a phase goes out side by side (`concurrency` at a time); a phase
        needs the one before: queue listings, then each stream's two listings, then what
        became of the jobs they no longer show, then the commit, stream by stream."""
        self.skipped_streams = 0
        self._fatal = None
        errors: list[PollError] = []
        works: list[tuple[Service, _StreamWork]] = []
        for service, service_config, queues, listed_before, error in self._queue_listings():
            if error is not None:
                errors.append(error)
            for queue in queues:
                for tag in service_config.tags:
                    key = StreamKey(service.name, queue.queue_id, tag)
                    if not self._due(key):
                        self.skipped_streams += 1
                        continue
                    new_queue = listed_before and (service.name, tag) not in self.new_tags
                    works.append((service, self._plan(key, new_queue)))
            self.new_tags.difference_update({(service.name, t) for t in service_config.tags})
        self._run(
            [
                functools.partial(listing, service, work)
                for service, work in works
                for listing in (self._list_active, self._list_finished)
            ]
        )
        self._find_missing([work for _, work in works], {w.key: s for s, w in works})
        for _, work in works:
            if self.stopping.is_set():
                raise _Stopped
            if work.error is not None:
                errors.append(work.error)
                self.idle.setdefault(work.key, _Idle()).due = 0.0
                continue
            self._commit(work)
        return errors

    def _queue_listings(
        self,
    ) -> list[tuple[Service, ServiceConfig, tuple[Queue, ...], bool, PollError | None]]:
        """Every service's queue listing, fetched side by side, applied in order."""
        configs = list(self.target.services)
        fetched: dict[str, tuple[tuple[Queue, ...] | None, CIError | None]] = {}
        for config in configs:
            self.service_started.setdefault(config.name, self.clock())
        self._run([functools.partial(self._fetch_queues, c.name, fetched) for c in configs])
        return [
            (SERVICES[c.name], c, *self._apply_queues(c.name, *fetched[c.name])) for c in configs
        ]

    def _fetch_queues(
        self, name: str, into: dict[str, tuple[tuple[Queue, ...] | None, CIError | None]]
    ) -> None:
        if self._fatal is not None:
            into[name] = (None, None)
            return
        try:
            into[name] = (tuple(self.client.list_queues(SERVICES[name])), None)
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise _Stopped from error
            into[name] = (None, error)

    def _apply_queues(
        self, name: str, queues: tuple[Queue, ...] | None, failure: CIError | None
    ) -> tuple[tuple[Queue, ...], bool, PollError | None]:
        # Queues that show up once a service has been listed are new: nothing in them is
        # baseline. Those of the first listing (even if it came after failures) are not.
        listed_before = name in self.queues
        if queues is not None:
            self._replace_queues(SERVICES[name], queues)
            return queues, listed_before, None
        # Keep polling the queues we knew; the target is not up until the listing works.
        if failure is None:  # not attempted: the poll met an error that ends it
            assert self._fatal is not None
            return self.queues.get(name, ()), listed_before, self._fatal
        error = PollError(failure.kind, f"{name} queue listing: {failure}")
        self._note_fatal(failure, error)
        return self.queues.get(name, ()), listed_before, error

    # -- queues ---------------------------------------------------------------------------

    def _replace_queues(self, service: Service, queues: tuple[Queue, ...]) -> None:
        present = {queue.queue_id for queue in queues}
        now = self.clock()
        for key in [k for k in self.trackers if k.service == service.name]:
            if key.queue_id not in present:
                # Off /metrics at once; kept a while in case the queue comes back (a listing
                # glitch), so that its jobs are neither counted again nor lost.
                self.retired[key] = (now, self.trackers.pop(key))
                self.idle.pop(key, None)
        for key in [k for k, (since, _) in self.retired.items() if now - since > RETIRED_FOR]:
            since, tracker = self.retired.pop(key)
            if tracker.window_start is not None:
                self.resume_at[key] = (tracker.window_start, self._ci_time(since))
        self.queues[service.name] = queues

    # -- streams --------------------------------------------------------------------------

    def _due(self, key: StreamKey) -> bool:
        idle = self.idle.get(key)
        # Half an interval of slack: polls do not start to the millisecond.
        return idle is None or self.clock() >= idle.due - self.poll_interval / 2

    def _tracker(self, key: StreamKey, *, new_queue: bool) -> StreamTracker:
        tracker = self.trackers.get(key)
        if tracker is None and key in self.retired:
            tracker = self.trackers[key] = self.retired.pop(key)[1]
        if tracker is None:
            tracker = StreamTracker(key, self.codes, recent_failures=self.recent_failures)
            if new_queue and key not in self.resume_at:
                started = self._started(key)
                offset = self.client.clock_offset
                tracker.window_start = listing_boundary(started, offset, self.clock_skew_tolerance)
                tracker.counting = True
            elif key in self.resume_at:
                # Back after long: what finished while it was away counts, what it had counted
                # does not, and the history before its last window is not listed again.
                tracker.window_start, tracker.baseline_time = self.resume_at.pop(key)
                tracker.baseline_fixed = True
            self.trackers[key] = tracker
        return tracker

    def _ci_time(self, local_time: float) -> float:
        """A local time on CI's clock, as far as it is known."""
        return local_time + (self.client.clock_offset or 0.0)

    def _plan(self, key: StreamKey, new_queue: bool) -> _StreamWork:
        tracker = self._tracker(key, new_queue=new_queue)
        offset = self.client.clock_offset
        boundary = listing_boundary(self.clock(), offset, self.clock_skew_tolerance)
        started = self._started(key)
        # A job counts as finished after the start only when it surely did: CI's job clock may
        # be as far ahead as the tolerance.
        tracker.begin(
            listing_boundary(started, offset, self.clock_skew_tolerance),
            self._ci_time(started) + self.clock_skew_tolerance,
        )
        return _StreamWork(key, tracker, boundary)

    def _skipped(self, work: _StreamWork) -> bool:
        """Whether this poll already met an error that ends it; the stream then shares it."""
        if self._fatal is None:
            return False
        work.error = work.error or self._fatal
        return True

    def _note_fatal(self, cause: CIError, error: PollError) -> None:
        throttled = isinstance(cause, CIAPIError) and cause.throttled
        if self._fatal is None and (
            throttled or isinstance(cause, (CIAuthError, CICredentialsError))
        ):
            self._fatal = error

    def _list_active(self, service: Service, work: _StreamWork) -> None:
        if self._skipped(work):
            return
        with self._stream_errors(work):
            key = work.key
            work.active = self.client.list_jobs(service, key.queue_id, key.tag, ACTIVE_STATES)

    def _list_finished(self, service: Service, work: _StreamWork) -> None:
        if self._skipped(work):
            return
        with self._stream_errors(work):
            key = work.key
            work.finished = self.client.list_jobs(
                service,
                key.queue_id,
                key.tag,
                FINISHED_STATES,
                start_creation_time=work.tracker.finished_listing_start(work.boundary),
                order="Asc",
            )

    def _find_missing(self, works: list[_StreamWork], services: dict[StreamKey, Service]) -> None:
        """What became of jobs active at the last poll that neither listing returned.

        Describe-by-id takes 10 ids a call, batched across the target's streams. When many are
        missing in one stream (a backlog drained in creation order), a listing of finished
        jobs from the oldest of them, 100 a page, is cheaper: it is tried for at most half the
        calls describing would take, and whatever it did not find is described after it.
        """
        listings: list[Callable[[], None]] = []
        listed: list[_StreamWork] = []
        for work in works:
            if work.error is not None:
                continue
            missing = work.tracker.to_describe(work.active, work.finished)
            oldest = work.tracker.oldest_creation(missing) if missing else None
            budget = math.ceil(len(missing) / DESCRIBE_CHUNK) // 2
            if oldest is not None and budget > 0:
                service = services[work.key]
                listings.append(
                    functools.partial(self._list_missing, service, work, missing, oldest, budget)
                )
                listed.append(work)
            else:
                work.to_describe = missing
        self._run([*listings, *self._describe_tasks(works)])
        if listed:
            self._run(self._describe_tasks(listed))

    @contextlib.contextmanager
    def _stream_errors(self, work: _StreamWork) -> Iterator[None]:
        key = work.key
        where = f"{key.service} queue {key.queue_id} tag {key.tag}"
        try:
            yield
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise _Stopped from error
            work.error = PollError(error.kind, f"{where}: {error}")
            self._note_fatal(error, work.error)
        except _Stopped:
            raise
        except Exception as error:  # a bug must cost one stream, not the whole target
            log.debug("unexpected error polling a stream", exc_info=True)
            work.error = PollError(
                "internal", f"{where}: internal error: {type(error).__name__}: {error}"
            )

    def _list_missing(
        self, service: Service, work: _StreamWork, missing: list[str], oldest: float, budget: int
    ) -> None:
        if self._skipped(work):
            return
        wanted = set(missing)
        with self._stream_errors(work):
            pages = self.client.iter_job_pages(
                service,
                work.key.queue_id,
                work.key.tag,
                FINISHED_STATES,
                start_creation_time=math.floor(oldest) - 1,
                order="Asc",
            )
            for page in itertools.islice(pages, budget):
                work.found.extend(job for job in page if job.job_id in wanted)
                wanted.difference_update(job.job_id for job in page)
                if not wanted:
                    break
        work.to_describe = [job_id for job_id in missing if job_id in wanted]

    def _describe_tasks(self, works: list[_StreamWork]) -> list[Callable[[], None]]:
        """Describe calls for every stream's missing jobs, 10 ids a call whatever stream they
        came from: a few long runners finishing in many streams cost one call, not one each."""
        by_service: dict[str, list[tuple[str, _StreamWork]]] = {}
        for work in works:
            if work.error is None:
                by_service.setdefault(work.key.service, []).extend(
                    (job_id, work) for job_id in work.to_describe
                )
        tasks: list[Callable[[], None]] = []
        for service_name, wanted in by_service.items():
            service = SERVICES[service_name]
            for i in range(0, len(wanted), DESCRIBE_CHUNK):
                chunk = wanted[i : i + DESCRIBE_CHUNK]
                tasks.append(functools.partial(self._describe, service, chunk))
        return tasks

    def _describe(self, service: Service, chunk: list[tuple[str, _StreamWork]]) -> None:
        owners = {job_id: work for job_id, work in chunk}
        if self._fatal is not None:
            for work in owners.values():
                self._skipped(work)
            return
        try:
            result = self.client.describe_jobs(service, list(owners))
        except CIError as error:
            if self.stopping.is_set() or isinstance(error, CIStopped):
                raise _Stopped from error
            for work in owners.values():
                key = work.key
                where = f"{key.service} queue {key.queue_id} tag {key.tag}"
                work.error = work.error or PollError(error.kind, f"{where}: {error}")
                self._note_fatal(error, work.error)
            return
        for job in result.jobs:
            if job.job_id in owners:
                owners[job.job_id].found.append(job)
        for job_id in result.non_exist_ids:
            if job_id in owners:
                owners[job_id].gone.append(job_id)

    def _commit(self, work: _StreamWork) -> None:
        described = None
        if work.found or work.to_describe:
            described = DescribeResult(tuple(work.found), tuple(work.gone))
        paged = len(work.active) >= JOB_PAGE_SIZE
        listings = StreamListings(work.active, work.finished, described, active_paged=paged)
        work.tracker.commit(listings, work.boundary, self.clock())
        self._note_activity(work)

    def _note_activity(self, work: _StreamWork) -> None:
        idle = self.idle.setdefault(work.key, _Idle())
        seen = work.active or work.finished or work.found or work.to_describe
        idle.streak = 0 if seen else idle.streak + 1
        delay = idle_delay(idle.streak, self.poll_interval, self.idle_tag_backoff)
        # Not backing off: due at every poll, however often polls come (tests, --once).
        if delay <= self.poll_interval:
            idle.due = 0.0
            return
        idle.due = self.clock() + delay - idle_phase(work.key, delay, self.poll_interval)

    def _run(self, tasks: list[Callable[[], None]]) -> None:
        """Run a phase's requests, `concurrency` at a time (the credential's gate decides how
        many really go out at once); every task ends before the next phase."""
        if self.stopping.is_set():
            raise _Stopped
        if self.concurrency <= 1 or len(tasks) <= 1:
            for task in tasks:
                if self.stopping.is_set():
                    raise _Stopped
                task()
            return
        with ThreadPoolExecutor(
            max_workers=min(self.concurrency, len(tasks)), thread_name_prefix="stream"
        ) as pool:
            futures = [pool.submit(self._unless_stopping, task) for task in tasks]
            stopped = False
            for future in futures:
                try:
                    future.result()
                except _Stopped:
                    stopped = True
            if stopped:
                raise _Stopped

    def _unless_stopping(self, task: Callable[[], None]) -> None:
        if self.stopping.is_set():
            raise _Stopped
        task()

    def _set_health(self, error: PollError | None) -> None:
        up = error is None
        kind = "" if error is None else error.kind
        if up != self.up or kind != self.last_error_kind:
            if error is None:
                log.info("target polled successfully", extra={"target": self.name})
            else:
                log.warning(
                    "target poll failed", extra={"target": self.name, "error": error.message}
                )
        self.up, self.last_error_kind = up, kind
        self.last_error = "" if error is None else error.message

    def snapshot(self) -> TargetSnapshot:
        queues = tuple(
            QueueSnapshot(service, queue)
            for service, listed in self.queues.items()
            for queue in listed
        )
        return TargetSnapshot(
            bucket=self.target.bucket,
            region=self.target.region,
            up=self.up,
            polled=self.polled,
            last_poll_time=self.last_poll_time,
            last_success_time=self.last_success_time,
            last_poll_duration=self.last_poll_duration,
            last_error=self.last_error,
            queues=queues,
            streams=tuple(
                tracker.snapshot() for tracker in self.trackers.values() if tracker.counting
            ),
            tracked_jobs=sum(tracker.tracked_jobs for tracker in self.trackers.values()),
            recent_failures=tuple(reversed(self.recent_failures)),
            idle_streams=self.skipped_streams,
        )


class SharedClients:
    """What clients signing with the same credentials share: one credential provider per
    source (a role or a file is fetched once for all its targets) and one request gate per
    credential key (the rate limit is the account's, not the bucket's)."""

    def __init__(self, rate_limit: RateLimitConfig) -> None:
        self.rate_limit = rate_limit
        self._lock = threading.Lock()
        self._providers: dict[CredentialSource, CredentialProvider] = {}
        self._gates: dict[str, RequestGate] = {}

    def provider(self, source: CredentialSource) -> CredentialProvider:
        with self._lock:
            provider = self._providers.get(source)
            if provider is None:
                provider = self._providers[source] = provider_for(source)
            return provider

    def gate(self, source: CredentialSource) -> RequestGate:
        key = credential_key(source)
        with self._lock:
            gate = self._gates.get(key)
            if gate is None:
                limit = self.rate_limit
                gate = RequestGate(limit.requests_per_second, limit.burst, limit.concurrency)
                self._gates[key] = gate
            return gate


def build_client(
    target: TargetConfig,
    config: Config,
    stats: ApiStats,
    *,
    shared: SharedClients | None = None,
    stopping: threading.Event | None = None,
    queue_page_size: int = QUEUE_PAGE_SIZE,
) -> CIClient:
    shared = shared if shared is not None else SharedClients(config.rate_limit)
    retry = config.retry
    return CIClient(
        bucket=target.bucket,
        region=target.region,
        endpoint=target.endpoint,
        credentials=shared.provider(target.credentials),
        timeout=config.request_timeout,
        stats=stats,
        queue_page_size=queue_page_size,
        retry=RetryPolicy(retry.attempts, retry.initial_backoff, retry.max_backoff),
        gate=shared.gate(target.credentials),
        stopping=stopping,
    )


ClientFactory = Callable[[TargetConfig, Config, ApiStats], CIClient]


TargetId = tuple[str, str]  # (bucket, region)


@dataclass(frozen=True, slots=True)
class _Update:
    """A reloaded target's new settings, applied by its own thread before its next poll (so a
    reload never waits for, nor races with, a poll in progress)."""

    target: TargetConfig
    client: CIClient | None  # None: keep the current one
    config: Config


class Poller:
    """Every target, each on its own thread and schedule; the latest snapshot for /metrics."""

    def __init__(
        self,
        config: Config,
        stats: ApiStats,
        *,
        clock: Clock | None = None,
        client_factory: ClientFactory | None = None,
        shard: Shard = ALL,
        queue_page_size: int = QUEUE_PAGE_SIZE,
    ) -> None:
        """`client_factory` replaces the built-in clients (tests); the built-in ones share a
        credential provider and a rate limit per set of credentials."""
        self.stats = stats
        self.clock = clock or wall_clock
        self.client_factory = client_factory
        self.queue_page_size = queue_page_size
        self._shared = SharedClients(config.rate_limit)
        self.shard = shard
        self.config = config
        self.codes = CodeLimiter(config.failure_code_limit)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the snapshot
        self._reload_lock = threading.Lock()
        self._pollers: dict[TargetId, TargetPoller] = {}
        self._order: list[TargetId] = []
        self._snapshots: dict[TargetId, TargetSnapshot] = {}
        self._threads: dict[TargetId, tuple[TargetPoller, threading.Thread]] = {}
        self._running = False
        self.reload_successful = True
        self.last_reload_success_time = self.clock()
        self._apply(config)
        self.state_file = StateFile(config.state_file) if config.state_file else None
        if self.state_file is not None:
            self._restore(self.state_file)
        self._current = self._build()

    def _restore(self, state_file: StateFile) -> None:
        by_name = {poller.name: poller for poller in self.targets}

        def recent_failures(name: str) -> deque[FailedJob]:
            poller = by_name.get(name)
            return poller.recent_failures if poller else deque(maxlen=RECENT_FAILURES)

        for name, state in state_file.load(self.codes, recent_failures).items():
            if name in by_name:
                by_name[name].restore(state)

    @property
    def targets(self) -> list[TargetPoller]:
        return [self._pollers[tid] for tid in self._order]

    # -- targets and reload ---------------------------------------------------------------

    def _client(self, target: TargetConfig, config: Config, stopping: threading.Event) -> CIClient:
        if self.client_factory is not None:
            return self.client_factory(target, config, self.stats)
        return build_client(
            target,
            config,
            self.stats,
            shared=self._shared,
            stopping=stopping,
            queue_page_size=self.queue_page_size,
        )

    def _new_target(self, target: TargetConfig, config: Config) -> TargetPoller:
        stopping = threading.Event()
        poller = TargetPoller(
            target,
            self._client(target, config, stopping),
            codes=self.codes,
            clock_skew_tolerance=config.clock_skew_tolerance,
            clock=self.clock,
            stopping=stopping,
        )
        poller.configure(config)
        if self._stop.is_set():
            poller.stopping.set()
        return poller

    def _apply(self, config: Config) -> list[TargetPoller]:
        """Make the targets those of `config` (this shard's share); return the ones dropped."""
        chosen = select(config.targets, self.shard)
        previous = self.config
        if config.rate_limit != previous.rate_limit:
            self._shared = SharedClients(config.rate_limit)
        pollers: dict[TargetId, TargetPoller] = {}
        for target in chosen:
            tid = (target.bucket, target.region)
            current = self._pollers.get(tid)
            if current is None or current.target.endpoint != target.endpoint:
                pollers[tid] = self._new_target(target, config)
                continue
            # Same bucket at the same address: its streams keep their accounting.
            same_client = current.target == target and _client_settings(
                previous
            ) == _client_settings(config)
            client = None if same_client else self._client(target, config, current.stopping)
            current.pending = _Update(target, client, config)
            pollers[tid] = current
        dropped = [p for tid, p in self._pollers.items() if pollers.get(tid) is not p]
        with self._lock:
            self._pollers = pollers
            self._order = list(pollers)
            self._snapshots = {
                tid: self._snapshots.get(tid) or p.snapshot() for tid, p in pollers.items()
            }
            self._current = self._build()
        self.config = config
        self.codes.limit = config.failure_code_limit
        return dropped

    def reload(self, config: Config) -> None:
        """Swap in a new, valid configuration. Unchanged targets keep everything; changed ones
        keep the accounting of the streams they still poll; removed ones stop."""
        with self._reload_lock:
            dropped = self._apply(config)
            for poller in dropped:
                poller.stopping.set()
                if self.state_file is not None:
                    self.state_file.forget(poller.name)
                running = self._threads.get((poller.target.bucket, poller.target.region))
                if running is None or running[0] is not poller:
                    poller.client.close()  # no thread of its own to close it
            if self._running:
                self._start_threads()
            self.reload_successful = True
            self.last_reload_success_time = self.clock()
            self._republish()
            log.info("configuration reloaded", extra={"targets": len(self._order)})

    def reload_failed(self) -> None:
        self.reload_successful = False
        self._republish()

    def _republish(self) -> None:
        with self._lock:
            self._current = self._build()

    # -- the snapshot ---------------------------------------------------------------------

    def _build(self) -> Snapshot:
        return Snapshot(
            targets=tuple(self._snapshots[tid] for tid in self._order),
            reload=ReloadStatus(self.reload_successful, self.last_reload_success_time),
        )

    def _publish(self, poller: TargetPoller) -> None:
        target_snapshot = poller.snapshot()
        tid = (poller.target.bucket, poller.target.region)
        with self._lock:
            if self._pollers.get(tid) is not poller:
                return  # removed by a reload meanwhile
            self._snapshots[tid] = target_snapshot
            self._current = self._build()

    def snapshot(self) -> Snapshot:
        return self._current

    def ready(self) -> bool:
        return all(t.polled for t in self._current.targets)

    # -- running --------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Poll every target once, in turn (tests, --once)."""
        for poller in self.targets:
            self._poll_target(poller)

    def _poll_target(self, poller: TargetPoller) -> None:
        try:
            poller.apply_pending()
            poller.poll()
        except Exception:  # a bug must not kill the poller thread; keep serving
            log.exception("unexpected error polling target", extra={"target": poller.name})
            poller._set_health(PollError("internal", "internal error (see the debug log)"))
        self._publish(poller)
        tid = (poller.target.bucket, poller.target.region)
        if self.state_file is not None and self._pollers.get(tid) is poller:
            self.state_file.save(poller.name, poller.state())

    def start(self) -> None:
        with self._reload_lock:
            self._running = True
            self._start_threads()

    def _start_threads(self) -> None:
        for tid, poller in self._pollers.items():
            running = self._threads.get(tid)
            if running is not None and running[0] is poller:
                continue
            thread = threading.Thread(
                target=self._run, args=(poller,), name=f"poll-{poller.name}", daemon=True
            )
            self._threads[tid] = (poller, thread)
            thread.start()

    def _run(self, poller: TargetPoller) -> None:
        next_run = time.monotonic()
        try:
            while not poller.stopping.is_set():
                self._poll_target(poller)
                next_run += self.config.poll_interval
                delay = next_run - time.monotonic()
                if delay < 0:  # a poll overran: start again now, don't try to catch up
                    next_run, delay = time.monotonic(), 0
                poller.stopping.wait(min(delay, MAX_WAIT))
        finally:
            poller.client.close()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        with self._reload_lock:
            pollers = list(self._pollers.values())
            threads = [thread for _, thread in self._threads.values()]
        for poller in pollers:
            poller.stopping.set()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for poller in pollers:
            poller.client.close()


def _client_settings(config: Config) -> tuple[object, ...]:
    """The settings a target's client is built with, beside the target's own."""
    return (config.request_timeout, config.rate_limit, config.retry)
