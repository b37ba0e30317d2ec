"""Which of a target's streams are due: the idle back-off.

A stream (service, queue, tag) that showed no job for IDLE_AFTER polls in a row is polled less
often: its delay doubles per empty poll up to `idle_tag_backoff`, and the first job (or a
failed poll of it) makes it due at every poll again. Owned by the target's poll thread.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporter.accounting import StreamKey

# Polls in a row that see no job before a stream's polls are spaced out.
IDLE_AFTER = 2


def idle_delay(streak: int, interval: float, longest: float) -> float:
    """The wait before polling a stream again after `streak` polls in a row saw no job: one
    interval for the first IDLE_AFTER, then doubling, never more than `longest`."""
    if streak < IDLE_AFTER or longest <= interval:
        return interval
    return min(longest, interval * 2.0 ** (streak - IDLE_AFTER + 1))


def idle_phase(key: StreamKey, delay: float, interval: float) -> float:
    """How much earlier than `delay` an idle stream is due again. Streams that went idle
    together would otherwise all come due in one poll, every idle_tag_backoff: a burst of
    calls that the rate limit then stretches. Each stream keeps a phase of its own, whole
    intervals, up to a quarter of the delay (never later: the maximum holds)."""
    intervals = int(delay / interval / 4)
    return (zlib.crc32(repr(key).encode()) % (intervals + 1)) * interval


@dataclass(slots=True)
class _Idle:
    """How long a stream has shown no job, and when it is next due."""

    streak: int = 0
    due: float = 0.0


class IdleSchedule:
    """When each stream of a target is next due."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._idle: dict[StreamKey, _Idle] = {}
        self.poll_interval = 60.0
        self.longest = 0.0  # idle_tag_backoff; 0: no back-off

    def configure(self, poll_interval: float, idle_tag_backoff: float) -> None:
        self.poll_interval, self.longest = poll_interval, idle_tag_backoff

    def due(self, key: StreamKey) -> bool:
        idle = self._idle.get(key)
        # Half an interval of slack: polls do not start to the millisecond.
        return idle is None or self._clock() >= idle.due - self.poll_interval / 2

    def failed(self, key: StreamKey) -> None:
        """A poll of the stream failed: it is due again at the next poll."""
        self._idle.setdefault(key, _Idle()).due = 0.0

    def polled(self, key: StreamKey, *, saw_jobs: bool) -> None:
        """A poll of the stream succeeded, and saw jobs or not."""
        idle = self._idle.setdefault(key, _Idle())
        idle.streak = 0 if saw_jobs else idle.streak + 1
        delay = idle_delay(idle.streak, self.poll_interval, self.longest)
        # Not backing off: due at every poll, however often polls come (tests, --once).
        if delay <= self.poll_interval:
            idle.due = 0.0
            return
        idle.due = self._clock() + delay - idle_phase(key, delay, self.poll_interval)

    def forget(self, keys: Iterable[StreamKey]) -> None:
        for key in keys:
            self._idle.pop(key, None)
