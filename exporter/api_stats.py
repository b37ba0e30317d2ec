"""API self-metrics: every call, by endpoint family and outcome, and how the client held back
(retries, throttled answers, the pacing of each target). Kept apart from the swapped snapshot
(as yet-another-cloudwatch-exporter does) because calls happen in the middle of polls."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

from exporter.callback_stats import CallbackStats
from exporter.ci.models import (
    CIConnectionError,
    CICredentialsError,
    CIError,
    CIInvalidResponse,
    CIStopped,
    CITimeout,
)
from exporter.snapshot import ApiSnapshot, Histogram

REQUEST_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DEFAULT_ERROR_LABEL_LIMIT = 50
OTHER_ERROR = "other"
# The failure kinds the client itself names: a fixed few, so they never count against the
# limit and never turn into "other" (a burst of junk codes must not hide a timeout).
FIXED_ERROR_LABELS = frozenset(
    (
        CIError.kind,
        CIInvalidResponse.kind,
        CITimeout.kind,
        CIConnectionError.kind,
        CICredentialsError.kind,
        CIStopped.kind,
        OTHER_ERROR,
    )
)


@dataclass
class _Hist:
    buckets: list[int] = field(default_factory=lambda: [0] * len(REQUEST_BUCKETS))
    total: float = 0.0
    count: int = 0


class ApiStats:
    """Thread-safe counters of API calls.

    The `error` label comes from CI's answers (its Code), so its values are capped: the first
    `error_label_limit` distinct values keep their label, later new ones count as "other".
    """

    def __init__(self, error_label_limit: int = DEFAULT_ERROR_LABEL_LIMIT) -> None:
        if error_label_limit < 0:
            raise ValueError(f"error_label_limit must be >= 0, got {error_label_limit}")
        self._error_label_limit = error_label_limit
        self._error_labels: set[str] = set()
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str, str]] = Counter()
        self._errors: Counter[tuple[str, str, str, str]] = Counter()
        self._durations: dict[str, _Hist] = {}
        self._retries: Counter[tuple[str, str, str]] = Counter()
        self._throttled: Counter[tuple[str, str, str]] = Counter()
        self._spacing: dict[tuple[str, str], float] = {}
        # The callback receiver's counters: the exporter's other I/O, rendered with these.
        self.callbacks = CallbackStats()

    def record(
        self,
        bucket: str,
        region: str,
        endpoint: str,
        status: str,
        error: str | None,
        duration: float,
    ) -> None:
        """`status` is the HTTP status or "error"; `error` the CI Code or failure kind."""
        with self._lock:
            self._requests[(bucket, region, endpoint, status)] += 1
            if error:
                self._errors[(bucket, region, endpoint, self._error_label(error))] += 1
            hist = self._durations.setdefault(endpoint, _Hist())
            index = bisect.bisect_left(REQUEST_BUCKETS, duration)
            if index < len(REQUEST_BUCKETS):
                hist.buckets[index] += 1
            hist.total += duration
            hist.count += 1

    def record_retry(self, bucket: str, region: str, endpoint: str) -> None:
        """A call about to be made again (each call itself is counted by `record`)."""
        with self._lock:
            self._retries[(bucket, region, endpoint)] += 1

    def record_throttle(self, bucket: str, region: str, endpoint: str) -> None:
        with self._lock:
            self._throttled[(bucket, region, endpoint)] += 1

    def set_spacing(self, bucket: str, region: str, seconds: float) -> None:
        with self._lock:
            self._spacing[(bucket, region)] = seconds

    def _error_label(self, error: str) -> str:
        # Called with the lock held, so the first N are the first N recorded.
        if error in FIXED_ERROR_LABELS or error in self._error_labels:
            return error
        if len(self._error_labels) < self._error_label_limit:
            self._error_labels.add(error)
            return error
        return OTHER_ERROR

    def total_requests(self) -> int:
        with self._lock:
            return sum(self._requests.values())

    def snapshot(self) -> ApiSnapshot:
        with self._lock:
            durations = {}
            for endpoint, hist in self._durations.items():
                cumulative, running = [], 0
                for n in hist.buckets:
                    running += n
                    cumulative.append(running)
                durations[endpoint] = Histogram(
                    REQUEST_BUCKETS, tuple(cumulative), hist.total, hist.count
                )
            return ApiSnapshot(
                dict(self._requests),
                dict(self._errors),
                durations,
                retries=dict(self._retries),
                throttled=dict(self._throttled),
                spacing=dict(self._spacing),
            )
