"""Per target: list queues, poll every (service, queue, tag) stream, commit what succeeded, and
swap in a new snapshot. Runs in the background; /metrics only ever reads the last snapshot."""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    CIError,
    DescribeResult,
    Job,
    Queue,
)
from exporter.ci.services import SERVICES, Service
from exporter.config import Config, TargetConfig
from exporter.credentials import StaticCredentials
from exporter.snapshot import FailedJob, QueueSnapshot, Snapshot, TargetSnapshot

log = logging.getLogger(__name__)


Clock = Callable[[], float]

# How long the accounting of a queue that left CI's listing is kept, should it come back.
RETIRED_FOR = 3600.0
DESCRIBE_CHUNK = 10  # ids per describe-by-id call
MAX_WAIT = 86400.0  # Event.wait overflows on absurd delays; config caps the interval anyway


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
    ) -> None:
        self.target = target
        self.stopping = stopping if stopping is not None else threading.Event()
        self.client = client
        self.codes = codes
        self.clock_skew_tolerance = clock_skew_tolerance
        self.clock = clock or wall_clock
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

    def poll(self) -> None:
        started = self.clock()
        errors: list[PollError] = []
        try:
            for service_config in self.target.services:
                service = SERVICES[service_config.name]
                errors.extend(self._poll_service(service, service_config.tags))
        except _Stopped:
            return  # shutting down: what was cut short says nothing about the target
        finished = self.clock()
        self.last_poll_time, self.last_poll_duration = finished, finished - started
        self.polled = True
        self._set_health(errors[0] if errors else None)
        if not errors:
            self.last_success_time = finished

    def _poll_service(self, service: Service, tags: Iterable[str]) -> list[PollError]:
        errors: list[PollError] = []
        self.service_started.setdefault(service.name, self.clock())
        # Queues that show up once a service has been listed are new: nothing in them is
        # baseline. Those of the first listing (even if it came after failures) are not.
        listed_before = service.name in self.queues
        try:
            queues = tuple(self.client.list_queues(service))
        except CIError as listing_error:
            # Keep polling the queues we knew; the target is not up until the listing works.
            errors.append(
                PollError(listing_error.kind, f"{service.name} queue listing: {listing_error}")
            )
            queues = self.queues.get(service.name, ())
        else:
            self._replace_queues(service, queues)
        for queue in queues:
            for tag in tags:
                if self.stopping.is_set():
                    raise _Stopped
                error = self._poll_stream(service, queue.queue_id, tag, listed_before)
                if error is not None:
                    errors.append(error)
        return errors

    def _replace_queues(self, service: Service, queues: tuple[Queue, ...]) -> None:
        present = {queue.queue_id for queue in queues}
        now = self.clock()
        for key in [k for k in self.trackers if k.service == service.name]:
            if key.queue_id not in present:
                # Off /metrics at once; kept a while in case the queue comes back (a listing
                # glitch), so that its jobs are neither counted again nor lost.
                self.retired[key] = (now, self.trackers.pop(key))
        for key in [k for k, (since, _) in self.retired.items() if now - since > RETIRED_FOR]:
            since, tracker = self.retired.pop(key)
            if tracker.window_start is not None:
                self.resume_at[key] = (tracker.window_start, self._ci_time(since))
        self.queues[service.name] = queues

    def _tracker(self, key: StreamKey, *, new_queue: bool) -> StreamTracker:
        tracker = self.trackers.get(key)
        if tracker is None and key in self.retired:
            tracker = self.trackers[key] = self.retired.pop(key)[1]
        if tracker is None:
            tracker = StreamTracker(key, self.codes, recent_failures=self.recent_failures)
            if new_queue and key not in self.resume_at:
                started = self.service_started[key.service]
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

    def _poll_stream(
        self, service: Service, queue_id: str, tag: str, listed_before: bool
    ) -> PollError | None:
        key = StreamKey(service.name, queue_id, tag)
        tracker = self._tracker(key, new_queue=listed_before)
        began = self.clock()
        offset = self.client.clock_offset
        boundary = listing_boundary(began, offset, self.clock_skew_tolerance)
        started = self.service_started[service.name]
        # A job counts as finished after the start only when it surely did: CI's job clock may
        # be as far ahead as the tolerance.
        tracker.begin(
            listing_boundary(started, offset, self.clock_skew_tolerance),
            self._ci_time(started) + self.clock_skew_tolerance,
        )
        try:
            active = self.client.list_jobs(service, queue_id, tag, ACTIVE_STATES)
            finished = self.client.list_jobs(
                service,
                queue_id,
                tag,
                FINISHED_STATES,
                start_creation_time=tracker.finished_listing_start(boundary),
                order="Asc",
            )
            missing = tracker.to_describe(active, finished)
            described = self._find_missing(service, queue_id, tag, tracker, missing)
        except CIError as error:
            return PollError(error.kind, f"{service.name} queue {queue_id} tag {tag}: {error}")
        except Exception as error:  # a bug must cost one stream, not the whole target
            log.debug("unexpected error polling a stream", exc_info=True)
            return PollError(
                "internal",
                f"{service.name} queue {queue_id} tag {tag}: internal error: "
                f"{type(error).__name__}: {error}",
            )
        paged = len(active) >= JOB_PAGE_SIZE
        listings = StreamListings(active, finished, described, active_paged=paged)
        tracker.commit(listings, boundary, self.clock())
        return None

    def _find_missing(
        self,
        service: Service,
        queue_id: str,
        tag: str,
        tracker: StreamTracker,
        missing: list[str],
    ) -> DescribeResult | None:
        """What became of jobs active at the last poll that neither listing returned.

        Describe-by-id takes 10 ids a call. When many are missing (a backlog drained in
        creation order), a listing of finished jobs from the oldest of them, 100 a page, is
        cheaper: it is tried for at most half the calls describing would take, and whatever
        it did not find is described.
        """
        if not missing:
            return None
        wanted = set(missing)
        found: list[Job] = []
        oldest = tracker.oldest_creation(missing)
        budget = math.ceil(len(missing) / DESCRIBE_CHUNK) // 2
        if oldest is not None and budget > 0:
            pages = self.client.iter_job_pages(
                service,
                queue_id,
                tag,
                FINISHED_STATES,
                start_creation_time=math.floor(oldest) - 1,
                order="Asc",
            )
            for page in itertools.islice(pages, budget):
                found.extend(job for job in page if job.job_id in wanted)
                wanted.difference_update(job.job_id for job in page)
                if not wanted:
                    break
        rest = [job_id for job_id in missing if job_id in wanted]
        described = self.client.describe_jobs(service, rest) if rest else DescribeResult(())
        return DescribeResult((*found, *described.jobs), described.non_exist_ids)

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
        )


