"""A CI workload at scale, played into the simulator: N targets x queues x tags.

Most tags of most queues are idle. Arrivals are Poisson, skewed: a few hot tags in a few busy
queues carry most jobs, one rare tag per queue sees a job every half hour or so, the last
queue of every target is paused (its jobs wait in Pause), and on top come bursts (hundreds
of jobs dropped on one tag within seconds). Run times are lognormal with a long tail (some
jobs run for hours); 2% of jobs fail, over ten codes, some before they ever start.

The workload also keeps the ground truth the benchmarks compare with: per stream, how many
jobs are active now, how many have finished so far, and by which state and failure code.
Everything comes from one seeded RNG, so a seed gives the same jobs in every run.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter, deque
from dataclasses import dataclass

from exporter.ci.services import MEDIA_TAGS
from exporter.simulator import FAILURE_CODES as SIMULATOR_FAILURE_CODES
from exporter.simulator import SimBucket, Simulator

# Failure codes look like CI's; ten of them, as the issue asks: the simulator's five and five more.
FAILURE_CODES: tuple[tuple[str, str], ...] = (
    *SIMULATOR_FAILURE_CODES,
    ("InvalidParameter", "a parameter of the job is invalid"),
    ("DecodeFailed", "the input stream cannot be decoded"),
    ("Timeout", "the job did not finish within its time limit"),
    ("OutputObjectTooLarge", "the output object is larger than allowed"),
    ("AudioTrackNotFound", "the input has no audio track"),
)

REGION = "ap-shanghai"
# StreamId: (bucket, queue_id, tag), as the exporter's series name a stream.
StreamId = tuple[str, str, str]
# A stream's finished jobs by ("state", state) and ("code", failure code).
Outcomes = Counter[tuple[str, str]]

_ARRIVE, _BURST, _BURST_ONE, _FINISH = range(4)


@dataclass(frozen=True)
class Shape:
    """What the workload looks like. The defaults are the issue's "1M jobs a day"."""

    targets: int = 5
    queues: int = 10  # per target; the last one is paused
    tags: int = 20  # per queue
    jobs_per_day: float = 1_000_000.0
    busy_tags: int = 4  # in the busiest queues; one fewer every third queue, at least one
    median_run: float = 90.0  # seconds
    run_sigma: float = 1.5  # of log(run time): a long tail
    max_run: float = 6 * 3600.0
    failure_ratio: float = 0.02
    cancel_ratio: float = 0.005
    unstarted_ratio: float = 0.2  # of failed and cancelled jobs: end while still waiting
    burst_share: float = 0.1  # of all jobs arrive in bursts
    burst_size: int = 200  # jobs in a burst, on average
    burst_spread: float = 20.0  # seconds over which a burst arrives
    rare_every: float = 1800.0  # seconds between jobs of a rare tag, on average
    paused_every: float = 600.0  # seconds between jobs arriving in a paused queue's tag
    retention: float = 2 * 3600.0  # finished jobs leave CI this long after they end

    @property
    def rate(self) -> float:
        """Jobs per second, bursts included."""
        return self.jobs_per_day / 86400.0

    @property
    def mean_run(self) -> float:
        return min(self.max_run, self.median_run * math.exp(self.run_sigma**2 / 2))

    @property
    def streams(self) -> int:
        return self.targets * self.queues * self.tags


def tag_names(count: int) -> tuple[str, ...]:
    """The documented media tags first; past those (19), made-up ones (CI takes any tag)."""
    extra = tuple(f"Custom{i}" for i in range(1, count - len(MEDIA_TAGS) + 1))
    return (MEDIA_TAGS + extra)[:count]


def bucket_name(index: int) -> str:
    return f"bench{index:02d}-{1250000000 + index}"


@dataclass(frozen=True, slots=True)
class StreamPlan:
    stream: StreamId
    kind: str  # busy, rare, paused or idle
    rate: float  # Poisson arrivals per second; 0 for idle


@dataclass(frozen=True, slots=True)
class TargetPlan:
    bucket: str
    region: str
    queue_ids: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Outcome:
    run: float
    state: str
    code: str = ""
    message: str = ""
    unstarted: bool = False


@dataclass(frozen=True, slots=True)
class _Job:
    stream: int
    job_id: str
    creation: float
    outcome: _Outcome


