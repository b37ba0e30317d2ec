"""Jobs that come and go on their own: Streams of jobs arriving on a queue (with their Surges)
and the seeded, event-driven Workload that plays them on a bucket.

`advance(t)` replays every event up to `t` in time order from one seeded RNG, so the same
seed gives the same jobs whether time is advanced in one step or in many.

Thread ownership: a Workload's events, waiting jobs and RNG are owned by the one thread that
advances it (the simulator's workload thread after Simulator.start_workload(), else the caller);
it changes its bucket only through the bucket's own locked methods (exporter.simulator.model).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.ci.services import SERVICES
from exporter.simulator.model import SimBucket

# Failure codes are open-ended text in CI; these look like what it reports.
FAILURE_CODES: tuple[tuple[str, str], ...] = (
    ("InputFileNotExist", "the input file does not exist"),
    ("InvalidInputFile", "the input file format is not supported"),
    ("InternalError", "internal error, please retry"),
    ("OutputBucketNoPermission", "no permission to write the output bucket"),
    ("TemplateNotExist", "the template does not exist"),
)


# (Code, Message, weight): a failure code drawn in proportion to its weight.
WeightedCode = tuple[str, str, float]


@dataclass(frozen=True, slots=True)
class Surge:
    """A stream's jobs arriving at `rate` per second instead of its own, for `lasting` seconds
    of every `every`, the first surge starting `offset` seconds after the workload's start."""

    rate: float
    every: float
    lasting: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or not 0 < self.lasting <= self.every:
            raise ValueError("a surge needs rate > 0 and 0 < lasting <= every")

    def on(self, elapsed: float) -> bool:
        """Whether the surge is on `elapsed` seconds after the workload's start."""
        return (elapsed - self.offset) % self.every < self.lasting


@dataclass(frozen=True, slots=True)
class Stream:
    """Jobs of one tag arriving on one queue: Poisson at `rate` per second (at `surge.rate`
    while a surge is on), lognormal run times around `median_run` seconds."""

    queue_id: str
    tag: str
    rate: float
    median_run: float = 20.0
    sigma: float = 1.0
    failure_ratio: float | None = None  # this stream's own, instead of the workload's
    failure_codes: tuple[WeightedCode, ...] = ()  # this stream's own, instead of the workload's
    surge: Surge | None = None
    # Seconds a job waits to start before its submitter gives up and cancels it; None: forever.
    patience: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.median_run <= 0 or self.sigma < 0:
            raise ValueError(f"stream {self.queue_id}/{self.tag}: rate and run time must be > 0")
        if self.patience is not None and self.patience <= 0:
            raise ValueError(f"stream {self.queue_id}/{self.tag}: patience must be > 0")
        if self.failure_codes and min(weight for _, _, weight in self.failure_codes) <= 0:
            raise ValueError(f"stream {self.queue_id}/{self.tag}: code weights must be > 0")

    @property
    def peak_rate(self) -> float:
        return self.rate if self.surge is None else max(self.rate, self.surge.rate)

    def rate_at(self, elapsed: float) -> float:
        """Jobs per second `elapsed` seconds after the workload's start."""
        return self.surge.rate if self.surge is not None and self.surge.on(elapsed) else self.rate


@dataclass(frozen=True, slots=True)
class _Outcome:
    run_time: float
    state: str
    code: str = ""
    message: str = ""
    at_submit: bool = False  # rejected or cancelled before it ever started: no StartTime


@dataclass(frozen=True, slots=True)
class _Running:
    job_id: str
    queue_id: str
    outcome: _Outcome


@dataclass(frozen=True, slots=True)
class _GiveUp:
    """The submitter of a job still waiting cancels it."""

    job_id: str
    queue_id: str


# (time, sequence, stream index for an arrival, the running job to finish, or a give-up)
_Event = tuple[float, int, "int | _Running | _GiveUp"]