def build_client(
    target: TargetConfig, config: Config, stats: ApiStats, *, queue_page_size: int = QUEUE_PAGE_SIZE
) -> CIClient:
    return CIClient(
        bucket=target.bucket,
        region=target.region,
        endpoint=target.endpoint,
        credentials=StaticCredentials(target.credentials),
        timeout=config.request_timeout,
        stats=stats,
        queue_page_size=queue_page_size,
    )


class Poller:
    """Every target, each on its own thread and schedule; the latest snapshot for /metrics."""

    def __init__(
        self,
        config: Config,
        stats: ApiStats,
        *,
        clock: Clock | None = None,
        client_factory: Callable[[TargetConfig, Config, ApiStats], CIClient] = build_client,
    ) -> None:
        self.config = config
        self.stats = stats
        self.clock = clock or wall_clock
        codes = CodeLimiter(config.failure_code_limit)
        self._stop = threading.Event()
        self.targets = [
            TargetPoller(
                target,
                client_factory(target, config, stats),
                codes=codes,
                clock_skew_tolerance=config.clock_skew_tolerance,
                clock=clock,
                stopping=self._stop,
            )
            for target in config.targets
        ]
        self._lock = threading.Lock()
        self._snapshots: dict[int, TargetSnapshot] = {
            i: t.snapshot() for i, t in enumerate(self.targets)
        }
        self._current = self._build()
        self._threads: list[threading.Thread] = []

    # -- the snapshot ---------------------------------------------------------------------

    def _build(self) -> Snapshot:
        return Snapshot(
            targets=tuple(self._snapshots[i] for i in range(len(self.targets))),
        )

    def _publish(self, index: int) -> None:
        target_snapshot = self.targets[index].snapshot()
        with self._lock:
            self._snapshots[index] = target_snapshot
            self._current = self._build()

    def snapshot(self) -> Snapshot:
        return self._current

    def ready(self) -> bool:
        return all(t.polled for t in self._current.targets)

    # -- running --------------------------------------------------------------------------

    def poll_once(self) -> None:
        """Poll every target once, in turn (tests, --once)."""
        for index in range(len(self.targets)):
            self._poll_target(index)

    def _poll_target(self, index: int) -> None:
        target = self.targets[index]
        try:
            target.poll()
        except Exception:  # a bug must not kill the poller thread; keep serving
            log.exception("unexpected error polling target", extra={"target": target.name})
            target._set_health(PollError("internal", "internal error (see the debug log)"))
        self._publish(index)

    def start(self) -> None:
        for index, target in enumerate(self.targets):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"poll-{target.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _run(self, index: int) -> None:
        interval = self.config.poll_interval
        next_run = time.monotonic()
        while not self._stop.is_set():
            self._poll_target(index)
            next_run += interval
            delay = next_run - time.monotonic()
            if delay < 0:  # a poll overran: start again now, don't try to catch up
                next_run, delay = time.monotonic(), 0
            self._stop.wait(min(delay, MAX_WAIT))

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for target in self.targets:
            target.client.close()
