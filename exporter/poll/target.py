"""One target (a bucket): plan a poll, run its pipeline, commit the results stream by stream,
keep its health, and take up reloaded configurations.

Everything here is owned by the target's poll thread, with two exceptions that other threads
may touch, both under `_offer_lock`: `offer()` (a reload hands the target its new
configuration; the poll thread builds, swaps and closes clients before its next poll, so any
number of reloads before that poll leave the last one in force) and `stopping`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from exporter.accounting import StreamKey, StreamListings, listing_boundary
from exporter.ci.client import JOB_PAGE_SIZE, CIClient
from exporter.ci.models import DescribeResult
from exporter.config import Config, TargetConfig
from exporter.poll.pipeline import (
    MissingPlan,
    Pipeline,
    PollError,
    QueueListing,
    Recovered,
    Stopped,
    StreamListing,
    StreamPlan,
    describe_chunk,
)
from exporter.poll.reported import ReportedJobs
from exporter.poll.schedule import IdleSchedule
from exporter.poll.streams import Layouts, Services, TargetStreams
from exporter.snapshot import FailedJob, TargetSnapshot
from exporter.state import TargetState
from exporter.stream_counts import RECENT_FAILURES, CodeLimiter

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Builds the client of a target under a configuration (exporter.poll.clients.build_client).
ClientBuilder = Callable[[TargetConfig, Config], CIClient]


def client_settings(target: TargetConfig, config: Config) -> tuple[object, ...]:
    """What a target's client is built from: a change of any of it needs a new client."""
    return (target, config.request_timeout, config.rate_limit, config.retry)


@dataclass(frozen=True, slots=True)
class _Offer:
    target: TargetConfig
    config: Config
    saved: TargetState | None = None  # a restart's state, for the services the offer adds


def _services(target: TargetConfig) -> Services:
    return {s.name: s.tags for s in target.services}


def _layouts(target: TargetConfig, config: Config) -> Layouts:
    """Per service, the bounds of its streams' histograms, or None when they are off."""
    return {s.name: config.histograms if s.histograms else None for s in target.services}


