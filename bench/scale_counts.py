"""Targets 1 and 2's measures (bench/scale.py): an agent's requests in a poll, by kind, against
the lower bound, and its counters against the simulator's record (exactness)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bench.workload import Outcomes, StreamId
from exporter.ci.models import ACTIVE_STATES
from exporter.ci.services import endpoint_family
from exporter.simulator import RequestRecord
from exporter.simulator.api import QUEUE_PATHS

PAGE = 100  # jobs per listing page, the most CI allows
QUEUE_PAGE = 100


@dataclass
class Tally:
    """One agent's requests in one poll, by kind."""

    total: int = 0
    queue_pages: int = 0
    describe: int = 0
    active_pages: Counter[StreamId] = field(default_factory=Counter)
    finished_pages: Counter[StreamId] = field(default_factory=Counter)
    finished_listings: Counter[StreamId] = field(default_factory=Counter)

    @property
    def polled(self) -> set[StreamId]:
        return set(self.active_pages)


def tally(records: Iterable[RequestRecord]) -> Tally:
    result = Tally()
    active = set(ACTIVE_STATES)
    for record in records:
        result.total += 1
        if record.path in QUEUE_PATHS:
            result.queue_pages += 1
            continue
        if record.path != endpoint_family(record.path):
            result.describe += 1  # /jobs/<id>,<id>,...
            continue
        stream = (record.bucket, record.params.get("queueId", ""), record.params.get("tag", ""))
        states = set(record.params.get("states", "").split(","))
        if states <= active:
            result.active_pages[stream] += 1
            continue
        result.finished_pages[stream] += 1
        if not record.params.get("nextToken"):
            result.finished_listings[stream] += 1
    return result


def pages(jobs: int) -> int:
    """Pages of a listing of `jobs` jobs: one even when empty."""
    return max(1, math.ceil(jobs / PAGE))


@dataclass(frozen=True)
class Excess:
    """Where an exporter poll's requests above the lower bound went."""

    active_pages: int  # active listings beyond ceil(active/100)
    finished_pages: int  # finished listings beyond ceil(newly finished/100), net
    missing_listings: int  # listings of finished jobs from the oldest missing job
    describe: int
    queue_pages: int

    @property
    def total(self) -> int:
        return self.active_pages + self.finished_pages + self.describe + self.queue_pages


@dataclass(frozen=True)
class Exactness:
    expected: int  # finished jobs the simulator ended after the agent's first poll
    counted: int
    wrong_streams: int
    examples: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return self.wrong_streams == 0


def lower_bound(
    streams: Sequence[StreamId],
    active: Sequence[int],
    newly: Sequence[int],
    targets: int,
    queues: int,
) -> int:
    """Queue-listing pages + for every stream max(1, ceil(active/100)) +
    max(1, ceil(newly_finished/100)): the issue's lower bound for one poll."""
    queue_pages = targets * max(1, math.ceil(queues / QUEUE_PAGE))
    return queue_pages + sum(pages(a) + pages(n) for a, n in zip(active, newly, strict=True))


def excess(
    result: Tally,
    streams: Sequence[StreamId],
    active: Sequence[int],
    newly: Sequence[int],
    bound_queue_pages: int,
) -> Excess:
    active_extra = finished_extra = missing = 0
    for stream, a, n in zip(streams, active, newly, strict=True):
        if stream not in result.active_pages:
            continue
        active_extra += result.active_pages[stream] - pages(a)
        finished_extra += result.finished_pages[stream] - pages(n)
        missing += max(0, result.finished_listings[stream] - 1)
    return Excess(
        active_pages=active_extra,
        finished_pages=finished_extra,
        missing_listings=missing,
        describe=result.describe,
        queue_pages=result.queue_pages - bound_queue_pages,
    )


def _difference(later: Outcomes | None, earlier: Outcomes | None) -> Outcomes:
    return Counter(later or {}) - Counter(earlier or {})


def compare(
    counted: dict[StreamId, Outcomes],
    truth: list[dict[StreamId, Outcomes]],
    first: int,
    last_polled: dict[StreamId, int],
) -> Exactness:
    """The agent's counters against what the simulator ended between its first poll and its
    last poll of each stream (a stream the back-off left out lately is compared as of then)."""
    wrong: list[str] = []
    expected_total = counted_total = 0
    for stream in set(counted) | set(last_polled):
        last = last_polled.get(stream, len(truth) - 1)
        expected = _difference(truth[last].get(stream), truth[first].get(stream))
        got = +Counter(counted.get(stream, {}))
        expected_total += sum(n for (kind, _), n in expected.items() if kind == "state")
        counted_total += sum(n for (kind, _), n in got.items() if kind == "state")
        if got != expected:
            wrong.append(f"{'/'.join(stream)}: counted {dict(got)}, expected {dict(expected)}")
    return Exactness(expected_total, counted_total, len(wrong), tuple(sorted(wrong)[:5]))
