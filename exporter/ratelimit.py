"""How fast the exporter may call CI: a shared request gate, per-target pacing, retry back-off.

RequestGate: one per set of credentials, shared by every client that signs with them (CI's
frequency control is per account, not per bucket). A token bucket (`burst` tokens, refilled at
`requests_per_second`) and a limit on requests in flight. A token is taken under the lock at
the clock reading at which the request is let go, so over any window of length w at most
`burst + requests_per_second * w` requests start: exactly, not on average, whatever the
threads do (to within EPSILON of a token, so that float rounding cannot spin a waiter). Waiters
are served first come, first served. Waiting for a token sleeps on the `stopping` Event, and
waiting for a slot in flight re-checks it every SLOT_POLL seconds, so shutdown is prompt.

Pacer: one per client (target). CI answers "slow down" (429, 503, Code SlowDown) when an
account goes too fast; the gate is the configured ceiling, the pacer is how a target backs off
below it when CI still complains. Each throttled answer doubles the spacing between the
target's requests (from PACE_FLOOR up to PACE_CAP) and holds all of them until any Retry-After
has passed; each successful request takes a sixteenth off the spacing (so it halves back after
about eleven successes), and below half the floor the spacing is dropped. Multiplicative
decrease, slower increase: a target settles just under CI's limit instead of swinging around it.

RetryPolicy: bounded retries with exponential back-off and full jitter (a uniform draw between
0 and min(max_backoff, initial_backoff * 2**(retry - 1))), so that targets throttled together
do not come back together.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from exporter.ci.models import CIStopped

Clock = Callable[[], float]
# (stopping, seconds) -> whether `stopping` was set: how every wait here sleeps, so that tests
# can replace real time and shutdown cuts any wait short.
Sleep = Callable[[threading.Event, float], bool]

EPSILON = 1e-9  # of a token: float rounding must not make a due token wait a few ulps more
SLOT_POLL = 0.1  # seconds; how often a waiter for a slot in flight checks `stopping`
PACE_FLOOR = 0.1  # seconds between a target's requests after its first throttled answer
PACE_CAP = 2.0  # seconds: a target throttled again and again still polls its streams
PACE_RELIEF = 15 / 16  # the spacing left after a successful request
MAX_RETRY_AFTER = 300.0  # seconds: a Retry-After beyond this is a broken header, not advice


def wait_on(stopping: threading.Event, seconds: float) -> bool:
    """The real sleep: `seconds`, or less when `stopping` is set."""
    return stopping.wait(seconds) if seconds > 0 else stopping.is_set()


def monotonic() -> float:
    # Looked up at each call, not bound at import, so that freezegun can move it in tests.
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` calls at most per request (1: no retry)."""

    attempts: int = 3
    initial_backoff: float = 0.5
    max_backoff: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"retry attempts must be at least 1, got {self.attempts}")
        if not 0 <= self.initial_backoff <= self.max_backoff or math.isinf(self.max_backoff):
            raise ValueError(
                "retry back-off must be 0 <= initial_backoff <= max_backoff < inf, got "
                f"{self.initial_backoff:g} and {self.max_backoff:g}"
            )

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """The wait before retry number `retry` (1 for the first), full jitter."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0 ** min(retry - 1, 60))
        return ceiling * random()


NO_RETRY = RetryPolicy(attempts=1, initial_backoff=0.0, max_backoff=0.0)


class RequestGate:
    """A token bucket and a limit on requests in flight, shared by threads. See the module."""

    def __init__(
        self,
        requests_per_second: float,
        burst: int,
        concurrency: int,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not requests_per_second > 0:  # also refuses NaN
            raise ValueError(f"requests_per_second must be > 0, got {requests_per_second}")
        if burst < 1 or concurrency < 1:
            raise ValueError(f"burst and concurrency must be >= 1, got {burst} and {concurrency}")
        self.requests_per_second = requests_per_second
        self.burst = burst
        self.concurrency = concurrency
        self._clock = clock or monotonic
        self._sleep = sleep or wait_on
        self._cond = threading.Condition(threading.Lock())
        self._tokens = float(burst)
        self._updated = self._clock()
        self._in_flight = 0
        self._queue: deque[object] = deque()
        self.granted = 0  # requests let go since the start

    def __repr__(self) -> str:
        return (
            f"RequestGate(requests_per_second={self.requests_per_second:g}, "
            f"burst={self.burst}, concurrency={self.concurrency})"
        )

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    @contextmanager
    def slot(self, stopping: threading.Event | None = None) -> Iterator[None]:
        """Held while one request is in flight. Raises CIStopped once `stopping` is set."""
        self.acquire(stopping)
        try:
            yield
        finally:
            self.release()

    def acquire(self, stopping: threading.Event | None = None) -> None:
        stop = stopping if stopping is not None else threading.Event()
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._wait_turn(ticket, stop)
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise

    def _wait_turn(self, ticket: object, stop: threading.Event) -> None:
        """With the lock held: wait until `ticket` is first, a slot is free and a token due."""
        while True:
            if stop.is_set():
                raise CIStopped("stopped while waiting for the request rate limit")
            if self._queue[0] is not ticket or self._in_flight >= self.concurrency:
                self._cond.wait(SLOT_POLL)  # woken at once by release() or by the head leaving
                continue
            delay = self._take_token()
            if delay <= 0:
                self._queue.popleft()
                self._in_flight += 1
                self.granted += 1
                self._cond.notify_all()
                return
            # The first in line sleeps on `stopping`, without the lock; the rest wait behind it.
            self._cond.release()
            try:
                self._sleep(stop, delay)
            finally:
                self._cond.acquire()

    def _take_token(self) -> float:
        """Take a token now (0 returned), or say how long until one is due."""
        if math.isinf(self.requests_per_second):
            return 0.0
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.requests_per_second)
        self._updated = now
        if self._tokens >= 1.0 - EPSILON:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.requests_per_second

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()


class Pacer:
    """Adaptive spacing of one target's requests after CI throttles it. See the module."""

    def __init__(
        self,
        *,
        floor: float = PACE_FLOOR,
        cap: float = PACE_CAP,
        relief: float = PACE_RELIEF,
        clock: Clock | None = None,
    ) -> None:
        if not 0 < floor <= cap or not 0 < relief < 1:
            raise ValueError("pacing needs 0 < floor <= cap and 0 < relief < 1")
        self._floor, self._cap, self._relief = floor, cap, relief
        self._clock = clock or monotonic
        self._lock = threading.Lock()
        self._spacing = 0.0
        self._next = -math.inf  # the earliest start of the next request

    @property
    def spacing(self) -> float:
        with self._lock:
            return self._spacing

    def reserve(self) -> float:
        """Book the next request's start: how long the caller must wait before sending it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._spacing
            return start - now

    def throttled(self, hold: float = 0.0) -> None:
        """CI said slow down: space requests further apart, and none for `hold` seconds."""
        with self._lock:
            self._spacing = min(self._cap, max(self._floor, self._spacing * 2))
            self._next = max(self._next, self._clock() + hold)

    def succeeded(self) -> None:
        with self._lock:
            self._spacing *= self._relief
            if self._spacing < self._floor / 2:
                self._spacing = 0.0