class TargetPoller:
    """One target: its client, its streams' accounting, its schedule and its health."""

    def __init__(
        self,
        target: TargetConfig,
        config: Config,
        *,
        build_client: ClientBuilder,
        codes: CodeLimiter,
        clock: Clock,
        stopping: threading.Event | None = None,
        recent_failures: deque[FailedJob] | None = None,
    ) -> None:
        """`recent_failures`: the one a state file's trackers for this target were read with."""
        self.target = target
        self.config = config
        self.stopping = stopping if stopping is not None else threading.Event()
        self._build_client = build_client
        # Built at its first use, on the target's thread: a discovery that finds thousands of
        # buckets makes their TargetPollers at once, and must not make their sessions then.
        self._client: CIClient | None = None
        self._client_basis = client_settings(target, config)
        self._client_lock = threading.Lock()  # close() may come from the reload thread
        self.clock = clock
        self.recent_failures: deque[FailedJob] = (
            deque(maxlen=RECENT_FAILURES) if recent_failures is None else recent_failures
        )
        self.streams = TargetStreams(codes, self.recent_failures, clock)
        # Set by a callback to apply, and by halt(): what the thread waits on between polls.
        self.wake = threading.Event()
        self.callbacks = ReportedJobs(self.streams, self.wake)
        self.streams.set_layouts(_layouts(target, config))
        self.schedule = IdleSchedule(clock)
        self.schedule.configure(config.poll_interval, config.idle_tag_backoff)
        self._offer_lock = threading.Lock()
        self._offer: _Offer | None = None
        self.skipped_streams = 0  # in the last poll, by the idle back-off
        self.last_poll_time: float | None = None
        self.last_success_time: float | None = None
        self.last_poll_duration: float | None = None
        self.last_error = ""
        self.last_error_kind = ""
        self.up = False
        self.polled = False
        self.internal_errors: set[str] = set()  # kinds already logged with a traceback
        self._dropped_logged: dict[str, int] = {}  # per service: queues over the cap, as logged

    @property
    def name(self) -> str:
        return f"{self.target.bucket}/{self.target.region}"

    # -- reloads --------------------------------------------------------------------------

    def offer(self, target: TargetConfig, config: Config, saved: TargetState | None = None) -> None:
        """A reload's configuration for this target (any thread): taken up before the next
        poll; a later offer replaces an earlier one not yet taken up. `saved`: what a previous
        process saved of the target, for the services the offer adds (found by discovery
        after the others)."""
        with self._offer_lock:
            self._offer = _Offer(target, config, saved)

    def take_offer(self) -> None:
        """On the poll thread: take up the latest configuration offered. Streams still polled
        keep their accounting (their histograms too, unless their bounds changed); a new client
        is built (and the old one closed) only when what the client is built from changed since
        the one in use was built."""
        with self._offer_lock:
            offer, self._offer = self._offer, None
        if offer is None:
            return
        basis = client_settings(offer.target, offer.config)
        if basis != self._client_basis:
            with self._client_lock:
                old, self._client, self._client_basis = self._client, None, basis
            if old is not None:
                old.close()
        before, after = _services(self.target), _services(offer.target)
        dropped = self.streams.reconfigure(before, after)
        self.schedule.forget(dropped)
        self.streams.set_layouts(_layouts(offer.target, offer.config))
        if offer.saved is not None:
            added = {name: tags for name, tags in after.items() if name not in before}
            self.streams.restore_added(offer.saved, added)
        self.target, self.config = offer.target, offer.config
        self.schedule.configure(offer.config.poll_interval, offer.config.idle_tag_backoff)

    @property
    def client(self) -> CIClient:
        """The target's client, built for the configuration in force if it is not yet."""
        client = self._client
        if client is not None:
            return client
        # No lock held while building: close() never waits for a build.
        built: CIClient | None = self._build_client(self.target, self.config)
        with self._client_lock:
            if self._client is None:
                self._client, built = built, None
            client = self._client
        if built is not None:
            built.close()
        assert client is not None
        return client

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- restarts -------------------------------------------------------------------------

    def state(self) -> TargetState:
        """What a restart needs. Not a copy: encode it on this thread, between polls."""
        return self.streams.state(_services(self.target))

    def restore(self, state: TargetState) -> None:
        self.streams.restore(state, _services(self.target))

    # -- a poll -----------------------------------------------------------------------------

    def poll(self) -> None:
        started = self.clock()
        try:
            errors = self._poll()
        except Stopped:
            return  # shutting down: what was cut short says nothing about the target
        finished = self.clock()
        self.last_poll_time, self.last_poll_duration = finished, finished - started
        self.polled = True
        self.set_health(errors[0] if errors else None)
        if not errors:
            self.last_success_time = finished

    def _poll(self) -> list[PollError]:
        """Plan, list, recover, then commit every stream that succeeded. Nothing is committed
        before every call of the poll has ended, so a poll cut short changes nothing."""
        config = self.config
        pipeline = Pipeline(
            self.client,
            concurrency=config.rate_limit.concurrency,
            stopping=self.stopping,
            clock=self.clock,
            skew_tolerance=config.clock_skew_tolerance,
        )
        names = [s.name for s in self.target.services]
        for name in names:
            self.streams.begin_service(name)
        listings = pipeline.list_queues(names)
        errors = [listing.error for listing in listings if listing.error is not None]
        plans = self._plan(listings)
        listed = pipeline.list_streams(plans)
        errors.extend(s.error for s in listed if s.error is not None)
        missing = [self._missing(s) for s in listed if s.error is None]
        recovered = pipeline.recover([m for m in missing if m.job_ids])
        errors.extend(r.error for r in recovered.values() if r.error is not None)
        for stream in listed:
            found = recovered.get(stream.key)
            if stream.error is not None or (found is not None and found.error is not None):
                self.schedule.failed(stream.key)
            else:
                self._commit(stream, found)
        self.streams.prune_ids()
        return errors

    def _plan(self, listings: list[QueueListing]) -> list[StreamPlan]:
        """Which streams this poll lists, and from where each one's finished listing starts."""
        self.skipped_streams = 0
        offset, skew = self.client.clock_offset, self.config.clock_skew_tolerance
        plans: list[StreamPlan] = []
        tags = {s.name: s.tags for s in self.target.services}
        # Where a window would begin for a stream without one (the task takes its own, later).
        boundary = listing_boundary(self.clock(), offset, skew)
        for listing in listings:
            # Queues listed once the service has been listed are new: nothing in them is a
            # baseline. Those of the first listing (even after failures) are not.
            listed_before = self.streams.listed_before(listing.service)
            if listing.queues is not None:
                retired = self.streams.replace_queues(
                    listing.service, listing.queues, offset, self.config.max_queues_per_service
                )
                self._note_dropped(listing.service)
                self.schedule.forget(retired)  # back, they are polled at once
            # Keep polling the queues we knew; the target is not up until the listing works.
            for queue in self.streams.queues.get(listing.service, ()):
                for tag in tags[listing.service]:
                    key = StreamKey(listing.service, queue.queue_id, tag)
                    if not self.schedule.due(key):
                        self.skipped_streams += 1
                        continue
                    new_queue = self.streams.is_new_queue(key, listed_before)
                    tracker = self.streams.tracker(
                        key, new_queue=new_queue, offset=offset, skew=skew
                    )
                    self.streams.begin(key, tracker, offset, skew)
                    plans.append(StreamPlan(key, tracker.finished_listing_start(boundary)))
            self.streams.tags_polled(listing.service, tags[listing.service])
        return plans

    def _note_dropped(self, service: str) -> None:
        """One line when the number of queues left out by the cap changes, not one a poll."""
        dropped = self.streams.dropped.get(service, 0)
        if dropped == self._dropped_logged.get(service, 0):
            return
        self._dropped_logged[service] = dropped
        limit = self.config.max_queues_per_service
        extra = {"target": self.name, "service": service, "dropped": dropped, "polled": limit}
        if dropped:
            log.warning("queues over max_queues_per_service are not polled", extra=extra)
        else:
            log.info("every queue is polled again (within max_queues_per_service)", extra=extra)

    def _missing(self, stream: StreamListing) -> MissingPlan:
        tracker = self.streams.trackers[stream.key]
        missing = tuple(tracker.to_describe(stream.active, stream.finished))
        oldest = tracker.oldest_creation(missing) if missing else None
        pages = math.ceil(len(missing) / describe_chunk(stream.key.service)) // 2
        return MissingPlan(stream.key, missing, oldest, pages)

    def _commit(self, stream: StreamListing, recovered: Recovered | None) -> None:
        # Present when the stream had missing jobs to look for.
        described = None
        if recovered is not None:
            described = DescribeResult(recovered.found, recovered.gone)
        paged = len(stream.active) >= JOB_PAGE_SIZE
        listings = StreamListings(stream.active, stream.finished, described, active_paged=paged)
        self.streams.trackers[stream.key].commit(listings, stream.boundary, self.clock())
        saw = bool(stream.active or stream.finished or described)
        self.schedule.polled(stream.key, saw_jobs=saw)

    # -- health and what /metrics shows -----------------------------------------------------

    def set_health(self, error: PollError | None) -> None:
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
        return TargetSnapshot(
            bucket=self.target.bucket,
            region=self.target.region,
            up=self.up,
            polled=self.polled,
            last_poll_time=self.last_poll_time,
            last_success_time=self.last_success_time,
            last_poll_duration=self.last_poll_duration,
            last_error=self.last_error,
            queues=self.streams.queue_snapshots(),
            streams=self.streams.stream_snapshots() + self.callbacks.snapshots(),
            tracked_jobs=self.streams.tracked_jobs(),
            recent_failures=tuple(reversed(self.recent_failures)),
            idle_streams=self.skipped_streams,
            queues_dropped=dict(self.streams.dropped),
            max_queues=self.config.max_queues_per_service,
            anomalies=dict(self.streams.ids.anomalies),
        )
