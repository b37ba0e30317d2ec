"""Runs the parts of the suite; bench/suite_details.py explains their numbers (the sections of
docs/benchmarks.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace

from bench.cpu import run_cpu
from bench.latency import run_latency
from bench.report import SuiteResult
from bench.scale import ScaleOptions, run_scale
from bench.scrape import run_scrape
from bench.scrape_cost import CostOptions, run_scrape_cost, smoke_cost_options
from bench.suite_details import details
from bench.workload import Shape

# `details` is imported from here, where it was before the split.
__all__ = [
    "TARGETS",
    "SuiteOptions",
    "details",
    "run_suite",
    "smoke_options",
    "with_shape",
]

TARGETS = ("1", "2", "3", "4", "5", "6", "7")


@dataclass(frozen=True)
class SuiteOptions:
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    cpu_polls: int = 30
    cpu_repetitions: int = 5
    scrape: tuple[int, int, int] = (50, 10, 20)  # targets, queues, tags
    scrape_repetitions: int = 2
    latency_streams: tuple[int, int] = (10, 20)  # queues, tags: a target of the 1M/day shape
    latency: float = 0.05
    latency_concurrency: int = 8
    limited_rate: tuple[float, int] = (100.0, 20)
    cost: CostOptions = field(default_factory=CostOptions)
    only: Collection[str] = TARGETS


def smoke_options() -> SuiteOptions:
    """Tiny sizes: the whole suite in seconds, for the test suite."""
    shape = Shape(
        targets=1,
        queues=2,
        tags=3,
        jobs_per_day=20_000,
        burst_size=20,
        burst_spread=5.0,
        rare_every=300.0,
        retention=3600.0,
    )
    scale = ScaleOptions(
        shape=shape,
        history=1800.0,
        warmup_polls=4,
        settle_polls=2,
        polls=2,
        idle_tag_backoff=180.0,
        baseline_lookback=1800.0,
    )
    return SuiteOptions(
        scale=scale,
        cpu_polls=4,
        cpu_repetitions=1,
        scrape=(2, 2, 3),
        scrape_repetitions=1,
        latency_streams=(1, 3),
        latency=0.01,
        latency_concurrency=2,
        limited_rate=(100.0, 3),
        cost=smoke_cost_options(),
    )


def run_suite(
    options: SuiteOptions, command: str, progress: Callable[[str], None] | None = None
) -> SuiteResult:
    say = progress or (lambda _: None)
    began = time.monotonic()
    result = SuiteResult(command=command)
    wanted = set(options.only)
    if wanted & {"1", "2", "4"}:
        shape = options.scale.shape
        say(
            f"targets 1, 2, 4: {shape.targets} targets x {shape.queues} queues x {shape.tags} tags"
            f" at {shape.jobs_per_day:,.0f} jobs/day, {options.scale.polls} measured polls"
        )
        result.scale = run_scale(options.scale, say)
    if "3" in wanted:
        say("target 3: CPU per 10,000 jobs, exporter against cos-python-sdk-v5")
        result.cpu = run_cpu(polls=options.cpu_polls, repetitions=options.cpu_repetitions)
    if "5" in wanted:
        targets, queues, tags = options.scrape
        say(f"target 5: /metrics render at {targets} x {queues} x {tags} streams")
        result.scrape = run_scrape(
            targets=targets, queues=queues, tags=tags, repetitions=options.scrape_repetitions
        )
    if "6" in wanted:
        say("target 6: poll wall time under latency, and the rate limit (real time)")
        queues, tags = options.latency_streams
        result.latency = run_latency(
            queues=queues,
            tags=tags,
            latency=options.latency,
            concurrency=options.latency_concurrency,
            limited_rate=options.limited_rate,
        )
    if "7" in wanted:
        targets, queues, tags = options.cost.shape
        say(
            f"target 7: scrapes of an unchanged snapshot at {targets} x {queues} x {tags} streams,"
            f" {', '.join(map(str, options.cost.levels))} scrapers, against one rendering"
        )
        result.cost = run_scrape_cost(options.cost)
    result.seconds = time.monotonic() - began
    return result


def with_shape(options: SuiteOptions, **changes: object) -> SuiteOptions:
    shape = replace(options.scale.shape, **changes)  # type: ignore[arg-type]
    return replace(options, scale=replace(options.scale, shape=shape))
