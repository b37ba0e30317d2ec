"""Faults the simulator injects, switchable at run time.

A fault applies to every request it matches (bucket, endpoint family), `times` times at most,
each time with `probability` drawn from the set's seeded RNG, so a run is reproducible.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

FAULT_KINDS: tuple[str, ...] = (
    "http_500",  # 500 InternalError
    "http_503",  # 503 SlowDown
    "http_429",  # 429 SlowDown with Retry-After (`retry_after` seconds, or as an HTTP date)
    "slow_down",  # Code SlowDown in the body, with `status` (400 by default: only the body says it)
    "slow",  # hold the response `delay` seconds, then answer normally
    "reset",  # close the connection (RST) without answering
    "truncated",  # Content-Length larger than the body sent, then close
    "malformed",  # the real body broken like the seed documents (<Tag>x<Tag>)
    "html",  # an HTML error page with `status` (200 or 502, say; 502 by default)
    "repeat_token",  # job listings answer with the same NextToken forever
    "oversized",  # the real body padded to `size` bytes (still well-formed)
    "missing_field",  # every job in a job listing or describe answer lacks `job_field`
    "unknown_state",  # every job in a job listing or describe answer is in State `state`
    "skew",  # CI's front end is `offset` seconds off: the Date header and signature checks
    "auth",  # `status` (403 by default) with `code`; the message echoes any token sent
)

# Kinds that only make sense on a job listing; elsewhere they do not match.
LISTING_ONLY: frozenset[str] = frozenset({"repeat_token"})
# Kinds that change jobs: they match job listings and describe-by-id.
JOBS_ONLY: frozenset[str] = frozenset({"missing_field", "unknown_state"})
DEFAULT_STATUS: dict[str, int] = {"html": 502, "slow_down": 400, "auth": 403}


def check_odds(probability: float, times: int | None) -> None:
    """A fault's (or a callback fault's) probability and count of times, or ValueError."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"fault probability {probability} is not within [0, 1]")
    if times is not None and times < 1:
        raise ValueError(f"fault times {times} must be at least 1")


@dataclass
class Fault:
    kind: str
    path: str | None = None  # an endpoint family such as "/jobs"; None matches all
    bucket: str | None = None  # None matches every bucket
    times: int | None = None  # None: until removed
    probability: float = 1.0
    delay: float = 5.0  # slow
    status: int | None = None  # html, slow_down, auth; None: DEFAULT_STATUS
    retry_after: float = 1  # http_429
    retry_after_as_date: bool = False  # http_429: an HTTP date `retry_after` s after Date
    size: int = 20 * 1024 * 1024  # oversized
    job_field: str = "JobId"  # missing_field
    state: str = "Queuing"  # unknown_state
    offset: float = 3600.0  # skew
    code: str = "AccessDenied"  # auth
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        check_odds(self.probability, self.times)
        if self.status is None:
            self.status = DEFAULT_STATUS.get(self.kind, 500)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, bucket: str, family: str, listing: bool, jobs: bool = False) -> bool:
        return (
            (self.path is None or self.path == family)
            and (self.bucket is None or self.bucket == bucket)
            and (listing or self.kind not in LISTING_ONLY)
            and (jobs or listing or self.kind not in JOBS_ONLY)
        )


class FaultSet:
    """The faults active on one simulator. Thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def pick(
        self, bucket: str, family: str, listing: bool = False, jobs: bool = False
    ) -> Fault | None:
        """The first matching fault that fires for this request, counting the hit. `listing`:
        a job listing; `jobs`: an answer with jobs (a listing or describe-by-id)."""
        with self._lock:
            for fault in self._faults:
                if fault.exhausted or not fault.matches(bucket, family, listing, jobs):
                    continue
                # Draw only for partial faults, so adding a certain fault keeps the sequence.
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                return fault
        return None
