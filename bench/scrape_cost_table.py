"""Target 7's table and summary (bench/scrape_cost.py): the levels side by side with one
rendering."""

from __future__ import annotations

import math
import statistics

from bench.scrape_cost_results import LATENCY_TARGET, LIFETIME_TARGET, ScrapeCostResult


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def _fraction(ratio: float) -> str:
    """0.0013 as "1/770": easier to hold against 1/10."""
    return f"1/{1 / ratio:,.0f}" if ratio > 0 and math.isfinite(ratio) else "n/a"


def table(result: ScrapeCostResult) -> str:
    """The levels side by side with one rendering, as markdown."""
    lines = [
        "| scrapers | scrapes | exporter CPU | per scrape (c) | c / R | lifetime T = R + K x c |"
        " renderings during | latency median | latency max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in result.levels:
        latency = sorted(lv.latencies)
        median = statistics.median(latency) if latency else math.nan
        lines.append(
            f"| {lv.scrapers} | {lv.scrapes} ({lv.failed} failed) | {lv.cpu:.3f} s |"
            f" {ms(lv.per_scrape)} | {_fraction(result.ratio(lv))} |"
            f" {result.lifetime(lv):.2f} s | {lv.renderings} | {ms(median)} |"
            f" {ms(max(latency, default=math.nan))} |"
        )
    return "\n".join(lines)


def summary(result: ScrapeCostResult) -> str:
    sizes, first, last = result.sizes, result.levels[0], result.levels[-1]
    return (
        f"{result.streams} streams, {sizes.samples} samples, {sizes.identity_bytes / 2**20:.1f}"
        f" MiB ({sizes.gzip_bytes / 2**20:.2f} MiB gzip) of {sizes.content_type}.\n"
        f"R, one full rendering: {result.render_cpu:.2f} s CPU (least of"
        f" {len(result.renders)}: {', '.join(f'{p.cpu:.2f}' for p in result.renders)}),"
        f" {result.render_wall:.2f} s wall; one target changed: {result.one_target.cpu:.3f} s.\n"
        f"T_{last.scrapers} / T_{first.scrapers} = {result.growth:.3f}"
        f" (bound {LIFETIME_TARGET:g}); per scrape at most"
        f" {_fraction(max(result.ratio(lv) for lv in result.levels))} of R (bound 1/10);"
        f" latency median {ms(result.latency_median)}, max {ms(result.latency_max)}"
        f" (bound {LATENCY_TARGET:g} s); clean: {result.clean}"
        + (f" ({'; '.join(sizes.problems)})" if sizes.problems else "")
    )
