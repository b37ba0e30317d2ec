"""Target 6: poll wall time with 50 ms of latency on every answer, and the rate limit.

This one runs in real time (small, a few seconds). The simulator waits `latency` seconds before
each answer (Simulator.latency); the exporter, in its own process, polls one target of S
streams under its per-credential rate limit (token bucket: requests_per_second and burst, and
at most `concurrency` requests in flight). Two runs:
- concurrency-bound (a rate that does not bind): one poll's wall time against
  requests x latency / concurrency;
- rate-bound: every request's arrival time at the simulator, checked against the token bucket
  (in any window of w seconds, at most burst + requests_per_second x w requests), and the
  requests in flight never more than `concurrency`.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from bench.agents import Agent
from bench.agents_specs import ExporterSpec, PollReport, supports, target_specs
from bench.workload import ScaleWorkload, Shape
from exporter.simulator import Simulator

SECRET_ID = "AKIDlatency000000000000000000000000000"
SECRET_KEY = "latency-secret-key-0000000000000000000"
# Arrival times are taken at the simulator, a little after the exporter's gate let the request
# go; the checks allow this much for the difference.
TIMING_ALLOWANCE = 0.005


@dataclass(frozen=True)
class GateCheck:
    requests: int
    requests_per_second: float
    burst: int
    concurrency: int
    wall: float
    least_tokens: float  # the token bucket replayed over the arrivals; below 0: too many
    most_in_flight: int
    underused: float  # seconds with fewer than `concurrency` requests in flight

    @property
    def honoured(self) -> bool:
        allowance = self.requests_per_second * TIMING_ALLOWANCE
        return self.least_tokens >= -allowance and self.most_in_flight <= self.concurrency

    @property
    def floor(self) -> float:
        """The least wall time the gate allows these requests."""
        return max(0.0, self.requests - self.burst) / self.requests_per_second


@dataclass(frozen=True)
class LatencyResult:
    available: bool  # the simulator has `latency` and the exporter a rate limit
    latency: float
    streams: int
    requests: int = 0
    concurrency: int = 0
    wall: float = 0.0
    cpu: float = 0.0  # the exporter process's CPU seconds in the poll timed
    rate_bound: GateCheck | None = None
    concurrency_bound: GateCheck | None = None

    @property
    def ideal(self) -> float:
        return self.requests * self.latency / self.concurrency if self.concurrency else 0.0

    @property
    def ratio(self) -> float:
        return self.wall / self.ideal if self.ideal else float("nan")


class _Clocked:
    """When each request arrived at the simulator and when its answer left."""

    def __init__(self, sim: Simulator) -> None:
        self.arrivals: list[float] = []
        self.answers: list[float] = []
        self._lock = threading.Lock()
        pick, record = sim.faults.pick, sim.record

        def picked(*args: object, **kwargs: object) -> object:
            # Called once per request as it arrives, before the latency.
            with self._lock:
                self.arrivals.append(time.monotonic())
            return pick(*args, **kwargs)  # type: ignore[arg-type]

        def recorded(*args: object, **kwargs: object) -> None:
            with self._lock:
                self.answers.append(time.monotonic())
            record(*args, **kwargs)  # type: ignore[arg-type]

        sim.faults.pick = picked  # type: ignore[assignment, method-assign]
        sim.record = recorded  # type: ignore[method-assign]

    def clear(self) -> None:
        with self._lock:
            self.arrivals.clear()
            self.answers.clear()


def least_tokens(arrivals: list[float], per_second: float, burst: int) -> float:
    """A token bucket replayed over the arrivals: the lowest it went (a request below one
    token left means more requests in some window than burst + rate x window)."""
    tokens, last, least = float(burst), None, float(burst)
    for at in sorted(arrivals):
        if last is not None:
            tokens = min(float(burst), tokens + (at - last) * per_second)
        last = at
        tokens -= 1
        least = min(least, tokens)
    return least


def _levels(arrivals: list[float], answers: list[float]) -> list[tuple[float, int]]:
    """(time, requests in flight from then on), at every arrival and answer."""
    events = sorted([(t, 1) for t in arrivals] + [(t, -1) for t in answers])
    levels, level = [], 0
    for at, step in events:
        level += step
        levels.append((at, level))
    return levels


def most_in_flight(arrivals: list[float], answers: list[float]) -> int:
    return max((level for _, level in _levels(arrivals, answers)), default=0)


def underused(arrivals: list[float], answers: list[float], concurrency: int) -> float:
    """Seconds, from the first arrival to the last answer, with free slots: where a poll's
    wall time goes beyond requests x latency / concurrency."""
    levels = _levels(arrivals, answers)
    return sum(
        later - at for (at, level), (later, _) in itertools.pairwise(levels) if level < concurrency
    )


def _world(shape: Shape) -> tuple[Simulator, ScaleWorkload]:
    sim = Simulator({SECRET_ID: SECRET_KEY}, seed=11)
    now = time.time()
    workload = ScaleWorkload(sim, shape, seed=11, start=now - 1800)
    workload.advance(now)
    return sim, workload


def _spec(sim: Simulator, workload: ScaleWorkload, rate: tuple[float, int, int]) -> ExporterSpec:
    return ExporterSpec(
        targets=target_specs(sim, workload),
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        poll_interval=60.0,
        frozen_at=None,
        idle_tag_backoff=0.0,
        rate_limit=rate,
    )


def _measured_poll(sim: Simulator, clocked: _Clocked, spec: ExporterSpec) -> tuple[PollReport, int]:
    """The exporter's second poll (the first sets its baseline): its report and requests."""
    agent = Agent("exporter")
    try:
        agent.init(spec)
        agent.call("poll", None)
        sim.reset_requests()
        clocked.clear()
        report: PollReport = agent.call("poll", None)
        if not report.up:
            raise RuntimeError(f"latency poll failed: {report.errors[:3]}")
        return report, sim.request_count()
    finally:
        agent.close()


