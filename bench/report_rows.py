"""The suite's result, and its Summary rows (bench/report.py prints them and writes them).

Each target is a row: what was measured, the bound it is held to, the ratio and a verdict:
"pass", "FAIL", or "pending" when the exporter or the simulator lacks what it needs yet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from bench.cpu import CpuResult
from bench.latency import LatencyResult
from bench.scale_results import ScaleResult
from bench.scrape import ScrapeResult
from bench.scrape_cost_results import (
    LATENCY_TARGET,
    LIFETIME_TARGET,
    PER_SCRAPE_TARGET,
    ScrapeCostResult,
)
from bench.scrape_cost_table import ms

REQUESTS_TARGET = 1.25
CPU_TARGET = 5.0
BYTES_PER_JOB_TARGET = 200.0
RENDER_TARGET = 1.2
WALL_TARGET = 1.2


@dataclass(frozen=True)
class Row:
    target: str
    measured: str
    bound: str
    ratio: str
    verdict: str  # pass, FAIL, pending, or "" for a row shown for comparison


@dataclass
class SuiteResult:
    command: str
    scale: ScaleResult | None = None
    cpu: CpuResult | None = None
    scrape: ScrapeResult | None = None
    latency: LatencyResult | None = None
    cost: ScrapeCostResult | None = None
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    load: tuple[float, float, float] = field(default_factory=lambda: _load())
    seconds: float = 0.0


def _load() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _x(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "n/a"


def _exact(result: ScaleResult) -> bool:
    return (
        result.exporter.exact
        and result.traced.exact
        and (result.backoff is None or result.backoff.exact)
    )


def rows(result: SuiteResult) -> list[Row]:
    found: list[Row] = []
    if result.scale is not None:
        found += _scale_rows(result.scale)
    if result.cpu is not None:
        cpu = result.cpu
        found.append(
            Row(
                "3. CPU per 10,000 jobs parsed + accounted",
                f"{cpu.exporter * 1000:.0f} ms",
                f"SDK {cpu.sdk * 1000:.0f} ms / {CPU_TARGET:g}",
                f"{cpu.ratio:.1f}x less",
                _verdict(cpu.ratio >= CPU_TARGET),
            )
        )
    if result.scale is not None:
        found += _memory_rows(result.scale)
    if result.scrape is not None:
        found += _scrape_rows(result.scrape)
    if result.latency is not None:
        found += _latency_rows(result.latency)
    if result.cost is not None:
        found += _cost_rows(result.cost)
    return found


def _scale_rows(scale: ScaleResult) -> list[Row]:
    polls = max(1, len(scale.polls))
    bound = sum(p.bound for p in scale.polls) / polls
    exporter = scale.mean("exporter")
    baseline = scale.mean("baseline")
    ratio = scale.ratio("exporter")
    found = [
        Row(
            f"1. API requests per poll, {scale.jobs_per_day_overall / 1e6:.2f}M jobs/day",
            f"{exporter:.0f}",
            f"{REQUESTS_TARGET:g} x {bound:.0f}",
            _x(ratio),
            _verdict(ratio <= REQUESTS_TARGET and scale.exporter.exact),
        ),
        Row(
            f"   baseline: SDK cron script, {scale.options.baseline_lookback / 60:g} min lookback",
            f"{baseline:.0f}",
            f"{bound:.0f}",
            _x(scale.ratio("baseline")),
            "",
        ),
    ]
    if not scale.backoff_supported or scale.backoff is None:
        found.append(Row("2. idle-tag back-off", "-", "-", "-", "pending"))
    else:
        backoff = scale.mean("backoff")
        longest = scale.longest_idle_gap or 0.0
        ok = (
            backoff < exporter
            and _exact(scale)
            and longest <= max(scale.options.idle_tag_backoff, scale.options.interval)
        )
        found.append(
            Row(
                f"2. idle-tag back-off ({scale.options.idle_tag_backoff / 60:g} min max)",
                f"{backoff:.0f}",
                f"< {exporter:.0f} (no back-off)",
                _x(backoff / exporter if exporter else math.nan),
                _verdict(ok),
            )
        )
    found.append(
        Row(
            "   every job counted exactly once",
            f"{scale.exporter.counted}/{scale.exporter.expected}",
            "simulator's record",
            "exact" if _exact(scale) else "NOT EXACT",
            _verdict(_exact(scale)),
        )
    )
    return found


def _memory_rows(scale: ScaleResult) -> list[Row]:
    memory = scale.memory
    return [
        Row(
            f"4. memory per tracked job ({memory.tracked_jobs} tracked)",
            f"{memory.per_job:.0f} B",
            f"{BYTES_PER_JOB_TARGET:.0f} B",
            _x(memory.per_job / BYTES_PER_JOB_TARGET),
            _verdict(memory.per_job <= BYTES_PER_JOB_TARGET),
        ),
        Row(
            "   exporter process resident (RSS)",
            f"{(memory.rss - memory.tracemalloc_overhead) / 2**20:.0f} MiB",
            "-",
            "-",
            "",
        ),
    ]


def _scrape_rows(scrape: ScrapeResult) -> list[Row]:
    worst = max(scrape.exporter_few, scrape.exporter_many)
    return [
        Row(
            f"5. /metrics render, {scrape.streams} streams, {scrape.samples} samples",
            f"{worst:.2f} s",
            f"{RENDER_TARGET:g} x {scrape.plain:.2f} s (per sample)",
            _x(scrape.ratio),
            _verdict(scrape.ratio <= RENDER_TARGET),
        ),
        Row(
            f"   {scrape.many_jobs:,} vs {scrape.few_jobs:,} tracked jobs",
            f"{scrape.exporter_many:.2f} s",
            f"{scrape.exporter_few:.2f} s",
            _x(scrape.jobs_effect),
            "",
        ),
    ]


def _latency_rows(latency: LatencyResult) -> list[Row]:
    if not latency.available:
        return [Row("6. poll wall time, 50 ms latency", "-", "-", "-", "pending")]
    gate = latency.rate_bound
    assert gate is not None
    return [
        Row(
            f"6. poll wall time, {latency.latency * 1000:.0f} ms latency, {latency.requests} req",
            f"{latency.wall:.2f} s",
            f"{WALL_TARGET:g} x {latency.ideal:.2f} s",
            _x(latency.ratio),
            _verdict(latency.ratio <= WALL_TARGET),
        ),
        Row(
            f"   rate limit {gate.requests_per_second:g}/s burst {gate.burst}, "
            f"concurrency {gate.concurrency}",
            f"{gate.requests} req in {gate.wall:.2f} s",
            f">= {gate.floor:.2f} s",
            f"{gate.least_tokens:+.2f} tokens, {gate.most_in_flight} in flight",
            _verdict(gate.honoured),
        ),
    ]


def _cost_rows(cost: ScrapeCostResult) -> list[Row]:
    found: list[Row] = []
    for level in cost.levels:
        ratio = cost.ratio(level)
        clean = level.failed == 0 and level.renderings == 0 and level.scrapes > 0
        scrapers = f"{level.scrapers} scraper{'s' if level.scrapers > 1 else ''}"
        found.append(
            Row(
                f"7. CPU per scrape of an unchanged snapshot, {cost.streams} streams, {scrapers}"
                if not found
                else f"   {scrapers}",
                ms(level.per_scrape),
                f"{PER_SCRAPE_TARGET:g} x R {cost.render_cpu:.2f} s",
                f"{ratio:.2g}x",
                _verdict(ratio <= PER_SCRAPE_TARGET and clean and not cost.sizes.problems),
            )
        )
    first, last = cost.levels[0], cost.levels[-1]
    return [
        *found,
        Row(
            f"   lifetime of a snapshot R + K x c, {last.scrapers} vs {first.scrapers} scrapers",
            f"{cost.lifetime(last):.2f} s",
            f"{LIFETIME_TARGET:g} x {cost.lifetime(first):.2f} s",
            f"{cost.growth:.3f}x",
            _verdict(cost.lifetime_ok),
        ),
        Row(
            "   latency of a scrape of the unchanged snapshot, median",
            ms(cost.latency_median),
            f"< {LATENCY_TARGET:g} s",
            f"max {ms(cost.latency_max)}",
            _verdict(cost.latency_ok),
        ),
        Row(
            "   one full rendering (R), CPU and wall time",
            f"{cost.render_cpu:.2f} s",
            "-",
            f"{cost.render_wall:.2f} s wall",
            "",
        ),
    ]