class ScaleWorkload:
    """Plays the workload into the simulator's buckets as time passes (`advance`)."""

    def __init__(self, sim: Simulator, shape: Shape, *, seed: int, start: float) -> None:
        self.shape = shape
        self.time = start
        self._rng = random.Random(seed)
        self.targets: list[TargetPlan] = []
        self.streams: list[StreamPlan] = []
        self._buckets: dict[str, SimBucket] = {}
        self._capacity: dict[tuple[str, str], int] = {}
        self._build(sim, start)
        self._index = {plan.stream: i for i, plan in enumerate(self.streams)}
        self._events: list[tuple[float, int, int, int | _Job]] = []
        self._seq = 0
        self._waiting: dict[tuple[str, str], deque[_Job]] = {}
        self._running: Counter[tuple[str, str]] = Counter()
        self._expiry: deque[tuple[float, str, str]] = deque()
        # Ground truth, per stream (index into self.streams).
        self.active = [0] * len(self.streams)
        self.finished = [0] * len(self.streams)
        self.outcomes: list[Outcomes] = [Counter() for _ in self.streams]
        self.created = 0
        # Finished jobs whose age (creation to end) exceeded `long_age`: what a re-listing of
        # the last `long_age` seconds cannot see finish.
        self.long_age = math.inf
        self.long_finishes = 0
        self._busy = [i for i, plan in enumerate(self.streams) if plan.kind == "busy"]
        self._busy_weights = [self.streams[i].rate for i in self._busy]
        for i, plan in enumerate(self.streams):
            if plan.rate > 0:
                self._push(start + self._rng.expovariate(plan.rate), _ARRIVE, i)
        if self._busy and shape.burst_share > 0:
            self._push(start + self._rng.expovariate(self._burst_rate), _BURST, 0)

    # -- layout ---------------------------------------------------------------------------

    def _build(self, sim: Simulator, start: float) -> None:
        shape = self.shape
        tags = tag_names(shape.tags)
        # (target, queue, tag index) -> (kind, rate); busy streams get a weight first.
        plan: dict[tuple[int, int, int], tuple[str, float]] = {}
        weights: dict[tuple[int, int, int], float] = {}
        for t in range(shape.targets):
            for q in range(shape.queues):
                paused = shape.queues >= 2 and q == shape.queues - 1
                busy = 0 if paused else min(shape.tags, max(1, shape.busy_tags - q // 3))
                for i in range(shape.tags):
                    if paused and i == 0:
                        plan[t, q, i] = ("paused", 1 / shape.paused_every)
                    elif paused:
                        plan[t, q, i] = ("idle", 0.0)
                    elif i < busy:
                        weights[t, q, i] = 1 / math.sqrt(t + 1) / (q + 1) / (i + 1) ** 2
                    elif i == busy:
                        plan[t, q, i] = ("rare", 1 / shape.rare_every)
                    else:
                        plan[t, q, i] = ("idle", 0.0)
        steady = shape.rate * (1 - shape.burst_share)
        total_weight = sum(weights.values()) or 1.0
        load: dict[tuple[int, int], float] = {}
        for (t, q, i), weight in weights.items():
            plan[t, q, i] = ("busy", steady * weight / total_weight)
            # Bursts land on busy streams in proportion to their rate: the whole rate here.
            share = shape.rate * weight / total_weight * shape.mean_run
            load[t, q] = load.get((t, q), 0.0) + share
        for t in range(shape.targets):
            bucket = sim.add_bucket(bucket_name(t), REGION)
            self._buckets[bucket.name] = bucket
            queue_ids: list[str] = []
            for q in range(shape.queues):
                paused = shape.queues >= 2 and q == shape.queues - 1
                # Half again what the queue's share of jobs keeps running: bursts make a
                # backlog that drains, the steady load does not.
                capacity = max(4, math.ceil(1.5 * load.get((t, q), 0.0)))
                queue_id = bucket.add_queue(
                    "media",
                    name=f"q{q:02d}",
                    max_concurrent=capacity,
                    paused=paused,
                    at=start - 86400,
                )
                self._capacity[bucket.name, queue_id] = 0 if paused else capacity
                queue_ids.append(queue_id)
                for i, tag in enumerate(tags):
                    kind, rate = plan[t, q, i]
                    self.streams.append(StreamPlan((bucket.name, queue_id, tag), kind, rate))
            self.targets.append(TargetPlan(bucket.name, REGION, tuple(queue_ids), tags))

    @property
    def _burst_rate(self) -> float:
        shape = self.shape
        return shape.rate * shape.burst_share / shape.burst_size

    # -- time -----------------------------------------------------------------------------

    def _push(self, at: float, kind: int, what: int | _Job) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, what))

    def advance(self, to_time: float) -> None:
        """Play every event up to `to_time`."""
        while self._events and self._events[0][0] <= to_time:
            at, _, kind, what = heapq.heappop(self._events)
            if kind == _FINISH:
                assert isinstance(what, _Job)
                self._finish(at, what)
            elif kind == _BURST:
                self._burst(at)
            else:
                assert isinstance(what, int)
                self._arrive(at, what, again=kind == _ARRIVE)
        self.time = max(self.time, to_time)
        self._expire(to_time)

    def _burst(self, at: float) -> None:
        shape = self.shape
        (stream,) = self._rng.choices(self._busy, self._busy_weights)
        size = max(1, round(shape.burst_size * self._rng.uniform(0.5, 1.5)))
        for _ in range(size):
            self._push(at + self._rng.uniform(0, shape.burst_spread), _BURST_ONE, stream)
        self._push(at + self._rng.expovariate(self._burst_rate), _BURST, 0)

    def _draw(self) -> _Outcome:
        shape, rng = self.shape, self._rng
        run = min(shape.max_run, rng.lognormvariate(math.log(shape.median_run), shape.run_sigma))
        roll = rng.random()
        code, message = FAILURE_CODES[rng.randrange(len(FAILURE_CODES))]
        unstarted = rng.random() < shape.unstarted_ratio
        if roll < shape.failure_ratio:
            return _Outcome(run, "Failed", code, message, unstarted)
        if roll < shape.failure_ratio + shape.cancel_ratio:
            return _Outcome(run, "Cancel", unstarted=unstarted)
        return _Outcome(run, "Success")

    def _arrive(self, at: float, index: int, *, again: bool) -> None:
        outcome = self._draw()
        plan = self.streams[index]
        if again:
            self._push(at + self._rng.expovariate(plan.rate), _ARRIVE, index)
        bucket_name_, queue_id, tag = plan.stream
        bucket = self._buckets[bucket_name_]
        job = _Job(index, bucket.create_job(queue_id, tag, at=at), float(int(at)), outcome)
        self.created += 1
        if outcome.unstarted:
            bucket.finish_job(job.job_id, outcome.state, outcome.code, outcome.message, at=at)
            self._record(at, job)
            return
        self.active[index] += 1
        self._waiting.setdefault((bucket_name_, queue_id), deque()).append(job)
        self._fill(bucket_name_, queue_id, at)

    def _fill(self, bucket_name_: str, queue_id: str, at: float) -> None:
        key = (bucket_name_, queue_id)
        waiting = self._waiting.get(key)
        bucket = self._buckets[bucket_name_]
        while waiting and self._running[key] < self._capacity[key]:
            job = waiting.popleft()
            bucket.start_job(job.job_id, at=at)
            self._running[key] += 1
            self._push(at + job.outcome.run, _FINISH, job)

    def _finish(self, at: float, job: _Job) -> None:
        bucket_name_, queue_id, _ = self.streams[job.stream].stream
        outcome = job.outcome
        self._buckets[bucket_name_].finish_job(
            job.job_id, outcome.state, outcome.code, outcome.message, at=at
        )
        self._running[(bucket_name_, queue_id)] -= 1
        self.active[job.stream] -= 1
        self._record(at, job)
        self._fill(bucket_name_, queue_id, at)

    def _record(self, at: float, job: _Job) -> None:
        index, outcome = job.stream, job.outcome
        self.finished[index] += 1
        self.outcomes[index][("state", outcome.state)] += 1
        if outcome.state == "Failed":
            self.outcomes[index][("code", outcome.code)] += 1
        if int(at) - job.creation > self.long_age:
            self.long_finishes += 1
        self._expiry.append((at, self.streams[index].stream[0], job.job_id))

    def _expire(self, now: float) -> None:
        horizon = now - self.shape.retention
        while self._expiry and self._expiry[0][0] < horizon:
            _, bucket, job_id = self._expiry.popleft()
            self._buckets[bucket].delete_job(job_id)

    # -- ground truth ---------------------------------------------------------------------

    def stream_ids(self) -> list[StreamId]:
        return [plan.stream for plan in self.streams]

    def outcomes_now(self) -> dict[StreamId, Outcomes]:
        """A copy of every non-empty stream's finished jobs so far."""
        return {
            self.streams[i].stream: Counter(counts)
            for i, counts in enumerate(self.outcomes)
            if counts
        }

    def kinds(self) -> Counter[str]:
        return Counter(plan.kind for plan in self.streams)

    def jobs_in_ci(self) -> int:
        return sum(bucket.job_count() for bucket in self._buckets.values())