class Workload:
    """Creates, starts and finishes jobs of one bucket as time passes.

    At most MaxConcurrent jobs of a queue run at once (counting jobs started by anyone);
    waiting jobs start in arrival order. A paused queue starts nothing: its jobs wait in
    Pause, and those already running carry on. A stream with `patience` cancels its jobs that
    are still waiting after that long, which bounds what a paused or overloaded queue holds.
    A surging stream's arrivals are thinned from its peak rate, one draw per candidate.
    """

    def __init__(
        self,
        bucket: SimBucket,
        seed: int,
        streams: Sequence[Stream] | None = None,
        *,
        start: float | None = None,
        default_rate: float = 0.1,
        failure_ratio: float = 0.04,
        cancel_ratio: float = 0.01,
        unstarted_ratio: float = 0.2,
        failure_codes: Sequence[tuple[str, str]] = FAILURE_CODES,
        retention: float | None = None,
        max_run_time: float = 3600.0,
    ) -> None:
        self.bucket = bucket
        self.streams = (
            list(streams) if streams is not None else self._default_streams(bucket, default_rate)
        )
        self.time = bucket.now() if start is None else start
        self.origin = self.time  # surges are timed from here
        self.failure_ratio = failure_ratio
        self.cancel_ratio = cancel_ratio
        # Of the failed and cancelled jobs, the share that ends while still waiting.
        self.unstarted_ratio = unstarted_ratio
        self.failure_codes = tuple(failure_codes)
        self.retention = retention
        self.max_run_time = max_run_time
        self._rng = random.Random(seed)
        self._events: list[_Event] = []
        self._seq = 0
        self._waiting: dict[str, deque[str]] = {}
        self._outcomes: dict[str, _Outcome] = {}
        self._finished: deque[tuple[float, str]] = deque()
        for index, stream in enumerate(self.streams):
            self._push(self.time + self._rng.expovariate(stream.peak_rate), index)

    @staticmethod
    def _default_streams(bucket: SimBucket, rate: float) -> list[Stream]:
        return [
            Stream(q.queue_id, tag, rate)
            for q in bucket.queues()
            if q.service in SERVICES  # not workflows or batch jobs: their own life cycles
            for tag in SERVICES[q.service].tags[:2]
        ]

    def _push(self, at: float, what: int | _Running | _GiveUp) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, what))

    def advance(self, to_time: float) -> None:
        """Play every event up to `to_time`; earlier times are a no-op."""
        if to_time <= self.time:
            return
        # Someone may have resumed a queue or freed a slot since the last call; that
        # happened "now" as far as we know, so fill free slots at that point of the replay.
        pivot = min(to_time, max(self.time, self.bucket.now()))
        self._play(pivot)
        self._fill_slots(pivot)
        self._play(to_time)
        self.time = to_time
        self._expire(to_time)

    def _play(self, until: float) -> None:
        while self._events and self._events[0][0] <= until:
            at, _, what = heapq.heappop(self._events)
            if isinstance(what, _Running):
                self._finish(at, what)
            elif isinstance(what, _GiveUp):
                self._give_up(at, what)
            else:
                self._arrive(at, what)

    def _arrive(self, at: float, index: int) -> None:
        stream = self.streams[index]
        # Draw the same numbers for every arrival, whatever happens next: determinism.
        if stream.surge is not None:
            admitted = self._rng.random() * stream.peak_rate < stream.rate_at(at - self.origin)
            if not admitted:  # a candidate thinned away: no job
                self._push(at + self._rng.expovariate(stream.peak_rate), index)
                return
        outcome = self._draw(stream)
        self._push(at + self._rng.expovariate(stream.peak_rate), index)
        try:
            job_id = self.bucket.create_job(stream.queue_id, stream.tag, at=at)
        except KeyError:  # the queue was removed; its stream dries up
            return
        if outcome.at_submit:
            self.bucket.finish_job(job_id, outcome.state, outcome.code, outcome.message, at=at)
            if self.retention is not None:
                self._finished.append((at, job_id))
            return
        self._waiting.setdefault(stream.queue_id, deque()).append(job_id)
        self._outcomes[job_id] = outcome
        self._fill_queue(stream.queue_id, at)
        if stream.patience is not None and job_id in self._outcomes:  # it has to wait
            self._push(at + stream.patience, _GiveUp(job_id, stream.queue_id))

    def _draw(self, stream: Stream) -> _Outcome:
        run = self._rng.lognormvariate(math.log(stream.median_run), stream.sigma)
        run = min(run, self.max_run_time)
        roll = self._rng.random()
        if stream.failure_codes:
            code, message = _weighted(stream.failure_codes, self._rng.random())
        else:
            code, message = self.failure_codes[self._rng.randrange(len(self.failure_codes))]
        unstarted = self._rng.random() < self.unstarted_ratio
        failure_ratio = self.failure_ratio if stream.failure_ratio is None else stream.failure_ratio
        if roll < failure_ratio:
            return _Outcome(run, "Failed", code, message, at_submit=unstarted)
        if roll < failure_ratio + self.cancel_ratio:
            return _Outcome(run, "Cancel", at_submit=unstarted)
        return _Outcome(run, "Success")

    def _fill_slots(self, at: float) -> None:
        for queue_id in sorted(self._waiting):
            self._fill_queue(queue_id, at)

    def _fill_queue(self, queue_id: str, at: float) -> None:
        waiting = self._waiting.get(queue_id)
        if not waiting:
            return
        try:
            free = self.bucket.free_slots(queue_id)
        except KeyError:  # the queue was removed
            del self._waiting[queue_id]
            return
        while free > 0 and waiting:
            job_id = waiting.popleft()
            outcome = self._outcomes.pop(job_id)
            try:
                self.bucket.start_job(job_id, at=at)
            except (KeyError, ValueError):  # deleted or finished by someone else meanwhile
                continue
            self._push(at + outcome.run_time, _Running(job_id, queue_id, outcome))
            free -= 1

    def _finish(self, at: float, running: _Running) -> None:
        outcome = running.outcome
        try:
            if self.bucket.job_state(running.job_id) == "Running":
                self.bucket.finish_job(
                    running.job_id, outcome.state, outcome.code, outcome.message, at=at
                )
                if self.retention is not None:
                    self._finished.append((at, running.job_id))
        except KeyError:  # deleted meanwhile
            pass
        self._fill_queue(running.queue_id, at)

    def _give_up(self, at: float, giving_up: _GiveUp) -> None:
        """Cancel the job if it still waits (it may have started, or its queue gone)."""
        if self._outcomes.pop(giving_up.job_id, None) is None:
            return
        waiting = self._waiting.get(giving_up.queue_id)
        if waiting is not None:
            waiting.remove(giving_up.job_id)
        with contextlib.suppress(KeyError, ValueError):  # deleted or finished meanwhile
            self.bucket.finish_job(giving_up.job_id, "Cancel", at=at)
            if self.retention is not None:
                self._finished.append((at, giving_up.job_id))

    def footprint(self) -> int:
        """What the workload holds: pending events, waiting jobs, finished jobs to expire."""
        return len(self._events) + len(self._outcomes) + len(self._finished)

    def _expire(self, now: float) -> None:
        if self.retention is None:
            return
        while self._finished and self._finished[0][0] < now - self.retention:
            _, job_id = self._finished.popleft()
            with contextlib.suppress(KeyError):
                self.bucket.delete_job(job_id)


def _weighted(codes: Sequence[WeightedCode], roll: float) -> tuple[str, str]:
    """The (Code, Message) that `roll` (uniform in [0, 1)) picks, in proportion to weight."""
    bounds = list(itertools.accumulate(weight for _, _, weight in codes))
    index = min(bisect.bisect_right(bounds, roll * bounds[-1]), len(codes) - 1)
    code, message, _ = codes[index]
    return code, message
