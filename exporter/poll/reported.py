"""Callbacks applied to a target's accounting: each finished job or run CI pushed is counted in
its stream, once, reconciled with the listings by JobId (StreamTracker.report), or in a stream
of its own when no listing covers it.

Threads: the receiver's workers queue events (`deliver`, under `_lock`) and wake the target's
poll thread, which applies them between two polls (`apply_queued`): the trackers, here and in
TargetStreams, are only ever touched by that thread.

Which stream a callback's job belongs to: a WorkflowFinish's run to the workflow's stream
("workflow", WorkflowId, "Workflow"); a TaskFinish's job to (the service whose last queue
listing had its QueueId, QueueId, Tag). When the target polls that stream, its tracker decides;
when it does not (a job type CI lists nowhere, a tag not configured, a queue of a service not
polled), the job is counted in a callback-only stream, with service "unlisted" when no listing
of the target had its queue. A callback-only stream remembers JobIds for REPORTED_MEMORY (CI's
retries come within minutes), and there are at most MAX_REPORTED_STREAMS of them per target:
beyond, a job is not counted ("unknown_target").
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.accounting import StreamKey, StreamTracker
from exporter.poll.streams import TargetStreams
from exporter.snapshot import StreamSnapshot

if TYPE_CHECKING:
    from exporter.ci.callback import CallbackEvent

REPORTED_MEMORY = 86400.0
MAX_REPORTED_STREAMS = 1000
MAX_QUEUED = 10_000  # events waiting for the poll thread; beyond, CI is told to retry (503)
UNLISTED = "unlisted"


class ReportedJobs:
    def __init__(self, streams: TargetStreams, wake: threading.Event) -> None:
        self.streams = streams
        self.trackers: dict[StreamKey, StreamTracker] = {}  # the callback-only streams
        self.last_time: float | None = None  # when the last event was applied
        self._wake = wake
        self._lock = threading.Lock()
        self._queued: deque[CallbackEvent] = deque()

    def deliver(self, event: CallbackEvent) -> bool:
        """Queue an event for the poll thread (any thread); False when the queue is full."""
        with self._lock:
            if len(self._queued) >= MAX_QUEUED:
                return False
            self._queued.append(event)
        self._wake.set()
        return True

    def apply_queued(self, now: float, outcome_of: Callable[[str, str], None]) -> int:
        """On the poll thread: apply what was queued; `outcome_of(event, outcome)` hears of
        each. How many were applied."""
        with self._lock:
            events = list(self._queued)
            self._queued.clear()
        for event in events:
            outcome_of(event.event, self.apply(event, now))
        if events:
            self.last_time = now
        return len(events)

    def snapshots(self) -> tuple[StreamSnapshot, ...]:
        return tuple(tracker.snapshot() for tracker in self.trackers.values())

    def apply(self, event: CallbackEvent, now: float) -> str:
        """What became of the event (exporter.callback_stats.OUTCOMES)."""
        job = event.job
        if job is None:
            return "unknown_event"
        if not job.queue_id:
            # A workflow's step reported without its queue: it cannot be placed, and the
            # listing of the queue it ran in counts it there.
            return "unknown_target"
        key = StreamKey(self._service_of(event), job.queue_id, job.tag)
        tracker = self.streams.trackers.get(key)
        if tracker is None:
            tracker = self._reported_only(key, now)
            if tracker is None:
                return "unknown_target"
        return tracker.report(job, now)

    def _service_of(self, event: CallbackEvent) -> str:
        if event.event == "WorkflowFinish":
            return "workflow"
        queue_id = event.job.queue_id if event.job is not None else ""
        return self.streams.service_of(queue_id) or UNLISTED

    def _reported_only(self, key: StreamKey, now: float) -> StreamTracker | None:
        tracker = self.trackers.get(key)
        if tracker is None:
            if len(self.trackers) >= MAX_REPORTED_STREAMS:
                return None
            tracker = self.trackers[key] = StreamTracker(
                key,
                self.streams.codes,
                layout=self.streams.layout(key.service) if key.service != UNLISTED else None,
                recent_failures=self.streams.recent_failures,
                ids=self.streams.ids,
            )
        tracker.report_only(now - REPORTED_MEMORY)
        return tracker
