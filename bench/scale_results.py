"""Targets 1, 2 and 4's options and results (bench/scale.py): every measured poll's requests
against the lower bound, each exporter's exactness, memory, and what each agent spent."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from bench.agents_specs import BaselineReport, MemoryReport
from bench.scale_counts import Exactness, Excess
from bench.workload import Shape


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
        polls = [p for p in self.polls if spent_by(p, name) is not None]
        bound = sum(p.bound for p in polls)
        return sum(spent_by(p, name) or 0 for p in polls) / bound if bound else math.nan

    def mean(self, name: str) -> float:
        spent = [n for n in (spent_by(p, name) for p in self.polls) if n is not None]
        return sum(spent) / len(spent) if spent else math.nan


def spent_by(poll: MeasuredPoll, name: str) -> int | None:
    return {"exporter": poll.exporter, "backoff": poll.backoff, "baseline": poll.baseline}[name]
