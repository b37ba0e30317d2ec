"""Jobs that come and go on their own: a seeded, event-driven workload, and the demo.

`advance(t)` replays every event up to `t` in time order from one seeded RNG, so the same
seed gives the same jobs whether time is advanced in one step or in many.
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
from exporter.simulator.server import Simulator
from exporter.simulator.workflows import BATCH_QUEUE_ID

# Failure codes are open-ended text in CI; these look like what it reports.
FAILURE_CODES: tuple[tuple[str, str], ...] = (
    ("InputFileNotExist", "the input file does not exist"),
    ("InvalidInputFile", "the input file format is not supported"),
    ("InternalError", "internal error, please retry"),
    ("OutputBucketNoPermission", "no permission to write the output bucket"),
    ("TemplateNotExist", "the template does not exist"),
)

DEMO_SECRET_ID = "AKIDdemo0000000000000000000000000000"
DEMO_SECRET_KEY = "demo-secret-key-not-a-real-one-000000"


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


# -- the demo ------------------------------------------------------------------------------
#
# Healthy queues run far below MaxConcurrent: their load (jobs per second times mean run time)
# is at most a sixth of it, so that every slot is busy at once well under 1 time in 10,000,
# and they fail 2% of their jobs. No alert of deploy/prometheus/rules has anything to say about
# them. The demo's problems are these, each on its own (tests/test_demo_workload.py):

DEMO_PAUSED_QUEUE = "archive-paused"  # paused: jobs wait in Pause until their submitter gives up
DEMO_FLAKY_QUEUE = "tts-flaky"  # 40% of its jobs fail: most with InternalError, a few otherwise
DEMO_BACKLOG_QUEUE = "asr-backlog"  # a surge a quarter of every hour: its backlog grows, drains
DEMO_THROTTLED_BUCKET = "media-1250000001"  # CI throttles a share of its calls (exporter.demo)

DEMO_SIGMA = 0.5  # run times vary around their median, without a heavy tail
DEMO_FAILURE_RATIO = 0.02
DEMO_CANCEL_RATIO = 0.01
DEMO_PATIENCE = 1800.0  # a job still waiting after half an hour is cancelled by its submitter
# The backlog queue's surge: from the demo's start, 15 minutes of every hour.
DEMO_SURGE_EVERY = 3600.0
DEMO_SURGE_LASTING = 900.0


@dataclass(frozen=True, slots=True)
class DemoQueue:
    """A queue of the demo and the jobs that arrive on it."""

    service: str
    name: str
    max_concurrent: int
    tags: tuple[tuple[str, float, float], ...]  # (tag, jobs per second, median run seconds)
    category: str | None = None
    paused: bool = False
    notify: bool = False
    failure_ratio: float | None = None  # the queue's own, instead of DEMO_FAILURE_RATIO
    failure_codes: tuple[WeightedCode, ...] = ()  # the queue's own, instead of FAILURE_CODES
    surge: float = 1.0  # the tags' rates are this many times higher while a surge is on


DEMO_FLAKY_WORKFLOW = "thumbnail-flow"  # nearly half of its runs fail
DEMO_PAUSED_WORKFLOW = "archive-flow"  # paused: starts no runs
DEMO_SERVICES = (*SERVICES, "workflow", "batch")

FLAKY_CODES: tuple[WeightedCode, ...] = (
    ("InternalError", "internal error, please retry", 16.0),
    *((code, message, 1.0) for code, message in FAILURE_CODES if code != "InternalError"),
)

DEMO_BUCKETS: tuple[tuple[str, str, tuple[DemoQueue, ...]], ...] = (
    (
        "demo-1250000000",
        "ap-guangzhou",
        (
            DemoQueue(
                "media",
                "transcode-main",
                12,
                (("Transcode", 0.04, 30.0), ("Snapshot", 0.05, 3.0), ("Animation", 0.01, 15.0)),
                category="Transcoding",
                notify=True,
            ),
            DemoQueue(
                "media", "speed-hd", 8, (("Transcode", 0.02, 25.0),), category="SpeedTranscoding"
            ),
            DemoQueue(
                "media",
                DEMO_PAUSED_QUEUE,
                2,
                (("Transcode", 0.005, 60.0),),
                category="Transcoding",
                paused=True,
            ),
            DemoQueue(
                "ai",
                "ai-content",
                8,
                (("Translation", 0.04, 8.0), ("WordsGeneralize", 0.03, 4.0)),
                notify=True,
            ),
            DemoQueue("speech", "asr-default", 6, (("SpeechRecognition", 0.015, 20.0),)),
            # Text-to-speech jobs that often fail, within a second or two of starting.
            DemoQueue(
                "media",
                DEMO_FLAKY_QUEUE,
                10,
                (("Tts", 1.0, 1.0),),
                category="Transcoding",
                failure_ratio=0.4,
                failure_codes=FLAKY_CODES,
            ),
            DemoQueue(
                "pic", "pic-default", 8, (("PicProcess", 0.1, 2.0), ("PosterProduction", 0.02, 6.0))
            ),
            DemoQueue("doc", "doc-default", 5, (("DocProcess", 0.02, 10.0),), notify=True),
            # Workflows (their runs start at once: no slots of their own) and batch jobs.
            DemoQueue("workflow", "ingest-flow", 1000, (("Workflow", 0.05, 40.0),)),
            DemoQueue(
                "workflow",
                DEMO_FLAKY_WORKFLOW,
                1000,
                (("Workflow", 0.1, 15.0),),
                failure_ratio=0.5,
            ),
            DemoQueue("workflow", DEMO_PAUSED_WORKFLOW, 1000, (), paused=True),
            DemoQueue(
                "batch",
                "inventory trigger jobs",
                4,
                (("Job", 0.005, 120.0), ("Workflow", 0.002, 300.0)),
            ),
        ),
    ),
    (
        DEMO_THROTTLED_BUCKET,
        "ap-shanghai",
        (
            DemoQueue(
                "media",
                "live-clips",
                12,
                (("Transcode", 0.06, 20.0), ("Snapshot", 0.04, 3.0)),
                category="Transcoding",
                notify=True,
            ),
            DemoQueue(
                "media",
                "speed-batch",
                10,
                (("Transcode", 0.015, 45.0), ("SuperResolution", 0.004, 90.0)),
                category="SpeedTranscoding",
            ),
            # Two slots run ~0.06 jobs a second; 0.008 arrive, 0.12 while the surge is on.
            DemoQueue(
                "speech", DEMO_BACKLOG_QUEUE, 2, (("SpeechRecognition", 0.008, 30.0),), surge=15.0
            ),
        ),
    ),
)


def _demo_streams(queue_id: str, spec: DemoQueue, warmup: float) -> list[Stream]:
    """The streams of one demo queue. Its first surge starts when the demo does: `warmup`
    seconds after the workload."""

    def surge(rate: float) -> Surge | None:
        if spec.surge == 1.0:
            return None
        return Surge(rate * spec.surge, DEMO_SURGE_EVERY, DEMO_SURGE_LASTING, offset=warmup)

    return [
        Stream(
            queue_id,
            tag,
            rate,
            median,
            DEMO_SIGMA,
            failure_ratio=spec.failure_ratio,
            failure_codes=spec.failure_codes,
            surge=surge(rate),
            patience=DEMO_PATIENCE,
        )
        for tag, rate, median in spec.tags
    ]


def build_demo(seed: int = 1, warmup: float = 900.0, retention: float = 7200.0) -> Simulator:
    """A lively simulator: two buckets, queues of every service (SpeedTranscoding ones, some
    notifying), `warmup` seconds of history, jobs of a second to a few minutes, and the problems
    named above: a paused queue, a flaky one, a backlog that grows and drains (exporter.demo adds
    the throttled bucket). Finished jobs are kept `retention` seconds, waiting ones at most
    DEMO_PATIENCE: what it holds stays bounded however long it runs. Call start() and
    start_workload() to serve it live."""
    sim = Simulator({DEMO_SECRET_ID: DEMO_SECRET_KEY}, seed=seed)
    for n, (name, region, specs) in enumerate(DEMO_BUCKETS):
        bucket = sim.add_bucket(name, region, services=DEMO_SERVICES)
        begin = bucket.now() - warmup
        streams: list[Stream] = []
        for spec in specs:
            queue_id = bucket.add_queue(
                spec.service,
                # Batch jobs are listed from one stand-in queue, whatever the demo calls it.
                queue_id=BATCH_QUEUE_ID if spec.service == "batch" else None,
                name=spec.name,
                category=spec.category,
                max_concurrent=spec.max_concurrent,
                paused=spec.paused,
                notify=spec.notify,
                at=begin - 86400,
            )
            streams += _demo_streams(queue_id, spec, warmup)
        workload = Workload(
            bucket,
            seed * 1000 + n,
            streams,
            start=begin,
            failure_ratio=DEMO_FAILURE_RATIO,
            cancel_ratio=DEMO_CANCEL_RATIO,
            retention=retention,
        )
        workload.advance(bucket.now())
        sim.add_workload(workload)
    return sim
