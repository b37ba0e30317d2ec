"""What the landing page shows, as plain values: each target's state, each queue's load, the
failures of each queue grouped by code, and a fair share of the recent failed jobs.

No HTML here (exporter.landing_html renders it); no mutable state, no threads. Every string
that comes from CI stays as CI sent it: the renderer escapes it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter.snapshot import ApiSnapshot, FailedJob, StreamSnapshot, TargetSnapshot, cap_label

# The recent failed jobs shown per target, shared fairly between its queues: a queue with fewer
# failures than its share shows them all, and what it leaves goes to the others.
RECENT_FAILURES_SHOWN = 50
# Failure codes shown per queue in "Failures by code", most frequent first.
CODES_SHOWN_PER_QUEUE = 10
OTHER_CODE = "other"  # exporter.accounting.CodeLimiter's label for codes over the limit

# How a failed poll's message reads when CI asked the exporter to slow down.
_THROTTLED_ERROR = re.compile(r"\bHTTP (?:429|503)\b|\bSlowDown\b")

QueueKey = tuple[str, str]  # (service, queue_id)


class State:
    """A target's state, worst first; each is also the CSS class suffix of its colour."""

    DOWN = "down"
    THROTTLED = "throttled"
    UP = "up"
    WAITING = "not polled yet"


@dataclass(frozen=True, slots=True)
class Throttling:
    """How CI slowed a target down: the spacing now kept between its requests, the answers
    that said slow down since the exporter started, and whether its last poll failed so."""

    spacing: float = 0.0
    answers: int = 0
    refused: bool = False

    @property
    def now(self) -> bool:
        return self.spacing > 0


@dataclass(frozen=True, slots=True)
class QueueRow:
    service: str
    queue_id: str
    name: str
    state: str  # CI's: Active or Paused
    running: int
    max_concurrent: int
    submitted: int
    paused_jobs: int  # jobs held in Pause by a paused queue
    oldest_submitted: float | None  # CreationTime of the oldest Submitted job
    failed: int  # since the exporter started

    @property
    def paused(self) -> bool:
        return self.state == "Paused"

    @property
    def saturated(self) -> bool:
        return 0 < self.max_concurrent <= self.running


@dataclass(frozen=True, slots=True)
class CodeRow:
    """One (queue, code): its failures since start and, when one is among the recent failed
    jobs kept, the latest of them."""

    service: str
    queue_id: str
    code: str
    count: int
    latest: FailedJob | None
    latest_job_id: str  # the latest's JobId, or the stream's exemplar when none is kept


@dataclass(frozen=True, slots=True)
class Hidden:
    """What a bounded table leaves out for one queue."""

    service: str
    queue_id: str
    rows: int
    jobs: int


def target_state(target: TargetSnapshot, throttling: Throttling) -> str:
    """Down whatever the reason (its metrics are stale), throttled when up but paced."""
    if not target.polled:
        return State.WAITING
    if not target.up:
        return State.DOWN
    return State.THROTTLED if throttling.now else State.UP


def throttling_of(target: TargetSnapshot, api: ApiSnapshot | None) -> Throttling:
    refused = not target.up and bool(_THROTTLED_ERROR.search(target.last_error))
    if api is None:
        return Throttling(refused=refused)
    where = (target.bucket, target.region)
    answers = sum(
        n for (bucket, region, _), n in api.throttled.items() if (bucket, region) == where
    )
    return Throttling(api.spacing.get(where, 0.0), answers, refused)


def _per_queue(streams: Iterable[StreamSnapshot]) -> dict[QueueKey, list[StreamSnapshot]]:
    grouped: dict[QueueKey, list[StreamSnapshot]] = defaultdict(list)
    for stream in streams:
        grouped[(stream.service, stream.queue_id)].append(stream)
    return grouped


