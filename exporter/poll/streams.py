"""A target's streams: their trackers, and where each one's counting begins.

Every baseline rule is here, and nowhere else:
- a service's streams count what finishes after polling of the service began (`started`),
  whether or not the first polls succeeded;
- a tag added to a service (by a reload, or configured since the state file was saved) starts
  from a baseline of its own, like the service's first poll;
- a queue that shows up once the service has been listed is new: all of its jobs count;
- a queue missing from a listing keeps its accounting for RETIRED_FOR (a listing glitch), and
  after that, should it come back, takes up from where its window stood;
- restored state (exporter.state) takes up the saved trackers of the streams still configured.

Each stream's histograms have the bounds its service is configured with (`layouts`), or none
when the service's histograms are off; a reload that changes them drops the histograms of the
streams concerned, and keeps their counts (StreamTracker.set_layout).

A service's queues are capped (`max_queues_per_service`): the first by QueueId are polled, the
rest are neither polled nor exported, only counted (`dropped`), so a bucket with thousands of
queues cannot blow up /metrics. Sorted by id, the same queues stay in from poll to poll.

Owned by the target's poll thread: the pipeline's pool threads never see these objects.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping

from exporter.accounting import StreamKey, StreamTracker, listing_boundary
from exporter.ci.models import Queue
from exporter.dedupe import TargetJobIds
from exporter.snapshot import FailedJob, HistogramLayout, QueueSnapshot, StreamSnapshot
from exporter.state import TargetState
from exporter.stream_counts import CodeLimiter

# How long the accounting of a queue that left CI's listing is kept, should it come back.
RETIRED_FOR = 3600.0

Services = Mapping[str, tuple[str, ...]]  # service name -> tags polled
# Service name -> the bounds of its streams' histograms; None: the service has none.
Layouts = Mapping[str, HistogramLayout | None]


def _tag_start(service: str, tag: str) -> str:
    return f"{service}:{tag}"


class TargetStreams:
    """The accounting of one target, stream by stream, and the queues CI last listed."""

    def __init__(
        self, codes: CodeLimiter, recent_failures: deque[FailedJob], clock: Callable[[], float]
    ) -> None:
        self.codes = codes
        self.recent_failures = recent_failures  # every stream's failures, newest last
        self._clock = clock
        self.queues: dict[str, tuple[Queue, ...]] = {}
        # Per service: queues of its last listing left out by the cap.
        self.dropped: dict[str, int] = {}
        self.trackers: dict[StreamKey, StreamTracker] = {}
        self.retired: dict[StreamKey, tuple[float, StreamTracker]] = {}
        # Where streams of queues gone for longer than RETIRED_FOR take up again:
        # (window start, CI time they were retired).
        self.resume_at: dict[StreamKey, tuple[int, float]] = {}
        # Per service (or "service:tag" for a tag added later): the local time polling began.
        self.service_started: dict[str, float] = {}
        # (service, tag) pairs added after the service's first listing: their first poll is a
        # baseline, like the streams of the first listing, not a new queue counted in full.
        self.new_tags: set[tuple[str, str]] = set()
        # Which stream counted each recently finished job, and CI's anomalies (exporter.dedupe).
        self.ids = TargetJobIds()
        self.layouts: dict[str, HistogramLayout | None] = {}  # see set_layouts

    def service_of(self, queue_id: str) -> str | None:
        """The service whose last listing had the queue, None when none had (any thread: the
        poll thread replaces each listing whole)."""
        for service, queues in list(self.queues.items()):
            if any(queue.queue_id == queue_id for queue in queues):
                return service
        return None

    # -- where counting begins ------------------------------------------------------------

    def begin_service(self, service: str) -> None:
        self.service_started.setdefault(service, self._clock())

    def started(self, key: StreamKey) -> float:
        """Where the baseline of a stream lies: when polling of its tag (added later) or else
        of its service began."""
        started = self.service_started.get(_tag_start(key.service, key.tag))
        return started if started is not None else self.service_started[key.service]

    def is_new_queue(self, key: StreamKey, listed_before: bool) -> bool:
        """A queue listed for the first time after the service's first listing: every job
        in it counts (unless it is a tag added later: that one starts from a baseline)."""
        return listed_before and (key.service, key.tag) not in self.new_tags

    def tags_polled(self, service: str, tags: Iterable[str]) -> None:
        """The service's queues have been planned for these tags: no longer new."""
        self.new_tags.difference_update({(service, tag) for tag in tags})

    def tracker(
        self, key: StreamKey, *, new_queue: bool, offset: float | None, skew: float
    ) -> StreamTracker:
        """The stream's tracker, made on first sight from the baseline rules above."""
        tracker = self.trackers.get(key)
        if tracker is None and key in self.retired:
            tracker = self.trackers[key] = self.retired.pop(key)[1]
        if tracker is not None:
            return tracker
        tracker = StreamTracker(
            key,
            self.codes,
            layout=self.layout(key.service),
            recent_failures=self.recent_failures,
            ids=self.ids,
        )
        if key in self.resume_at:
            # Back after long: what finished while it was away counts, what it had counted
            # does not, and the history before its last window is not listed again.
            tracker.window_start, tracker.baseline_time = self.resume_at.pop(key)
            tracker.baseline_fixed = True
        elif new_queue:
            tracker.window_start = listing_boundary(self.started(key), offset, skew)
            tracker.counting = True
        self.trackers[key] = tracker
        return tracker

    def begin(
        self, key: StreamKey, tracker: StreamTracker, offset: float | None, skew: float
    ) -> None:
        """Until its first success, a stream's baseline is where polling of it began, on the
        best estimate of CI's clock so far. A job counts as finished after the start only when
        it surely did: CI's job clock may be as far ahead as the tolerance."""
        started = self.started(key)
        tracker.begin(listing_boundary(started, offset, skew), started + (offset or 0.0) + skew)

    # -- queues ---------------------------------------------------------------------------

    def listed_before(self, service: str) -> bool:
        return service in self.queues

    def replace_queues(
        self, service: str, queues: tuple[Queue, ...], offset: float | None, limit: int
    ) -> list[StreamKey]:
        """CI's new listing of a service's queues, the first `limit` by QueueId kept. A queue
        gone from it (or now past the cap) leaves /metrics at once and keeps its accounting a
        while, in case it comes back (a listing glitch).
        Returns the streams it retired: their schedule starts afresh should they return."""
        self.dropped[service] = max(0, len(queues) - limit)
        if len(queues) > limit:
            kept = set(sorted(queue.queue_id for queue in queues)[:limit])
            queues = tuple(queue for queue in queues if queue.queue_id in kept)
        present = {queue.queue_id for queue in queues}
        now = self._clock()
        retired = [k for k in self.trackers if k.service == service and k.queue_id not in present]
        for key in retired:
            self.retired[key] = (now, self.trackers.pop(key))
        for key in [k for k, (since, _) in self.retired.items() if now - since > RETIRED_FOR]:
            since, tracker = self.retired.pop(key)
            if tracker.window_start is not None:
                self.resume_at[key] = (tracker.window_start, since + (offset or 0.0))
        self.queues[service] = queues
        return retired

    def queue_snapshots(self) -> tuple[QueueSnapshot, ...]:
        return tuple(
            QueueSnapshot(service, queue)
            for service, listed in self.queues.items()
            for queue in listed
        )

    # -- configuration and restarts ---------------------------------------------------------

    def layout(self, service: str) -> HistogramLayout | None:
        """The bounds of the service's histograms (the default for a service not configured)."""
        return self.layouts.get(service, HistogramLayout())

    def set_layouts(self, layouts: Layouts) -> None:
        """The histogram bounds of each service, from the configuration (at the start and on
        every reload), handed to every tracker held, retired ones too: those whose bounds
        changed drop their histograms."""
        self.layouts = dict(layouts)
        for tracker in (*self.trackers.values(), *(t for _, t in self.retired.values())):
            tracker.set_layout(self.layout(tracker.key.service))

    def restore_added(self, state: TargetState, added: Services) -> None:
        """Take up a previous process's accounting of services added since restore() (a
        discovered bucket found again for them later than for the others); streams that
        have begun since are left as they are."""
        kept = state.restricted_to(added)
        for key, tracker in kept.trackers.items():
            if key not in self.trackers:
                tracker.share_ids(self.ids)
                tracker.set_layout(self.layout(key.service))
                self.trackers[key] = tracker
        for key, retired in kept.retired.items():
            if key not in self.retired:
                retired[1].share_ids(self.ids)
                self.retired[key] = retired
        for key, resume in kept.resume_at.items():
            self.resume_at.setdefault(key, resume)
        for name, started in kept.service_started.items():
            self.service_started.setdefault(name, started)

    def reconfigure(self, before: Services, after: Services) -> list[StreamKey]:
        """Streams still polled keep their accounting; tags added to a service start from a
        baseline of their own; streams no longer polled are dropped (returned)."""
        now = self._clock()
        for service, tags in after.items():
            for tag in set(tags) - set(before.get(service, tags)):
                self.new_tags.add((service, tag))
                self.service_started[_tag_start(service, tag)] = now
        for service in set(before) - set(after):
            self.queues.pop(service, None)
            self.dropped.pop(service, None)
            for name in [n for n in self.service_started if n.split(":")[0] == service]:
                del self.service_started[name]

        def kept(key: StreamKey) -> bool:
            return key.tag in after.get(key.service, ())

        dropped = [k for k in (*self.trackers, *self.retired, *self.resume_at) if not kept(k)]
        self.trackers = {k: v for k, v in self.trackers.items() if kept(k)}
        self.retired = {k: v for k, v in self.retired.items() if kept(k)}
        self.resume_at = {k: v for k, v in self.resume_at.items() if kept(k)}
        return dropped

    def state(self, services: Services) -> TargetState:
        """What a restart needs (see exporter.state). Not a copy: encode it on this thread."""
        return TargetState(
            service_started=self.service_started,
            trackers=self.trackers,
            retired=self.retired,
            resume_at=self.resume_at,
            services=dict(services),
        )

    def restore(self, state: TargetState, services: Services) -> None:
        """Take up a previous process's accounting of the streams still configured; tags
        configured since start from a baseline of their own."""
        kept = state.restricted_to(services)
        self.trackers, self.retired, self.resume_at = kept.trackers, kept.retired, kept.resume_at
        # The view across streams is not saved: it is what the restored trackers remember.
        for tracker in (*self.trackers.values(), *(t for _, t in self.retired.values())):
            tracker.share_ids(self.ids)
            tracker.set_layout(self.layout(tracker.key.service))
        self.service_started.update(kept.service_started)
        now = self._clock()
        for service, tag in state.added_tags(services):
            self.new_tags.add((service, tag))
            self.service_started[_tag_start(service, tag)] = now

    # -- what /metrics shows ----------------------------------------------------------------

    def prune_ids(self) -> None:
        """After a poll's commits: forget the counted jobs no stream's window can return."""
        self.ids.prune(t.window_start for t in self.trackers.values() if t.counting)

    def stream_snapshots(self) -> tuple[StreamSnapshot, ...]:
        return tuple(t.snapshot() for t in self.trackers.values() if t.counting)

    def tracked_jobs(self) -> int:
        return sum(tracker.tracked_jobs for tracker in self.trackers.values())
