"""Jobs that come and go on their own: a seeded, event-driven workload, and the demo.

`advance(t)` replays every event up to `t` in time order from one seeded RNG, so the same
seed gives the same jobs whether time is advanced in one step or in many.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.ci.services import SERVICES
from exporter.simulator.model import SimBucket
from exporter.simulator.server import Simulator

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


@dataclass(frozen=True, slots=True)
class Stream:
    """Jobs of one tag arriving on one queue: Poisson at `rate` per second, lognormal run
    times around `median_run` seconds."""

    queue_id: str
    tag: str
    rate: float
    median_run: float = 20.0
    sigma: float = 1.0
    failure_ratio: float | None = None  # this stream's own, instead of the workload's

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.median_run <= 0 or self.sigma < 0:
            raise ValueError(f"stream {self.queue_id}/{self.tag}: rate and run time must be > 0")


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


# (time, sequence, stream index for an arrival or the running job to finish)
_Event = tuple[float, int, "int | _Running"]


class Workload:
    """Creates, starts and finishes jobs of one bucket as time passes.

    At most MaxConcurrent jobs of a queue run at once (counting jobs started by anyone);
    waiting jobs start in arrival order. A paused queue starts nothing: its jobs wait in
    Pause, and those already running carry on.
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
            self._push(self.time + self._rng.expovariate(stream.rate), index)

    @staticmethod
    def _default_streams(bucket: SimBucket, rate: float) -> list[Stream]:
        return [
            Stream(q.queue_id, tag, rate)
            for q in bucket.queues()
            for tag in SERVICES[q.service].tags[:2]
        ]

    def _push(self, at: float, what: int | _Running) -> None:
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
            else:
                self._arrive(at, what)

    def _arrive(self, at: float, index: int) -> None:
        stream = self.streams[index]
        # Draw the same numbers for every arrival, whatever happens next: determinism.
        outcome = self._draw(stream)
        self._push(at + self._rng.expovariate(stream.rate), index)
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

    def _draw(self, stream: Stream) -> _Outcome:
        run = self._rng.lognormvariate(math.log(stream.median_run), stream.sigma)
        run = min(run, self.max_run_time)
        roll = self._rng.random()
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

    def _expire(self, now: float) -> None:
        if self.retention is None:
            return
        while self._finished and self._finished[0][0] < now - self.retention:
            _, job_id = self._finished.popleft()
            with contextlib.suppress(KeyError):
                self.bucket.delete_job(job_id)


# (service, name, category, max_concurrent, paused, notify, [(tag, rate, median_run)])
_QueueSpec = tuple[str, str, str | None, int, bool, bool, list[tuple[str, float, float]]]

_DEMO: dict[tuple[str, str], list[_QueueSpec]] = {
    ("demo-1250000000", "ap-guangzhou"): [
        (
            "media",
            "transcode-main",
            "Transcoding",
            8,
            False,
            True,
            [("Transcode", 0.08, 30.0), ("Snapshot", 0.05, 3.0), ("Animation", 0.02, 15.0)],
        ),
        ("media", "speed-hd", "SpeedTranscoding", 4, False, False, [("Transcode", 0.05, 25.0)]),
        ("media", "archive-paused", "Transcoding", 2, True, False, [("Transcode", 0.005, 60.0)]),
        (
            "ai",
            "ai-content",
            None,
            5,
            False,
            True,
            [("Translation", 0.05, 8.0), ("WordsGeneralize", 0.03, 4.0)],
        ),
        ("speech", "asr-default", None, 3, False, False, [("SpeechRecognition", 0.04, 20.0)]),
        # Text-to-speech jobs that often fail: failures show up within seconds of starting.
        ("media", "tts-flaky", "Transcoding", 6, False, False, [("Tts", 1.0, 1.5)]),
        (
            "pic",
            "pic-default",
            None,
            5,
            False,
            False,
            [("PicProcess", 0.1, 2.0), ("PosterProduction", 0.02, 6.0)],
        ),
        ("doc", "doc-default", None, 3, False, True, [("DocProcess", 0.03, 10.0)]),
    ],
    ("media-1250000001", "ap-shanghai"): [
        (
            "media",
            "live-clips",
            "Transcoding",
            10,
            False,
            True,
            [("Transcode", 0.12, 20.0), ("Snapshot", 0.04, 3.0)],
        ),
        (
            "media",
            "speed-batch",
            "SpeedTranscoding",
            6,
            False,
            False,
            [("Transcode", 0.06, 45.0), ("SuperResolution", 0.01, 90.0)],
        ),
        ("speech", "asr-backlog", None, 2, False, False, [("SpeechRecognition", 0.03, 30.0)]),
    ],
}


FLAKY_TAGS = frozenset({"Tts"})
FLAKY_FAILURE_RATIO = 0.5


def build_demo(
    seed: int = 1, warmup: float = 900.0, retention: float = 7200.0, rate_scale: float = 2.0
) -> Simulator:
    """A lively simulator: two buckets, queues of every service (a SpeedTranscoding one, a
    paused one, some notifying), `warmup` seconds of history, jobs of a few seconds to a few
    minutes, several failure codes. Call start() and start_workload() to serve it live."""
    sim = Simulator({DEMO_SECRET_ID: DEMO_SECRET_KEY}, seed=seed)
    for n, ((name, region), specs) in enumerate(_DEMO.items()):
        bucket = sim.add_bucket(name, region)
        begin = bucket.now() - warmup
        streams: list[Stream] = []
        for service, qname, category, max_conc, paused, notify, tags in specs:
            queue_id = bucket.add_queue(
                service,
                name=qname,
                category=category,
                max_concurrent=max_conc,
                paused=paused,
                notify=notify,
                at=begin - 86400,
            )
            streams += [
                Stream(
                    queue_id,
                    tag,
                    rate * rate_scale,
                    median,
                    failure_ratio=FLAKY_FAILURE_RATIO if tag in FLAKY_TAGS else None,
                )
                for tag, rate, median in tags
            ]
        workload = Workload(
            bucket,
            seed * 1000 + n,
            streams,
            start=begin,
            failure_ratio=0.05,
            cancel_ratio=0.01,
            retention=retention,
        )
        workload.advance(bucket.now())
        sim.add_workload(workload)
    return sim
