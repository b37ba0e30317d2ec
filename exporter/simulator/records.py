"""The records of the simulated CI: queues, jobs, a run's steps, a listing's query, the clock,
and the constants every part of the simulator shares (job states, queue categories, id
prefixes).

Thread ownership: no shared mutable state here. A bucket's records are held under its lock and
handed out as copies (exporter.simulator.model); a Clock's offset is set by whoever owns the
simulator (tests, the demo).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

JOB_STATES: tuple[str, ...] = ("Submitted", "Running", "Pause", "Success", "Failed", "Cancel")
FINISHED: tuple[str, ...] = ("Success", "Failed", "Cancel")
WAITING: tuple[str, ...] = ("Submitted", "Pause")

# Which queue categories each service's queues carry; the first is the default.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "media": ("Transcoding", "SpeedTranscoding"),
    "ai": ("AIProcess",),
    "speech": ("Speeching",),
    "pic": ("PicProcessing",),
    "doc": ("DocProcess",),
    # Opt-in per bucket (its `services`): workflows are queues, batch jobs have one pseudo-queue
    # (exporter.simulator.workflows).
    "workflow": ("Workflow",),
    "batch": ("Batch",),
}
# The service of unlisted jobs (SimBucket.create_unlisted_job): file processing, say.
UNLISTED_SERVICE = "file"
# Id prefixes other than a queue's "p" and a job's "j", as CI's ids show (w..., i..., b...).
QUEUE_PREFIXES: dict[str, str] = {"workflow": "w"}
JOB_PREFIXES: dict[str, str] = {"workflow": "i", "batch": "b"}

NOTIFY_URL = "http://callback.example.com/ci-notify"
NOTIFY_EVENT = "TaskFinish"

# (creation_time, job_id): the sort key of every listing.
JobKey = tuple[int, str]


@dataclass
class Clock:
    """CI's clock: the real time (freezegun controls it in tests) plus a settable offset."""

    offset: float = 0.0

    def now(self) -> float:
        return time.time() + self.offset


class ClockView:
    """`clock_offset` and `now()` of the Clock an object holds as `clock` (a bucket's, the
    simulator's): one way to read and move CI's clock."""

    clock: Clock

    @property
    def clock_offset(self) -> float:
        return self.clock.offset

    @clock_offset.setter
    def clock_offset(self, seconds: float) -> None:
        self.clock.offset = seconds

    def now(self) -> float:
        return self.clock.now()


@dataclass(slots=True)
class SimQueue:
    queue_id: str
    service: str
    name: str
    category: str
    max_concurrent: int
    max_size: int
    paused: bool
    notify: bool
    create_time: int
    update_time: int

    @property
    def state(self) -> str:
        return "Paused" if self.paused else "Active"

    def copy(self) -> SimQueue:
        return copy.copy(self)


@dataclass(slots=True)
class SimJob:
    """One job. Kept lean (no per-job strings beyond the id): a benchmark holds millions."""

    job_id: str
    queue_id: str
    service: str
    tag: str
    state: str
    creation_time: int
    start_time: int | None = None
    end_time: int | None = None
    code: str = "Success"
    message: str = ""
    progress: int = 0

    @property
    def key(self) -> JobKey:
        return (self.creation_time, self.job_id)

    def copy(self) -> SimJob:
        # Positional and explicit: copy.copy is the hot spot of a million-job benchmark.
        return SimJob(
            self.job_id,
            self.queue_id,
            self.service,
            self.tag,
            self.state,
            self.creation_time,
            self.start_time,
            self.end_time,
            self.code,
            self.message,
            self.progress,
        )


@dataclass(frozen=True, slots=True)
class SimStep:
    """One step (task) of a workflow run: derived from the run when asked for, never stored
    (exporter.simulator.workflows.steps_of)."""

    type: str
    name: str
    job_id: str
    state: str
    start: int
    end: int | None
    code: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """One job listing: which jobs, in which order, from where on."""

    services: frozenset[str]
    queue_id: str
    tag: str
    states: frozenset[str]
    start: int | None = None
    end: int | None = None
    inclusive: bool = False
    descending: bool = True
    after: JobKey | None = None  # the cursor: the last key already returned
