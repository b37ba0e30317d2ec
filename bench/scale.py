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
from datetime import datetime, timezone

import freezegun.api
from freezegun import freeze_time

from bench.agents import Agent
from bench.agents_specs import BaselineSpec, ExporterSpec, Finish, supports, target_specs
from bench.scale_counts import QUEUE_PAGE, Tally, compare, excess, lower_bound, tally
from bench.scale_results import AgentCost, MeasuredPoll, ScaleOptions, ScaleResult, spent_by
from bench.scale_world import SECRET_ID, SECRET_KEY, START, Progress, ScaleRun

# The names others import from here, where they were before the split.
__all__ = [
    "ScaleOptions",
    "ScaleResult",
    "baseline_indexes",
    "compare",
    "lower_bound",
    "run_scale",
    "tally",
]

# The exporter's own rate limit is for real time; in frozen time a token bucket never
# refills, so these runs take it out of the way (target 6 measures it in real time).
UNLIMITED = (math.inf, 1_000_000, 4)


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
            run = ScaleRun(options, frozen, progress or (lambda _: None))
            with run.sim:
                return _drive(run, agents, began, backoff_supported)
    finally:
        for agent in agents.values():
            agent.close()


def _exporter_spec(run: ScaleRun, backoff: float, trace: bool) -> ExporterSpec:
    options = run.options
    per_second, burst, _ = UNLIMITED
    return ExporterSpec(
        twin_targets=run.twin_targets() if trace else (),
        targets=target_specs(run.sim, run.workload),
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        poll_interval=options.interval,
        frozen_at=run.start,
        idle_tag_backoff=backoff,
        rate_limit=(per_second, burst, options.concurrency),
        trace_memory=trace,
    )


def _init(run: ScaleRun, agents: dict[str, Agent]) -> None:
    options = run.options
    agents["exporter"].init(_exporter_spec(run, 0.0, trace=False))
    agents["memory"].init(_exporter_spec(run, 0.0, trace=True))
    if "backoff" in agents:
        agents["backoff"].init(_exporter_spec(run, options.idle_tag_backoff, trace=False))
    agents["baseline"].init(
        BaselineSpec(
            targets=target_specs(run.sim, run.workload),
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
    run: ScaleRun, agents: dict[str, Agent], began: float, backoff_supported: bool
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


def _costs(run: ScaleRun, measured: list[MeasuredPoll]) -> dict[str, AgentCost]:
    polls = max(1, len(measured))
    costs: dict[str, AgentCost] = {}
    for name in ("exporter", "backoff"):
        reports = run.reports[name][-polls:]
        if reports:
            costs[name] = AgentCost(
                sum(r.cpu for r in reports) / len(reports),
                sum(spent_by(p, name) or 0 for p in measured) / polls,
            )
    ran = [p.baseline for p in measured if p.baseline is not None]
    if run.baseline_reports and ran:
        costs["baseline"] = AgentCost(
            sum(r.cpu for r in run.baseline_reports) / len(run.baseline_reports),
            sum(ran) / len(ran),
        )
    return costs


def _longest_gap(run: ScaleRun, total: int) -> float:
    """The longest time any stream went unpolled by the back-off exporter (up to the last
    poll: a stream left out at the end counts until then)."""
    longest = 0
    for indexes in run.polled_at["backoff"].values():
        points = [*indexes, total - 1]
        longest = max([longest, *(b - a for a, b in itertools.pairwise(points))])
    return longest * run.options.interval
