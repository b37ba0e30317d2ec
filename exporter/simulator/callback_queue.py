"""The callbacks a CallbackSender (exporter.simulator.callbacks) has to send, and the faults
drawn on them: what is queued, held, reordered or released, which one goes next, the counters.

Faults (CallbackFault, drawn from the sender's seeded RNG in the order callbacks are taken, so
a run is reproducible): drop (never sent), duplicate (sent twice), reorder (held until `after`
later callbacks were sent, or until drain() finds nothing else to send), delay (held `seconds`,
or until release() when None).

Thread ownership: a CallbackQueue's state (queue, held callbacks, faults, counters, history) is
shared under `_cond`'s lock by the threads finishing jobs (they only append), the caller
(faults, release, counters) and the sender's own thread (which takes the next callback).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from exporter.simulator.callback_bodies import WorkflowRef, task_finish_body, workflow_finish_body
from exporter.simulator.faults import check_odds
from exporter.simulator.records import SimJob
from exporter.simulator.workflows import steps_of

TASK_FINISH, WORKFLOW_FINISH = "TaskFinish", "WorkflowFinish"
EVENTS: tuple[str, ...] = (TASK_FINISH, WORKFLOW_FINISH)
CALLBACK_FAULT_KINDS: tuple[str, ...] = ("drop", "duplicate", "reorder", "delay")


@dataclass
class CallbackFault:
    """Applies to every callback it matches (`event`, `job_id`: None matches all), `times` times
    at most, each time with `probability`."""

    kind: str
    event: str | None = None
    job_id: str | None = None  # a job's or a run's id
    times: int | None = None
    probability: float = 1.0
    after: int = 1  # reorder: sent after this many later callbacks
    seconds: float | None = None  # delay: held this long; None: until release()
    hits: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in CALLBACK_FAULT_KINDS:
            raise ValueError(f"unknown callback fault {self.kind!r}; one of {CALLBACK_FAULT_KINDS}")
        check_odds(self.probability, self.times)
        if self.after < 1 or (self.seconds is not None and self.seconds < 0):
            raise ValueError("reorder `after` must be at least 1, a delay's `seconds` >= 0")

    def matches(self, callback: Callback) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and (self.event is None or self.event == callback.event)
            and (self.job_id is None or self.job_id == callback.job.job_id)
        )


@dataclass(frozen=True, slots=True)
class CallbackCounts:
    """The sender's counters at one moment (see the module)."""

    queued: int = 0  # callbacks of jobs and runs that finished
    sent: int = 0  # requests
    delivered: int = 0  # callbacks answered with a 2xx
    failed: int = 0  # callbacks given up
    retried: int = 0  # requests beyond a callback's first
    dropped: int = 0  # callbacks a fault dropped
    duplicated: int = 0  # callbacks a fault sent twice


@dataclass
class Callback:
    """One callback to send: what finished, where, and how many copies."""

    event: str
    job: SimJob
    bucket: str
    region: str
    workflow_name: str = ""  # WorkflowFinish: the run's workflow
    workflow: WorkflowRef | None = None  # a step's TaskFinish: the run that started it
    copies: int = 1

    def body(self, fmt: str) -> bytes:
        if self.event == WORKFLOW_FINISH:
            steps = steps_of(self.job, self.job.end_time or self.job.creation_time)
            return workflow_finish_body(self.job, self.workflow_name, steps, self.bucket, fmt)
        return task_finish_body(self.job, self.bucket, self.region, fmt, self.workflow)


@dataclass(slots=True)
class _Reordered:
    wait: int  # later callbacks to be sent before it
    callback: Callback


class CallbackQueue:
    """The sender's callbacks between a job finishing and their POST, faults applied as each is
    taken (CallbackSender's base)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._cond = threading.Condition(threading.Lock())
        self._faults: list[CallbackFault] = []
        self._queue: deque[Callback] = deque()  # taken in order, faults drawn as they are
        self._ready: deque[Callback] = deque()  # released: sent before the queue, no faults
        self._timed: list[tuple[float, Callback]] = []  # delay: until a monotonic deadline
        self._parked: list[Callback] = []  # delay: until release()
        self._reordered: list[_Reordered] = []
        self._busy = self._flush = 0
        self._counts = dict.fromkeys(CallbackCounts.__dataclass_fields__, 0)
        self.history: deque[tuple[str, str, str]] = deque(maxlen=100_000)  # event, id, outcome

    # -- faults and control ----------------------------------------------------------------

    def add_fault(self, fault: CallbackFault) -> CallbackFault:
        with self._cond:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()

    def release(self, job_id: str | None = None) -> int:
        """Send the callbacks held until release() (of `job_id` only); how many."""
        with self._cond:
            chosen: list[Callback] = []
            kept: list[Callback] = []
            for callback in self._parked:
                mine = job_id is None or callback.job.job_id == job_id
                (chosen if mine else kept).append(callback)
            self._parked = kept
            self._ready.extend(chosen)
            self._cond.notify_all()
            return len(chosen)

    def counts(self) -> CallbackCounts:
        with self._cond:
            return CallbackCounts(**self._counts)

    @property
    def held(self) -> int:
        """Callbacks held until release()."""
        with self._cond:
            return len(self._parked)

    # -- what the sender thread sends next ---------------------------------------------------

    def _next_deadline(self) -> float | None:
        if not self._timed:
            return None
        return max(0.0, min(deadline for deadline, _ in self._timed) - time.monotonic())

    def _take(self) -> Callback | None:
        """The next callback to send, under the lock: released ones first, then the queue's,
        each with its fault; with a drain waiting and nothing else, the ones reordered."""
        now = time.monotonic()
        for entry in [e for e in self._timed if e[0] <= now]:
            self._timed.remove(entry)
            self._ready.append(entry[1])
        if self._ready:
            return self._ready.popleft()
        while self._queue:
            callback = self._queue.popleft()
            fault = self._pick(callback)
            if fault is None:
                return callback
            self.history.append((callback.event, callback.job.job_id, fault.kind))
            if fault.kind == "duplicate":
                callback.copies = 2
                self._counts["duplicated"] += 1
                return callback
            if fault.kind == "drop":
                self._counts["dropped"] += 1
            elif fault.kind == "reorder":
                self._reordered.append(_Reordered(fault.after, callback))
            elif fault.seconds is None:
                self._parked.append(callback)
            else:
                self._timed.append((now + fault.seconds, callback))
        if self._flush and not self._busy and self._reordered:
            self._ready.extend(entry.callback for entry in self._reordered)
            self._reordered.clear()
            return self._ready.popleft()
        return None

    def _pick(self, callback: Callback) -> CallbackFault | None:
        for fault in self._faults:
            if not fault.matches(callback):
                continue
            # Draw only for partial faults, so adding a certain fault keeps the sequence.
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.hits += 1
            return fault
        return None

    def _count_down(self) -> None:
        """One more callback sent: the reordered ones waiting for it come next."""
        waiting: list[_Reordered] = []
        for entry in self._reordered:
            entry.wait -= 1
            if entry.wait > 0:
                waiting.append(entry)
            else:
                self._ready.append(entry.callback)
        self._reordered = waiting
