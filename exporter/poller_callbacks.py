"""Callbacks from the receiver (exporter.receiver) on their way to the targets: which target
a callback is about, and what is counted when its poll thread applies the ones queued.

Threads: no state of its own. `route` runs on the receiver's worker threads and queues the
callback on its target (exporter.poll.reported, under that queue's lock); `count_applied`
runs on the target's poll thread, which owns the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exporter.callback_stats import CallbackStats
from exporter.poll.target import TargetPoller

if TYPE_CHECKING:
    from exporter.ci.callback import CallbackEvent


def route(targets: list[TargetPoller], bucket: str | None, event: CallbackEvent) -> str:
    """Queue a callback for its target's poll thread ("queued"), or say what became of it
    here (exporter.callback_stats.OUTCOMES, or "overloaded"). Without a bucket in the
    callback's URL, the target is the one whose last listing had the job's queue or the run's
    workflow."""
    if event.job is None:
        return "unknown_event"
    if bucket is not None:
        found = [p for p in targets if p.target.bucket == bucket]
    else:
        found = [p for p in targets if p.streams.service_of(event.job.queue_id) is not None]
    if len(found) != 1:
        return "unknown_target"
    return "queued" if found[0].callbacks.deliver(event) else "overloaded"


def count_applied(poller: TargetPoller, now: float, stats: CallbackStats) -> bool:
    """On the target's thread: apply what callbacks reported and count it; whether any was
    (its snapshot is then published at once)."""
    if not poller.callbacks.apply_queued(now, stats.received):
        return False
    stamp = poller.callbacks.last_time
    if stamp is not None:
        stats.last_callback(poller.target.bucket, poller.target.region, stamp)
    return True