def queue_rows(target: TargetSnapshot) -> list[QueueRow]:
    """Every queue of the last listing with its jobs now, sorted by service, then name."""
    streams = _per_queue(target.streams)
    rows = []
    for listed in target.queues:
        queue = listed.queue
        own = streams.get((listed.service, queue.queue_id), [])
        waiting = [s.oldest["Submitted"] for s in own if "Submitted" in s.oldest]
        rows.append(
            QueueRow(
                service=listed.service,
                queue_id=queue.queue_id,
                name=queue.name,
                state=queue.state,
                running=sum(s.active.get("Running", 0) for s in own),
                max_concurrent=queue.max_concurrent,
                submitted=sum(s.active.get("Submitted", 0) for s in own),
                paused_jobs=sum(s.active.get("Pause", 0) for s in own),
                oldest_submitted=min(waiting) if waiting else None,
                failed=sum(s.finished.get("Failed", 0) for s in own),
            )
        )
    return sorted(rows, key=lambda row: (row.service, row.name, row.queue_id))


def queue_names(target: TargetSnapshot) -> dict[QueueKey, str]:
    return {(q.service, q.queue.queue_id): q.queue.name for q in target.queues}


def _code_counts(streams: list[StreamSnapshot]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for stream in streams:
        for code, n in stream.failures.items():
            counts[code] += n
    return counts


def _latest_by_code(
    failures: Iterable[FailedJob], counted: Mapping[str, int]
) -> dict[str, FailedJob]:
    """Per code as counted (capped, or "other"), the newest of `failures` (newest first, as
    TargetSnapshot keeps them: of two that ended in the same second, the first)."""
    latest: dict[str, FailedJob] = {}
    for job in failures:
        code = cap_label(job.code)
        if code not in counted:
            code = OTHER_CODE
        if code not in latest or job.time > latest[code].time:
            latest[code] = job
    return latest


def _exemplars(streams: list[StreamSnapshot]) -> dict[str, str]:
    return {s.last_failed_code: s.last_failed_job for s in streams if s.last_failed_job}


def code_rows(target: TargetSnapshot) -> tuple[list[CodeRow], list[Hidden]]:
    """Failures since start per (queue, code), at most CODES_SHOWN_PER_QUEUE codes of each
    queue, most failures first; and what was left out, per queue."""
    recent: dict[QueueKey, list[FailedJob]] = defaultdict(list)
    for job in target.recent_failures:
        recent[(job.service, job.queue_id)].append(job)
    rows: list[CodeRow] = []
    hidden: list[Hidden] = []
    for (service, queue_id), streams in sorted(_per_queue(target.streams).items()):
        counts = _code_counts(streams)
        latest = _latest_by_code(recent[(service, queue_id)], counts)
        exemplars = _exemplars(streams)
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        for code, count in ranked[:CODES_SHOWN_PER_QUEUE]:
            newest = latest.get(code)
            job_id = newest.job_id if newest is not None else exemplars.get(code, "")
            rows.append(CodeRow(service, queue_id, code, count, newest, job_id))
        left = ranked[CODES_SHOWN_PER_QUEUE:]
        if left:
            hidden.append(Hidden(service, queue_id, len(left), sum(n for _, n in left)))
    rows.sort(key=lambda row: (-row.count, row.service, row.queue_id, row.code))
    return rows, hidden


def fair_share(
    failures: Iterable[FailedJob], budget: int = RECENT_FAILURES_SHOWN
) -> tuple[list[FailedJob], list[Hidden]]:
    """At most `budget` failed jobs, newest first, shared between queues round-robin (each
    queue's newest first), so that a noisy queue cannot push the others off the page; and
    per queue, how many of its jobs were left out."""
    queues: dict[QueueKey, list[FailedJob]] = defaultdict(list)
    for job in sorted(failures, key=lambda job: job.time, reverse=True):
        queues[(job.service, job.queue_id)].append(job)
    taken = dict.fromkeys(queues, 0)
    left = budget
    while left > 0 and any(taken[key] < len(jobs) for key, jobs in queues.items()):
        for key, jobs in queues.items():
            if left > 0 and taken[key] < len(jobs):
                taken[key] += 1
                left -= 1
    shown = [job for key, jobs in queues.items() for job in jobs[: taken[key]]]
    shown.sort(key=lambda job: job.time, reverse=True)
    hidden = [
        Hidden(key[0], key[1], len(jobs) - taken[key], len(jobs) - taken[key])
        for key, jobs in queues.items()
        if taken[key] < len(jobs)
    ]
    return shown, hidden
