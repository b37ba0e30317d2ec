"""Targets 1, 2 and 4's world (bench/scale.py): the simulator, the workload played on it in
frozen time, an idle twin bucket, and the record of every agent's polls and what they asked."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from bench.agents import Agent
from bench.agents_specs import BaselineReport, PollReport, TargetSpec
from bench.scale_counts import Tally, tally
from bench.scale_results import ScaleOptions
from bench.workload import REGION, Outcomes, ScaleWorkload, Shape, StreamId, tag_names
from exporter.simulator import Simulator

SECRET_ID = "AKIDbench00000000000000000000000000000"
SECRET_KEY = "bench-secret-key-000000000000000000000"
START = datetime(2026, 11, 21, 6, 0, 0, tzinfo=timezone.utc)
Progress = Callable[[str], None]


class ScaleRun:
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
