"""The families of the callback receiver (exporter.receiver): callbacks by event and outcome,
requests refused by reason, the last callback per target. None without a receiver.

No state: every function builds new families from the snapshot it is given.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric

from exporter.callback_stats import EVENTS, OUTCOMES, REASONS, CallbackSnapshot
from exporter.families import CALLBACKS, CALLBACKS_REJECTED, LAST_CALLBACK, family, sample


def callback_families(callbacks: CallbackSnapshot) -> Iterator[Metric]:
    received = [
        sample(CALLBACKS + "_total", {"event": event, "outcome": outcome}, n)
        for event in EVENTS
        for outcome in OUTCOMES
        if (n := callbacks.received.get((event, outcome), 0)) or event != "other"
    ]
    yield family(
        CALLBACKS,
        "Callbacks CI sent (TaskFinish, WorkflowFinish, other), by what became of them:"
        " counted; duplicate (counted already, by a poll or a callback); not_counted (finished"
        " before its stream's baseline); unknown_target (a bucket or queue not polled);"
        " unknown_event (acknowledged only).",
        "counter",
        received,
    )
    yield family(
        CALLBACKS_REJECTED,
        "Requests to the callback receiver refused unread or unbelieved, by reason: secret,"
        " network, method, length, too_large, slow, malformed, overloaded.",
        "counter",
        [
            sample(CALLBACKS_REJECTED + "_total", {"reason": r}, callbacks.rejected.get(r, 0))
            for r in REASONS
        ],
    )
    yield family(
        LAST_CALLBACK,
        "Unix time a callback about the target was last received.",
        "gauge",
        [
            sample(LAST_CALLBACK, {"bucket": bucket, "region": region}, when)
            for (bucket, region), when in sorted(callbacks.last.items())
        ],
    )