def _check(
    clocked: _Clocked, rate: tuple[float, int, int], requests: int, wall: float
) -> GateCheck:
    per_second, burst, concurrency = rate
    return GateCheck(
        requests=requests,
        requests_per_second=per_second,
        burst=burst,
        concurrency=concurrency,
        wall=wall,
        least_tokens=least_tokens(clocked.arrivals, per_second, burst),
        most_in_flight=most_in_flight(clocked.arrivals, clocked.answers),
        underused=underused(clocked.arrivals, clocked.answers, concurrency),
    )


def run_latency(
    *,
    queues: int = 10,
    tags: int = 20,
    latency: float = 0.05,
    concurrency: int = 8,
    limited_rate: tuple[float, int] = (100.0, 20),
) -> LatencyResult:
    # A target's share of the 1M jobs a day, in one target of the same shape.
    shape = Shape(targets=1, queues=queues, tags=tags, jobs_per_day=200_000)
    sim, workload = _world(shape)
    streams = queues * tags
    if not hasattr(sim, "latency") or not supports("rate_limit"):
        return LatencyResult(available=False, latency=latency, streams=streams)
    sim.latency = latency
    clocked = _Clocked(sim)
    with sim:
        # A rate far above what the concurrency allows: the concurrency is the limit.
        free = (10_000.0, 10_000, concurrency)
        report, requests = _measured_poll(sim, clocked, _spec(sim, workload, free))
        unbound = _check(clocked, free, requests, report.wall)
        limited = (limited_rate[0], limited_rate[1], concurrency)
        limited_report, limited_requests = _measured_poll(
            sim, clocked, _spec(sim, workload, limited)
        )
        bound = _check(clocked, limited, limited_requests, limited_report.wall)
    return LatencyResult(
        available=True,
        latency=latency,
        streams=streams,
        requests=requests,
        concurrency=concurrency,
        wall=report.wall,
        cpu=report.cpu,
        rate_bound=bound,
        concurrency_bound=unbound,
    )
