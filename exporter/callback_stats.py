"""The callback receiver's self-metrics: callbacks by event and outcome, requests refused by
reason, and the last callback per target. Kept apart from the swapped snapshot, like the API
self-metrics (exporter.api_stats), and rendered at each scrape.

Threads: the receiver's workers and the targets' poll threads count here; every counter is
guarded by `_lock`, and `snapshot()` copies them out under it.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

# What became of a callback that was read: counted; duplicate (its job or run was counted
# already, by polling or an earlier callback); not_counted (finished before its stream's
# baseline, as polling would not count it either); unknown_target (a bucket, or a queue of no
# polled bucket, the exporter does not poll); unknown_event (acknowledged, not read further).
OUTCOMES = ("counted", "duplicate", "not_counted", "unknown_target", "unknown_event")
# Why a request was refused before anything in it was read or trusted.
REASONS = (
    "secret",  # the path is not /callback/<secret>[/<bucket>]
    "network",  # the source address is not in `allow`
    "method",  # not POST
    "length",  # no Content-Length, two of them, or chunked
    "too_large",  # over max_body_bytes
    "slow",  # the body did not arrive within body_timeout
    # not a request or callback body CI sends: a bad head, a body cut short (the client closed
    # or broke off the connection) or longer than its Content-Length, a body not XML or JSON
    "malformed",
    "overloaded",  # the target's queue of callbacks to apply is full
)
EVENTS = ("TaskFinish", "WorkflowFinish", "other")


@dataclass(frozen=True, slots=True)
class CallbackSnapshot:
    received: dict[tuple[str, str], int] = field(default_factory=dict)  # (event, outcome)
    rejected: dict[str, int] = field(default_factory=dict)  # reason
    last: dict[tuple[str, str], float] = field(default_factory=dict)  # (bucket, region)


class CallbackStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enabled = False  # set when a receiver starts: no families without one
        self._received: Counter[tuple[str, str]] = Counter()
        self._rejected: Counter[str] = Counter()
        self._last: dict[tuple[str, str], float] = {}

    def received(self, event: str, outcome: str) -> None:
        with self._lock:
            self._received[(event if event in EVENTS else "other", outcome)] += 1

    def rejected(self, reason: str) -> None:
        with self._lock:
            self._rejected[reason] += 1

    def last_callback(self, bucket: str, region: str, when: float) -> None:
        with self._lock:
            self._last[(bucket, region)] = when

    def forget_target(self, bucket: str, region: str) -> None:
        """A target no longer polled leaves the last-callback family."""
        with self._lock:
            self._last.pop((bucket, region), None)

    def snapshot(self) -> CallbackSnapshot:
        with self._lock:
            return CallbackSnapshot(dict(self._received), dict(self._rejected), dict(self._last))
