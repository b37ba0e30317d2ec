"""Targets 1, 2 and 4: the exporter's real poller against the simulator at 1M jobs a day, in
simulated time, side by side with the cron-script baseline, every request counted.

Three agent processes poll the same simulator at the same simulated instants, one after the
other, so that each is counted alone and all see the same jobs:
- "exporter": the exporter polling every stream at every poll (idle back-off off), with
  tracemalloc on: requests against the lower bound, memory per tracked job, exactness;
- "backoff": the exporter with the idle-tag back-off, from further back (so that the
  back-off has settled): requests, exactness, the longest gap between polls of a stream;
- "baseline": the cron script (see agents.BaselineAgent), on the measured polls only.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import freezegun.api
from freezegun import freeze_time

from bench.agents import (
    Agent,
    BaselineReport,
    BaselineSpec,
    ExporterSpec,
    Finish,
    MemoryReport,
    PollReport,
    TargetSpec,
    supports,
)
from bench.workload import REGION, Outcomes, ScaleWorkload, Shape, StreamId, tag_names
from exporter.ci.models import ACTIVE_STATES
from exporter.ci.services import endpoint_family
from exporter.simulator import RequestRecord, Simulator
from exporter.simulator.api import QUEUE_PATHS

SECRET_ID = "AKIDbench00000000000000000000000000000"
SECRET_KEY = "bench-secret-key-000000000000000000000"
START = datetime(2026, 11, 21, 6, 0, 0, tzinfo=timezone.utc)
PAGE = 100  # jobs per listing page, the most CI allows
QUEUE_PAGE = 100
Progress = Callable[[str], None]
# The exporter's own rate limit is for real time; in frozen time a token bucket never
# refills, so these runs take it out of the way (target 6 measures it in real time).
UNLIMITED = (math.inf, 1_000_000, 4)


@dataclass(frozen=True)
class ScaleOptions:
    shape: Shape = field(default_factory=Shape)
    seed: int = 1
    interval: float = 60.0
    history: float = 2 * 3600.0  # simulated time played before the first poll
    warmup_polls: int = 20  # of the back-off exporter before the measured polls
    settle_polls: int = 3  # of the every-poll exporter before the measured polls
    polls: int = 10  # measured
    memory_polls: int = 2  # of the traced exporter, the last ones: the steady state
    baseline_runs: int = 2  # of the cron script, spread over the measured polls
    idle_tag_backoff: float = 600.0
    baseline_lookback: float = 3600.0
    concurrency: int = 4


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
class MeasuredPoll:
    at: float
    bound: int
    exporter: int
    backoff: int | None
    baseline: int | None  # None: the baseline did not run at this poll
    excess: Excess
    active_jobs: int
    newly_finished: int
    backoff_streams: int | None  # streams the back-off exporter polled


@dataclass(frozen=True)
class Exactness:
    expected: int  # finished jobs the simulator ended after the agent's first poll
    counted: int
    wrong_streams: int
    examples: tuple[str, ...]

    @property
    def exact(self) -> bool:
        return self.wrong_streams == 0


@dataclass(frozen=True)
class AgentCost:
    cpu_per_poll: float
    requests_per_poll: float


@dataclass
class ScaleResult:
    options: ScaleOptions
    streams: Counter[str]
    jobs_per_day: float  # as played during the measured polls
    jobs_per_day_overall: float  # as played over the whole run, history included
    polls: list[MeasuredPoll]
    exporter: Exactness
    backoff: Exactness | None
    traced: Exactness  # the exporter measured for memory
    memory: MemoryReport
    costs: dict[str, AgentCost]
    baseline: BaselineReport | None
    longest_idle_gap: float | None  # the back-off exporter's longest wait between polls
    late_finishes_per_poll: float  # jobs finishing older than the baseline's lookback
    wall_seconds: float
    backoff_supported: bool

    def ratio(self, name: str) -> float:
        """Requests over the lower bound, summed over the measured polls the agent ran at."""
        polls = [p for p in self.polls if _spent(p, name) is not None]
        bound = sum(p.bound for p in polls)
        return sum(_spent(p, name) or 0 for p in polls) / bound if bound else math.nan

    def mean(self, name: str) -> float:
        spent = [n for n in (_spent(p, name) for p in self.polls) if n is not None]
        return sum(spent) / len(spent) if spent else math.nan


def _spent(poll: MeasuredPoll, name: str) -> int | None:
    return {"exporter": poll.exporter, "backoff": poll.backoff, "baseline": poll.baseline}[name]


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


def _targets(sim: Simulator, workload: ScaleWorkload) -> tuple[TargetSpec, ...]:
    return tuple(
        TargetSpec(t.bucket, t.region, sim.endpoint(t.bucket), t.tags) for t in workload.targets
    )


class _Run:
    """One scale run: the simulator, the workload, the agents and what they spent."""

    def __init__(self, options: ScaleOptions, frozen: object, say: Progress) -> None:
        self.options = options
        self.frozen = frozen
        self.say = say
        self.start = START.timestamp()
        self.sim = Simulator({SECRET_ID: SECRET_KEY}, seed=options.seed)
        self.workload = ScaleWorkload(
            self.sim, options.shape, seed=options.seed, start=self.start - options.history
        )
        self.workload.long_age = options.baseline_lookback
        self.workload.advance(self.start)
        self.twin_buckets = self._add_twin(options.shape)
        self.streams = self.workload.stream_ids()
        self.truth: list[dict[StreamId, Outcomes]] = []
        names = ("exporter", "backoff", "memory")
        self.last_polled: dict[str, dict[StreamId, int]] = {name: {} for name in names}
        self.polled_at: dict[str, dict[StreamId, list[int]]] = {name: {} for name in names}
        self.first_poll: dict[str, int] = {}
        self.reports: dict[str, list[PollReport]] = {name: [] for name in names}
        self.baseline_reports: list[BaselineReport] = []

    def _add_twin(self, shape: Shape) -> list[str]:
        """A bucket with a target's queues and tags that never sees a job: what streams cost
        without jobs (see agents.MemoryReport)."""
        bucket = self.sim.add_bucket("idle00-1260000000", REGION)
        for q in range(shape.queues):
            bucket.add_queue("media", name=f"q{q:02d}", at=self.start - 86400)
        return [bucket.name]

    def twin_targets(self) -> tuple[TargetSpec, ...]:
        tags = tag_names(self.options.shape.tags)
        return tuple(
            TargetSpec(name, REGION, self.sim.endpoint(name), tags) for name in self.twin_buckets
        )

    def poll(self, agent: Agent, name: str, index: int, at: float) -> Tally:
        self.sim.reset_requests()
        report: PollReport = agent.call("poll", at)
        if not report.up:
            raise RuntimeError(f"{name} poll failed: {report.errors[:3]}")
        result = tally(self.sim.requests)
        if result.total != self.sim.request_count():
            raise RuntimeError("the simulator's request log rolled over; raise its log_size")
        self.first_poll.setdefault(name, index)
        for stream in result.polled:
            self.last_polled[name][stream] = index
            self.polled_at[name].setdefault(stream, []).append(index)
        self.reports[name].append(report)
        return result

    def run_baseline(self, agent: Agent, at: float) -> int:
        self.sim.reset_requests()
        report: BaselineReport = agent.call("run", at)
        if report.requests != self.sim.request_count():
            raise RuntimeError(
                f"baseline made {self.sim.request_count()} requests, counted {report.requests}"
            )
        self.baseline_reports.append(report)
        return report.requests


def run_scale(options: ScaleOptions, progress: Progress | None = None) -> ScaleResult:
    began = freezegun.api.real_monotonic()
    backoff_supported = supports("idle_tag_backoff")
    # Spawned before the clock is frozen: they share nothing with this process.
    roles = {"exporter": "exporter", "memory": "exporter", "baseline": "baseline"}
    if backoff_supported:
        roles["backoff"] = "exporter"
    agents = {name: Agent(role) for name, role in roles.items()}
    try:
        with freeze_time(START) as frozen:
            run = _Run(options, frozen, progress or (lambda _: None))
            with run.sim:
                return _drive(run, agents, began, backoff_supported)
    finally:
        for agent in agents.values():
            agent.close()


def _exporter_spec(run: _Run, backoff: float, trace: bool) -> ExporterSpec:
    options = run.options
    per_second, burst, _ = UNLIMITED
    return ExporterSpec(
        twin_targets=run.twin_targets() if trace else (),
        targets=_targets(run.sim, run.workload),
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        poll_interval=options.interval,
        frozen_at=run.start,
        idle_tag_backoff=backoff,
        rate_limit=(per_second, burst, options.concurrency),
        trace_memory=trace,
    )


def _init(run: _Run, agents: dict[str, Agent]) -> None:
    options = run.options
    agents["exporter"].init(_exporter_spec(run, 0.0, trace=False))
    agents["memory"].init(_exporter_spec(run, 0.0, trace=True))
    if "backoff" in agents:
        agents["backoff"].init(_exporter_spec(run, options.idle_tag_backoff, trace=False))
    agents["baseline"].init(
        BaselineSpec(
            targets=_targets(run.sim, run.workload),
            secret_id=SECRET_ID,
            secret_key=SECRET_KEY,
            frozen_at=run.start,
            lookback=options.baseline_lookback,
        )
    )


def baseline_indexes(options: ScaleOptions) -> set[int]:
    """The measured polls the baseline runs at, spread over them (it keeps no state, and
    costs the same every run: a few runs tell its cost)."""
    runs = min(options.baseline_runs, options.polls)
    if runs <= 1:
        return {options.warmup_polls + options.polls - 1}
    step = (options.polls - 1) / (runs - 1)
    return {options.warmup_polls + round(k * step) for k in range(runs)}


def _drive(
    run: _Run, agents: dict[str, Agent], began: float, backoff_supported: bool
) -> ScaleResult:
    options = run.options
    shape = options.shape
    _init(run, agents)
    total = options.warmup_polls + options.polls
    exporter_from = max(0, options.warmup_polls - options.settle_polls)
    # The traced exporter only needs to reach the steady state: its last few polls.
    memory_from = max(0, total - options.memory_polls)
    with_baseline = baseline_indexes(options)
    bound_queue_pages = shape.targets * max(1, math.ceil(shape.queues / QUEUE_PAGE))
    measured: list[MeasuredPoll] = []
    previous_finished = list(run.workload.finished)
    created_at_measure = late_at_measure = 0
    for index in range(total):
        at = run.start + index * options.interval
        run.frozen.move_to(datetime.fromtimestamp(at, timezone.utc))  # type: ignore[attr-defined]
        run.workload.advance(at)
        run.truth.append(run.workload.outcomes_now())
        active = list(run.workload.active)
        finished = list(run.workload.finished)
        newly = [f - p for f, p in zip(finished, previous_finished, strict=True)]
        previous_finished = finished
        if index == options.warmup_polls:
            created_at_measure = run.workload.created
            late_at_measure = run.workload.long_finishes
        tallies: dict[str, Tally] = {}
        if backoff_supported:
            tallies["backoff"] = run.poll(agents["backoff"], "backoff", index, at)
        if index >= exporter_from:
            tallies["exporter"] = run.poll(agents["exporter"], "exporter", index, at)
        if index >= memory_from:
            run.poll(agents["memory"], "memory", index, at)
            if index < memory_from + 2 and not agents["memory"].call("poll_twin", at):
                raise RuntimeError("the idle twin's poll failed")
        baseline = run.run_baseline(agents["baseline"], at) if index in with_baseline else None
        run.say(
            f"  poll {index + 1}/{total}: "
            + ", ".join(f"{name} {t.total}" for name, t in tallies.items())
            + (f", baseline {baseline}" if baseline is not None else "")
            + f" requests ({freezegun.api.real_monotonic() - began:.0f} s)"
        )
        if index < options.warmup_polls:
            continue
        exporter_tally, backoff_tally = tallies["exporter"], tallies.get("backoff")
        measured.append(
            MeasuredPoll(
                at=at,
                bound=lower_bound(run.streams, active, newly, shape.targets, shape.queues),
                exporter=exporter_tally.total,
                backoff=backoff_tally.total if backoff_tally is not None else None,
                baseline=baseline,
                excess=excess(exporter_tally, run.streams, active, newly, bound_queue_pages),
                active_jobs=sum(active),
                newly_finished=sum(newly),
                backoff_streams=len(backoff_tally.polled) if backoff_tally is not None else None,
            )
        )
    finishes: dict[str, Finish] = {
        name: agents[name].call("finish")
        for name in ("exporter", "backoff", "memory")
        if name in agents
    }
    exactness = {
        name: compare(finish.counts, run.truth, run.first_poll[name], run.last_polled[name])
        for name, finish in finishes.items()
    }
    memory = finishes["memory"].memory
    assert memory is not None
    seconds = max(1.0, options.polls * options.interval)
    played = run.workload.created - created_at_measure
    return ScaleResult(
        options=options,
        streams=run.workload.kinds(),
        jobs_per_day=played / seconds * 86400,
        jobs_per_day_overall=run.workload.created
        / (options.history + (total - 1) * options.interval)
        * 86400,
        polls=measured,
        exporter=exactness["exporter"],
        backoff=exactness.get("backoff"),
        traced=exactness["memory"],
        memory=memory,
        costs=_costs(run, measured),
        baseline=run.baseline_reports[-1] if run.baseline_reports else None,
        longest_idle_gap=_longest_gap(run, total) if backoff_supported else None,
        late_finishes_per_poll=(run.workload.long_finishes - late_at_measure)
        / max(1, options.polls),
        wall_seconds=freezegun.api.real_monotonic() - began,
        backoff_supported=backoff_supported,
    )


def _costs(run: _Run, measured: list[MeasuredPoll]) -> dict[str, AgentCost]:
    polls = max(1, len(measured))
    costs: dict[str, AgentCost] = {}
    for name in ("exporter", "backoff"):
        reports = run.reports[name][-polls:]
        if reports:
            costs[name] = AgentCost(
                sum(r.cpu for r in reports) / len(reports),
                sum(_spent(p, name) or 0 for p in measured) / polls,
            )
    ran = [p.baseline for p in measured if p.baseline is not None]
    if run.baseline_reports and ran:
        costs["baseline"] = AgentCost(
            sum(r.cpu for r in run.baseline_reports) / len(run.baseline_reports),
            sum(ran) / len(ran),
        )
    return costs


def _longest_gap(run: _Run, total: int) -> float:
    """The longest time any stream went unpolled by the back-off exporter (up to the last
    poll: a stream left out at the end counts until then)."""
    longest = 0
    for indexes in run.polled_at["backoff"].values():
        points = [*indexes, total - 1]
        longest = max([longest, *(b - a for a, b in itertools.pairwise(points))])
    return longest * run.options.interval
